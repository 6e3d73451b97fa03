"""``synthetic``: a folder written by ``stars-edge data synth`` (index.json + one folder per scene)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from stars_edge.data.loaders.core import DatasetFormat, SceneSource
from stars_edge.data.synthetic import CLASS_NAMES, synthetic_specs
from stars_edge.errors import DataError
from stars_edge.modalities import MODALITIES, ModalitySpec, specs_from_dicts


def detect(root: Path) -> bool:
    """An index.json at the root."""
    return (root / "index.json").is_file()


def _read_index(root: Path) -> dict[str, Any]:
    index_path = root / "index.json"
    if not index_path.is_file():
        raise DataError(
            f"{index_path} not found; create the dataset with `stars-edge data synth --out {root}` "
            "or pass --format for a real dataset layout"
        )
    try:
        payload = json.loads(index_path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(
            f"{index_path} is not valid JSON ({exc}); regenerate it with `stars-edge data synth`"
        ) from exc
    if not isinstance(payload, dict) or "scenes" not in payload:
        raise DataError(f"{index_path} has no 'scenes' list; regenerate it with `stars-edge data synth`")
    return payload


def _list_synthetic(root: Path) -> list[SceneSource]:
    payload = _read_index(root)
    sources = []
    for entry in payload["scenes"]:
        directory = root / entry.get("path", entry["name"])
        files = entry.get("files", {})
        images = {m: directory / files[m] for m in MODALITIES if m in files}
        label = directory / files["label"] if "label" in files else None
        cloud = directory / files["cloud_mask"] if "cloud_mask" in files else None
        sources.append(SceneSource(entry["name"], entry.get("split", "train"), images, label, cloud))
    return sources


def synthetic_format(root: Path | None = None) -> DatasetFormat:
    """The synthetic format; with ``root``, its classes and specs are those its index.json records."""
    specs: dict[str, ModalitySpec] = {}
    class_names = CLASS_NAMES
    if root is not None and (root / "index.json").is_file():
        payload = _read_index(root)
        specs = specs_from_dicts(payload.get("specs", []))
        class_names = tuple(payload.get("class_names", CLASS_NAMES))
    if not specs:
        specs = synthetic_specs()
    return DatasetFormat(
        name="synthetic",
        description="stars-edge synthetic benchmark (index.json + scene folders)",
        class_names=class_names,
        band_layouts={m: (s.band_names,) for m, s in specs.items()},
        nominal_specs=specs,
        list_scenes=_list_synthetic,
        decode_label=lambda a: a[0].astype(np.uint8),
        scale={},
    )
