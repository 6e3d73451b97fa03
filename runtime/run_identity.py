"""What identifies a scene run: the tags every output carries (model, engines, settings, inputs) and the
fingerprint a resumed run must match (``runtime.summary.input_fingerprint`` covers the files)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from runtime.engines import EngineSet
from runtime.outputs import OutputSpec
from runtime.raster_source import RasterSource
from runtime.summary import input_fingerprint
from stars_edge.manifest import Manifest
from stars_edge.modalities import Pattern


def _json(value: Any) -> str:
    return json.dumps(value)


def output_tags(
    manifest: Manifest,
    precision: str,
    backend: str,
    tile: int,
    overlap: int,
    min_valid: float,
    context_margin: int,
    mask_dilation: Mapping[str, int],
    source: RasterSource,
) -> dict[str, str]:
    """The ``STARS_*`` GeoTIFF tags common to every output of a run."""
    return {
        "STARS_MODEL_SHA256": manifest.model.checkpoint_sha256,
        "STARS_MODEL": f"{manifest.model.variant}/{manifest.model.method}",
        "STARS_PRECISION": precision,
        "STARS_BACKEND": backend,
        "STARS_TILE": str(tile),
        "STARS_OVERLAP": str(overlap),
        "STARS_MIN_VALID": str(min_valid),
        "STARS_CONTEXT_MARGIN": str(context_margin),
        "STARS_MASK_DILATION": _json(mask_dilation),
        "STARS_INPUTS": _json({m: p.name for m, p in source.paths.items()}),
    }


def run_fingerprint(
    manifest: Manifest,
    engines: EngineSet,
    patterns: Sequence[Pattern],
    precision: str,
    source: RasterSource,
    tile: int,
    overlap: int,
    min_valid: float,
    context_margin: int,
    mask_dilation: Mapping[str, int],
    chunk_width: int | None,
    outputs: Sequence[OutputSpec],
) -> dict[str, Any]:
    """Everything a resumed run must share with the interrupted one: model, engines, settings, input files
    (size and mtime), bands read, tiling, chunking and outputs."""
    files = dict(source.paths)
    if source.cloud_path is not None:
        files["cloud_mask"] = source.cloud_path
    if source.dtm_path is not None:
        files["dtm"] = source.dtm_path
    return {
        "model": {
            "checkpoint_sha256": manifest.model.checkpoint_sha256,
            "classes": manifest.model.classes,
            "class_names": list(manifest.model.class_names),
        },
        "engines": {p.name: engines.entry(p).sha256 for p in patterns},
        "precision": precision,
        "backend": engines.backend,
        "inputs": input_fingerprint(files),
        "bands": source.band_indexes,
        "tile": tile,
        "overlap": overlap,
        "min_valid": min_valid,
        "context_margin": context_margin,
        "mask_dilation": mask_dilation,
        "chunk_width": chunk_width,
        "outputs": {s.kind: [str(s.target.resolve()), s.dtype] for s in outputs},
    }
