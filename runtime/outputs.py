"""Where results go: tiled, compressed GeoTIFFs written whole blocks at a time, committed only when sound.

Each output is written to a hidden ``.NAME.partial`` beside its target. Rows are written only in whole
256-row block bands, so no block is ever written twice (no read-modify-write of compressed blocks, which
libtiff may rewrite in place: a kill during such a rewrite could damage rows already recorded as done).
Every GDAL error during writes, flushes and close is an error (GDAL reports a full disk at flush/close,
which a plain ``close()`` swallows). Before the rename the partial is re-read block by block, optionally
turned into a Cloud Optimized GeoTIFF, and fsynced with its folder; then it is renamed onto the target.

The path checks live in ``output_paths`` and the error reporting in ``output_errors``; both are re-exported
here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.windows import Window

from runtime.output_errors import fsync_path, gdal_errors, os_failure
from runtime.output_paths import (
    check_not_inputs,
    check_output_target,
    check_output_targets,
    check_regular_or_new,
    journal_path,
    partial_path,
)
from stars_edge.errors import OutputError

__all__ = [
    "BLOCK",
    "CATEGORICAL_COMPRESSION",
    "CLASS_NODATA",
    "GeoTiffSink",
    "OutputSpec",
    "RasterGrid",
    "block_rows",
    "build_overviews",
    "check_not_inputs",
    "check_output_target",
    "check_output_targets",
    "check_regular_or_new",
    "commit",
    "committed",
    "discard",
    "fsync_path",
    "gdal_errors",
    "journal_path",
    "make_cog",
    "os_failure",
    "partial_path",
    "pending",
    "validate_partial",
]

#: Class map value where no modality was valid (the project's ignore index).
CLASS_NODATA = 255
#: Output block size: 256 px tiles are the usual COG block.
BLOCK = 256
#: Compression of the categorical maps (classes, patterns): DEFLATE, readable everywhere, without a
#: predictor (differencing class ids breaks their runs) at libdeflate level 4. Against level 6 with
#: predictor 2, on 4096 px scenes (issue 21): 2.7x less CPU to compress two maps (0.10 against 0.28 CPU-s),
#: the run's write stage 0.30 against 0.44 s, and files 0.88-0.90x the size (one other map: 1.07x).
#: Probabilities keep their predictor (smooth fields) at the default level.
CATEGORICAL_COMPRESSION: dict[str, Any] = {"compress": "deflate", "predictor": 1, "zlevel": 4}


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


def block_rows(grid: RasterGrid) -> int:
    """Rows per output block band: ``BLOCK`` for tiled outputs, the whole height for tiny striped ones."""
    return BLOCK if grid.height >= 16 and grid.width >= 16 else grid.height


class GeoTiffSink:
    """Writes finished block bands into the partial GeoTIFFs of every requested output."""

    def __init__(self, grid: RasterGrid, outputs: list[OutputSpec], resume: bool) -> None:
        self.grid = grid
        self.outputs = outputs
        #: A write, flush or close failed: what the partials hold past the last checkpoint is not durable.
        self.broken = False
        self._datasets: dict[str, Any] = {}
        try:
            for spec in outputs:
                path = partial_path(spec.target)
                with gdal_errors(path, "creating" if not resume else "reopening"):
                    if resume:
                        self._datasets[spec.kind] = rasterio.open(path, "r+")
                    else:
                        dataset = rasterio.open(path, "w", **self._profile(spec))
                        self._datasets[spec.kind] = dataset
                        dataset.update_tags(**spec.tags)
                        for band, text in enumerate(spec.descriptions, start=1):
                            dataset.set_band_description(band, text)
        except BaseException:
            self.abandon()
            raise

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
            **(
                CATEGORICAL_COMPRESSION
                if spec.kind != "probabilities"
                else {"compress": "deflate", "predictor": 3 if spec.dtype == "float32" else 2}
            ),
            "interleave": "band" if spec.count > 1 else "pixel",
            "BIGTIFF": "IF_SAFER",
        }
        if block_rows(self.grid) == BLOCK:
            profile.update(tiled=True, blockxsize=BLOCK, blockysize=BLOCK)
        return profile

    def write(self, row_start: int, col_start: int, bands: Mapping[str, np.ndarray]) -> None:
        """Write ``(count, rows, cols)`` arrays for each output kind at ``(row_start, col_start)``."""
        for spec in self.outputs:
            data = bands[spec.kind]
            dataset = self._datasets[spec.kind]
            window = Window(col_start, row_start, data.shape[-1], data.shape[-2])
            try:
                with gdal_errors(partial_path(spec.target), f"writing rows {row_start}.. of"):
                    dataset.write(data, window=window)
            except OutputError:
                self.broken = True
                raise

    def flush(self) -> None:
        """Close every partial (GDAL writes its directory), fsync it, and reopen it for more blocks."""
        self.close()
        for spec in self.outputs:
            path = partial_path(spec.target)
            with gdal_errors(path, "reopening"):
                self._datasets[spec.kind] = rasterio.open(path, "r+")

    def close(self) -> None:
        """Close and fsync every partial; a GDAL error at close (a full disk) raises ``OutputError``."""
        datasets, self._datasets = self._datasets, {}
        failure: OutputError | None = None
        for dataset in datasets.values():
            path = Path(dataset.name)
            try:
                with gdal_errors(path, "closing"):
                    dataset.close()
                fsync_path(path)
            except OutputError as exc:
                failure = failure or exc
        if failure is not None:
            self.broken = True
            raise failure

    def abandon(self) -> None:
        """Close every partial while another error unwinds, keeping that error."""
        with contextlib.suppress(OutputError):
            self.close()


def build_overviews(outputs: list[OutputSpec]) -> None:
    """Add internal overviews (nearest for labels, average for probabilities) to the finished partials."""
    for spec in outputs:
        path = partial_path(spec.target)
        with gdal_errors(path, "adding overviews to"), rasterio.open(path, "r+") as dataset:
            factors = [f for f in (2, 4, 8, 16, 32) if min(dataset.height, dataset.width) // f >= BLOCK // 2]
            if factors:
                dataset.build_overviews(factors, _resampling(spec))


def _resampling(spec: OutputSpec) -> Resampling:
    return Resampling.average if spec.kind == "probabilities" else Resampling.nearest


def validate_partial(spec: OutputSpec, grid: RasterGrid) -> None:
    """Re-read every block of a finished partial: a truncated or unreadable file never gets renamed."""
    path = partial_path(spec.target)
    if not path.is_file() or path.stat().st_size == 0:
        raise OutputError(f"{path} is missing or empty after writing; free disk space and rerun")
    with gdal_errors(path, "validating"), rasterio.open(path) as dataset:
        if (dataset.height, dataset.width, dataset.count) != (grid.height, grid.width, spec.count):
            raise OutputError(f"{path} has the wrong shape after writing; delete it and rerun")
        for _, window in dataset.block_windows(1):
            dataset.read(window=window)


def make_cog(spec: OutputSpec) -> None:
    """Rewrite a finished partial as a Cloud Optimized GeoTIFF (internal overviews, 256 px blocks).

    Idempotent, so an interrupted finalisation can simply run again: the COG is written beside the partial
    and renamed onto it only when complete, and a partial that already is a COG gives the same COG.
    """
    path = partial_path(spec.target)
    cog = path.with_name(path.name + ".cog")
    cog.unlink(missing_ok=True)  # what a killed conversion left behind
    try:
        with gdal_errors(cog, "writing the COG"):
            rasterio.shutil.copy(
                path,
                cog,
                driver="COG",
                COMPRESS="DEFLATE",
                BLOCKSIZE=BLOCK,
                OVERVIEWS="AUTO",
                RESAMPLING=_resampling(spec).name.upper(),
                BIGTIFF="IF_SAFER",
            )
        os.replace(cog, path)
    except OSError as exc:
        raise os_failure(path, "replacing with its COG", exc) from exc
    finally:
        cog.unlink(missing_ok=True)


def commit(outputs: list[OutputSpec], grid: RasterGrid, cog: bool = False) -> None:
    """Validate, (COG,) fsync and rename every partial onto its target, the main class map last.

    Safe to interrupt anywhere and run again on the outputs still pending (``pending``): each step either
    leaves the partial as it was or replaces it atomically by an equivalent one.
    """
    ordered = sorted(outputs, key=lambda s: s.kind == "classes")
    for spec in ordered:
        if cog:
            make_cog(spec)
        validate_partial(spec, grid)
        fsync_path(partial_path(spec.target))
    for spec in ordered:
        check_regular_or_new(spec.target)  # it may have been replaced while the scene ran
        try:
            os.replace(partial_path(spec.target), spec.target)
            fsync_path(spec.target.parent)
        except OSError as exc:
            raise OutputError(
                f"renaming onto {spec.target} failed ({exc.strerror}); check the folder"
            ) from exc


def pending(outputs: list[OutputSpec]) -> list[OutputSpec]:
    """The outputs an interrupted finalisation has not renamed yet: those whose partial still exists."""
    return [spec for spec in outputs if partial_path(spec.target).exists()]


def committed(spec: OutputSpec) -> bool:
    """Whether an interrupted finalisation already renamed this output: its partial gone, its target there."""
    return not partial_path(spec.target).exists() and spec.target.is_file()


def discard(outputs: list[OutputSpec], journal: Path | None = None) -> None:
    """Remove partial files (and the journal) so no half-written output survives."""
    for spec in outputs:
        partial_path(spec.target).unlink(missing_ok=True)
        partial_path(spec.target).with_name(partial_path(spec.target).name + ".cog").unlink(missing_ok=True)
    if journal is not None:
        journal.unlink(missing_ok=True)
