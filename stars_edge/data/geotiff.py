"""GeoTIFF read / write / warp helpers for the data layer (numpy + rasterio, torch-free).

Why: every loader needs the same three things: read bands with a validity mask (nodata, mask band, NaN/inf),
put a modality onto a reference grid when its CRS or resolution differs (rasterio WarpedVRT), and fail with
a one-line ``DataError`` naming the file when it cannot. Writers are atomic: a file under its final name is
always complete.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import rasterio
import rasterio.errors
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from stars_edge.errors import DataError
from stars_edge.io import atomic_path

#: Nodata of every float32 raster stars-edge writes (reflectance, dB or metres never reach it).
NODATA: float = -9999.0
#: Nodata value of label rasters; equal to the ignore index, so unlabelled pixels are ignored by the losses.
LABEL_NODATA: int = 255

_RESAMPLING = {
    "nearest": Resampling.nearest,
    "bilinear": Resampling.bilinear,
    "cubic": Resampling.cubic,
    "average": Resampling.average,
    "mode": Resampling.mode,
}


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and size. Modalities of one scene are read onto one grid."""

    crs: str
    transform: Affine
    width: int
    height: int

    @classmethod
    def of(cls, dataset: Any) -> Grid:
        """The grid of an open rasterio dataset."""
        crs = dataset.crs.to_string() if dataset.crs is not None else ""
        return cls(crs, dataset.transform, int(dataset.width), int(dataset.height))

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in the grid's CRS."""
        xs = [self.transform.c, self.transform.c + self.transform.a * self.width]
        ys = [self.transform.f, self.transform.f + self.transform.e * self.height]
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.height, self.width

    @property
    def resolution(self) -> tuple[float, float]:
        return abs(self.transform.a), abs(self.transform.e)

    def same_as(self, other: Grid, tolerance: float = 1e-6) -> bool:
        """Same CRS, size and transform (within ``tolerance`` of a pixel)."""
        if (self.width, self.height) != (other.width, other.height) or not _same_crs(self.crs, other.crs):
            return False
        pixel = max(self.resolution)
        return all(
            math.isclose(a, b, abs_tol=tolerance * pixel)
            for a, b in zip(self.transform, other.transform, strict=True)
        )


def _same_crs(a: str, b: str) -> bool:
    if a == b:
        return True
    if not a or not b:
        return False
    try:
        return bool(CRS.from_user_input(a) == CRS.from_user_input(b))
    except rasterio.errors.CRSError:
        return False


@dataclass
class RasterData:
    """Bands of one file on a grid, with the per-pixel validity every band agrees on."""

    path: Path
    array: np.ndarray  # (bands, H, W)
    valid: np.ndarray  # bool (H, W)
    grid: Grid
    nodata: float | None
    band_names: tuple[str, ...]
    tags: dict[str, str] = field(default_factory=dict)


def _open(path: Path) -> Any:
    if not path.exists():
        raise DataError(f"{path} does not exist; check the dataset root and its layout (see docs/DATA.md)")
    try:
        with warnings.catch_warnings():
            # plain images (EarthMiss PNGs, ISPRS tiles) have no georeferencing: a pixel grid is all we need
            warnings.simplefilter("ignore", rasterio.errors.NotGeoreferencedWarning)
            return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise DataError(f"cannot read {path} as a raster ({exc}); re-download or re-export the file") from exc


def read_grid(path: str | os.PathLike[str]) -> Grid:
    """The grid of a raster file, without reading pixels."""
    with _open(Path(path)) as dataset:
        return Grid.of(dataset)


def band_count(path: str | os.PathLike[str]) -> int:
    """Number of bands of a raster file, without reading pixels."""
    with _open(Path(path)) as dataset:
        return int(dataset.count)


def read_tags(path: str | os.PathLike[str]) -> dict[str, str]:
    """Dataset-level tags of a raster file (class names of a label raster, modality of an image)."""
    with _open(Path(path)) as dataset:
        return dict(dataset.tags())


def read_raster(
    path: str | os.PathLike[str],
    bands: Sequence[int] | None = None,
    grid: Grid | None = None,
    resampling: str = "bilinear",
    expected_bands: int | None = None,
    dtype: Any = np.float32,
    allow_partial: bool = False,
) -> RasterData:
    """Read ``bands`` (1-based, all by default) of ``path``, warped onto ``grid`` when that differs.

    Validity combines the dataset mask (nodata value or mask band) of every band read with a finite check.
    ``expected_bands`` checks the file's band count. With a ``grid``, the file must cover it (within a pixel)
    unless ``allow_partial``, in which case uncovered pixels are invalid.
    """
    path = Path(path)
    if resampling not in _RESAMPLING:
        raise DataError(f"unknown resampling {resampling!r} for {path}; valid: {', '.join(_RESAMPLING)}")
    with _open(path) as dataset:
        count = int(dataset.count)
        if expected_bands is not None and count != expected_bands:
            raise DataError(
                f"{path} has {count} band(s), expected {expected_bands}; check the file or the band selection"
            )
        indexes = list(bands) if bands is not None else list(range(1, count + 1))
        bad = [b for b in indexes if not 1 <= b <= count]
        if bad:
            raise DataError(f"{path} has {count} band(s); band {bad[0]} (1-based) does not exist")
        descriptions = tuple((dataset.descriptions[b - 1] or f"band{b}") for b in indexes)
        nodata = dataset.nodata
        own = Grid.of(dataset)
        tags = dict(dataset.tags())
        try:
            # files without georeferencing (plain TIFF/PNG tiles of one dataset) are co-registered by pixel
            # grid: equal sizes are read as they are, there is nothing to warp with
            unreferenced = grid is not None and (not own.crs or not grid.crs)
            if grid is None or own.same_as(grid) or (unreferenced and own.shape == grid.shape):
                array = dataset.read(indexes)
                masks = dataset.read_masks(indexes)
                target = own if grid is None else grid
            else:
                _check_coverage(path, own, grid, allow_partial)
                with WarpedVRT(
                    dataset,
                    crs=grid.crs,
                    transform=grid.transform,
                    width=grid.width,
                    height=grid.height,
                    resampling=_RESAMPLING[resampling],
                ) as vrt:
                    array = vrt.read(indexes)
                    masks = vrt.read_masks(indexes)
                target = grid
        except rasterio.errors.RasterioError as exc:
            raise DataError(
                f"cannot read pixels of {path} ({exc}); the file may be truncated or corrupt"
            ) from exc
    valid = np.all(masks > 0, axis=0)
    if np.issubdtype(array.dtype, np.floating):
        valid &= np.all(np.isfinite(array), axis=0)
    out = array.astype(dtype, copy=False)
    return RasterData(path, out, valid, target, nodata, descriptions, tags)


def _check_coverage(path: Path, own: Grid, grid: Grid, allow_partial: bool) -> None:
    """Raise DataError when the file does not cover the reference grid (or does not overlap it at all)."""
    if not own.crs or not grid.crs:
        raise DataError(
            f"{path} is {own.width} x {own.height} px but its reference grid is {grid.width} x "
            f"{grid.height} px and one of them has no CRS, so they cannot be aligned; georeference both "
            "or make the sizes equal"
        )
    left, bottom, right, top = transform_bounds(own.crs, grid.crs, *own.bounds, densify_pts=21)
    ref_left, ref_bottom, ref_right, ref_top = grid.bounds
    tol_x, tol_y = grid.resolution
    overlap_w = min(right, ref_right) - max(left, ref_left)
    overlap_h = min(top, ref_top) - max(bottom, ref_bottom)
    if overlap_w <= 0 or overlap_h <= 0:
        raise DataError(
            f"{path} does not overlap the reference grid at all; check that the files belong together"
        )
    covers = (
        left <= ref_left + tol_x
        and right >= ref_right - tol_x
        and bottom <= ref_bottom + tol_y
        and top >= ref_top - tol_y
    )
    if not covers and not allow_partial:
        fraction = overlap_w * overlap_h / ((ref_right - ref_left) * (ref_top - ref_bottom))
        raise DataError(
            f"{path} covers only {fraction:.0%} of the reference grid (extents differ); crop all modalities "
            "to the same area or allow partial coverage"
        )


def _profile(
    width: int,
    height: int,
    count: int,
    dtype: str,
    transform: Affine,
    crs: str | None,
    nodata: float | None,
    block: int,
) -> dict[str, Any]:
    if nodata is not None and not np.isnan(nodata) and np.issubdtype(np.dtype(dtype), np.integer):
        info = np.iinfo(np.dtype(dtype))
        if not info.min <= nodata <= info.max:
            raise DataError(
                f"nodata {nodata} does not fit {dtype}; pass a nodata value inside its range or None"
            )
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": count,
        "dtype": dtype,
        "transform": transform,
        "crs": crs or None,
        "nodata": nodata,
        "compress": "deflate",
        "predictor": 3 if dtype.startswith("float") else 2,
        "interleave": "band",
    }
    if min(width, height) >= 32:
        # the largest power-of-two tile up to ``block`` that still gives at least 2 x 2 tiles
        tile = max(16, min(block, 1 << (int(math.log2(min(width, height))) - 1)))
        profile.update(tiled=True, blockxsize=tile, blockysize=tile)
    return profile


def write_geotiff(
    path: str | os.PathLike[str],
    array: np.ndarray,
    transform: Affine,
    crs: str | None,
    nodata: float | None = NODATA,
    band_names: Sequence[str] | None = None,
    tags: Mapping[str, str] | None = None,
    block: int = 256,
) -> Path:
    """Write ``(bands, H, W)`` or ``(H, W)`` as a tiled, deflate-compressed GeoTIFF, atomically."""
    path = Path(path)
    data = array[None] if array.ndim == 2 else array
    if data.ndim != 3:
        raise DataError(f"cannot write {path}: expected a (bands, H, W) array, got shape {array.shape}")
    count, height, width = data.shape
    with atomic_path(path) as tmp:
        profile = _profile(width, height, count, str(data.dtype), transform, crs, nodata, block)
        with rasterio.open(tmp, "w", **profile) as dst:
            dst.write(data)
            _describe(dst, band_names, tags)
    return path


def _describe(dst: Any, band_names: Sequence[str] | None, tags: Mapping[str, str] | None) -> None:
    if band_names is not None:
        for index, name in enumerate(band_names[: dst.count], start=1):
            dst.set_band_description(index, str(name))
    if tags:
        dst.update_tags(**{str(k): str(v) for k, v in tags.items()})


class BlockWriter:
    """A GeoTIFF written window by window (bounded memory), renamed into place only by ``commit``."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        width: int,
        height: int,
        count: int,
        dtype: str,
        transform: Affine,
        crs: str | None,
        nodata: float | None = NODATA,
        band_names: Sequence[str] | None = None,
        tags: Mapping[str, str] | None = None,
        block: int = 512,
    ) -> None:
        self.path = Path(path)
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.path))
        profile = _profile(width, height, count, dtype, transform, crs, nodata, block)
        self._dataset = rasterio.open(tmp, "w", **profile)
        _describe(self._dataset, band_names, tags)
        self._done = False

    def write(self, array: np.ndarray, window: tuple[int, int, int, int]) -> None:
        """Write ``(bands, h, w)`` at ``(row, col, h, w)``."""
        row, col, height, width = window
        self._dataset.write(array, window=Window(col, row, width, height))

    def commit(self) -> Path:
        """Close the file and move it onto its final name."""
        self._dataset.close()
        self._stack.close()
        self._done = True
        return self.path

    def abort(self) -> None:
        """Discard the partial file unless already committed (safe to call twice)."""
        if self._done:
            return
        self._dataset.close()
        error = RuntimeError(f"aborted writing {self.path}")
        self._stack.__exit__(RuntimeError, error, None)
        self._done = True

    def __enter__(self) -> BlockWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None and not self._done:
            self.commit()
        else:
            self.abort()
