"""Where results go: tiled, compressed GeoTIFFs written row band by row band, plus the resume journal.

Each output is written to a hidden ``.NAME.partial`` file beside its target and renamed onto the target only
when the whole scene is done, so a file under its final name is always complete. The journal
(``.NAME.journal.json``) records how many tile rows are in the partial files and what produced them;
``--resume`` continues from there and refuses a journal written by another model or other settings.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
from rasterio.enums import Resampling
from rasterio.windows import Window

from stars_edge.errors import ManifestError, OutputError
from stars_edge.io import ensure_writable_dir, write_json_atomic

#: Class map value where no modality was valid (the project's ignore index).
CLASS_NODATA = 255
#: Output block size: 256 px tiles are the usual COG block.
BLOCK = 256
JOURNAL_VERSION = 1


def partial_path(target: Path) -> Path:
    """The hidden in-progress file beside ``target``."""
    return target.with_name(f".{target.name}.partial")


def journal_path(target: Path) -> Path:
    """The resume journal beside the main output ``target``."""
    return target.with_name(f".{target.name}.journal.json")


def check_output_target(target: Path) -> Path:
    """Refuse targets that cannot be written before any work starts."""
    target = Path(target)
    if target.exists() and target.is_dir():
        raise OutputError(f"{target} is a directory; pass a file path such as {target / 'prediction.tif'}")
    ensure_writable_dir(target.parent)
    if target.exists() and not os.access(target, os.W_OK):
        raise OutputError(f"{target} exists and is not writable; remove it or choose another path")
    return target


@dataclass
class RasterGrid:
    """Georeferencing shared by every output (the reference raster's)."""

    height: int
    width: int
    crs: Any = None
    transform: Any = None


@dataclass
class OutputSpec:
    """One output raster: its target, band count, dtype, nodata, tags and band descriptions."""

    kind: str
    target: Path
    count: int
    dtype: str
    nodata: float | None
    tags: dict[str, str] = field(default_factory=dict)
    descriptions: tuple[str, ...] = ()


class GeoTiffSink:
    """Writes finished row bands into the partial GeoTIFFs of every requested output."""

    def __init__(self, grid: RasterGrid, outputs: list[OutputSpec], resume: bool) -> None:
        self.grid = grid
        self.outputs = outputs
        self._datasets: dict[str, Any] = {}
        try:
            for spec in outputs:
                path = partial_path(spec.target)
                if resume:
                    self._datasets[spec.kind] = rasterio.open(path, "r+")
                else:
                    self._datasets[spec.kind] = rasterio.open(path, "w", **self._profile(spec))
                    dataset = self._datasets[spec.kind]
                    dataset.update_tags(**spec.tags)
                    for band, text in enumerate(spec.descriptions, start=1):
                        dataset.set_band_description(band, text)
        except Exception as exc:
            self.close()
            if isinstance(exc, OutputError):
                raise
            raise OutputError(
                f"cannot write {partial_path(spec.target)} ({exc}); check the output folder"
            ) from exc

    def _profile(self, spec: OutputSpec) -> dict[str, Any]:
        height, width = self.grid.height, self.grid.width
        profile: dict[str, Any] = {
            "driver": "GTiff",
            "height": height,
            "width": width,
            "count": spec.count,
            "dtype": spec.dtype,
            "nodata": spec.nodata,
            "crs": self.grid.crs,
            "transform": self.grid.transform,
            "compress": "deflate",
            "predictor": 3 if spec.dtype == "float32" else 2,
            "interleave": "band" if spec.count > 1 else "pixel",
            "BIGTIFF": "IF_SAFER",
        }
        if height >= 16 and width >= 16:
            profile.update(tiled=True, blockxsize=BLOCK, blockysize=BLOCK)
        return profile

    def write_rows(self, row_start: int, bands: Mapping[str, np.ndarray]) -> None:
        """Write ``(count, rows, width)`` arrays for each output kind starting at raster row ``row_start``."""
        for kind, dataset in self._datasets.items():
            data = bands[kind]
            try:
                dataset.write(data, window=Window(0, row_start, data.shape[-1], data.shape[-2]))
            except rasterio.errors.RasterioError as exc:
                raise OutputError(
                    f"writing {dataset.name} failed at row {row_start} ({exc}); free disk space and rerun "
                    "with --resume"
                ) from exc

    def close(self) -> None:
        """Close (and so flush) every partial file."""
        for dataset in self._datasets.values():
            dataset.close()
        self._datasets.clear()


def build_overviews(outputs: list[OutputSpec]) -> None:
    """Add internal overviews (nearest for labels, average for probabilities) to the finished partials."""
    for spec in outputs:
        with rasterio.open(partial_path(spec.target), "r+") as dataset:
            factors = [f for f in (2, 4, 8, 16, 32) if min(dataset.height, dataset.width) // f >= BLOCK // 2]
            if factors:
                method = Resampling.average if spec.kind == "probabilities" else Resampling.nearest
                dataset.build_overviews(factors, method)


def commit(outputs: list[OutputSpec]) -> None:
    """Rename every partial onto its target, the main class map last."""
    for spec in sorted(outputs, key=lambda s: s.kind == "classes"):
        os.replace(partial_path(spec.target), spec.target)


def discard(outputs: list[OutputSpec], journal: Path | None = None) -> None:
    """Remove partial files (and the journal) so no half-written output survives."""
    for spec in outputs:
        partial_path(spec.target).unlink(missing_ok=True)
    if journal is not None:
        journal.unlink(missing_ok=True)


@dataclass
class Journal:
    """Progress of one run: tile rows finished, the pixel counts so far and the run's fingerprint."""

    path: Path
    fingerprint: dict[str, Any]
    rows_done: int = 0
    pattern_pixels: dict[str, int] = field(default_factory=dict)

    def save(self) -> None:
        write_json_atomic(
            self.path,
            {
                "version": JOURNAL_VERSION,
                "fingerprint": self.fingerprint,
                "rows_done": self.rows_done,
                "pattern_pixels": self.pattern_pixels,
            },
        )

    @classmethod
    def resume_or_new(cls, path: Path, fingerprint: dict[str, Any], outputs: list[OutputSpec]) -> Journal:
        """The journal to continue from, checked to belong to this very run; new when there is none."""
        if not path.is_file() or not all(partial_path(s.target).is_file() for s in outputs):
            return cls(path, fingerprint)
        try:
            data = json.loads(path.read_text())
            rows_done = int(data["rows_done"])
            recorded = dict(data["fingerprint"])
            pixels = {str(k): int(v) for k, v in data.get("pattern_pixels", {}).items()}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise OutputError(f"{path} is not a valid resume journal ({exc}); delete it and rerun") from exc
        if data.get("version") != JOURNAL_VERSION:
            raise OutputError(f"{path} was written by another stars-edge version; delete it and rerun")
        if recorded.get("model") != fingerprint.get("model"):
            old, new = recorded.get("model", {}), fingerprint.get("model", {})
            raise ManifestError(
                f"{path} was written by model {str(old.get('checkpoint_sha256'))[:12]} with "
                f"{old.get('classes')} classes, the engines are model "
                f"{str(new.get('checkpoint_sha256'))[:12]} "
                f"with {new.get('classes')} classes; rerun without --resume or use the original engines"
            )
        changed = sorted(k for k in set(recorded) | set(fingerprint) if recorded.get(k) != fingerprint.get(k))
        if changed:
            raise OutputError(
                f"{path} belongs to a run with different {', '.join(changed)}; rerun without --resume "
                "or with the original settings"
            )
        return cls(path, fingerprint, rows_done, pixels)
