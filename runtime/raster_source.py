"""Tiles read from GeoTIFFs through windowed rasterio reads on a reference grid (others warped onto it).

The validity of each pixel folds in nodata, mask bands / dataset masks, alpha bands, NaN/inf, the cloud mask
(optical) and the terrain model's own validity (DSM); the files' band plan picks and orders the bands.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import ColorInterp, MaskFlags, Resampling
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from runtime.bands import BandPlan, plan_bands
from runtime.gdal_env import gdal_path
from runtime.georef import georeferencing_problem
from runtime.tile_source import RANGE_SAMPLE_PX, RANGE_SAMPLES, RawTile, clip_tile, finite_valid
from stars_edge.errors import DataError
from stars_edge.modalities import MODALITIES, ModalitySpec

#: Grids whose corners differ by less than this many pixels are read as one grid (no resampling).
GRID_TOLERANCE_PX = 0.1


def same_grid(dataset: Any, reference: Any) -> bool:
    """True when ``dataset`` lies on ``reference``'s pixel grid up to ``GRID_TOLERANCE_PX``.

    Co-registered products often carry pixel sizes that differ in the 5th digit; warping them would blur
    nodata edges by a pixel for a sub-pixel shift nobody intended.
    """
    if dataset.crs != reference.crs or dataset.shape != reference.shape:
        return False
    height, width = reference.shape
    corners = ((0, 0), (0, width), (height, 0), (height, width))
    inverse = ~reference.transform
    for row, col in corners:
        x, y = dataset.transform @ (col, row)
        ref_col, ref_row = inverse @ (x, y)
        if abs(ref_col - col) > GRID_TOLERANCE_PX or abs(ref_row - row) > GRID_TOLERANCE_PX:
            return False
    return True


class RasterSource:
    """Tiles read through windowed rasterio reads; the first given modality defines the grid.

    Modalities on another CRS, resolution or extent are warped onto the reference grid on the fly through a
    ``WarpedVRT`` (bilinear for data, nearest for the cloud mask). A cloud mask marks optical pixels invalid
    where its value is > 0.
    """

    def __init__(
        self,
        paths: Mapping[str, str | os.PathLike[str]],
        specs: Mapping[str, ModalitySpec],
        cloud_mask: str | os.PathLike[str] | None = None,
        bands: Mapping[str, Sequence[str]] | None = None,
        dtm: str | os.PathLike[str] | None = None,
    ) -> None:
        self._arguments = (paths, specs, cloud_mask, bands, dtm)
        self.modalities = tuple(m for m in MODALITIES if paths.get(m) is not None)
        if not self.modalities:
            raise DataError("no input raster given; pass at least one of --optical, --sar, --dsm")
        if cloud_mask is not None and "optical" not in self.modalities:
            raise DataError(
                f"--cloud-mask {cloud_mask} applies to optical, but no --optical raster was given"
            )
        if dtm is not None and "dsm" not in self.modalities:
            raise DataError(f"--dtm {dtm} is subtracted from the DSM, but no --dsm raster was given")
        unused = sorted(set(bands or {}) - set(self.modalities))
        if unused:
            raise DataError(f"--bands names {', '.join(unused)}, but no such input raster was given")
        self.paths = {m: Path(p) for m, p in paths.items() if p is not None and m in self.modalities}
        self.cloud_path = Path(cloud_mask) if cloud_mask is not None else None
        self.dtm_path = Path(dtm) if dtm is not None else None
        self._opened: list[Any] = []
        #: Other handles on the same files for reader threads (``handles``), opened once, closed with this.
        self._siblings: list[RasterSource] = []
        self._readers: dict[str, Any] = {}
        self._plans: dict[str, BandPlan] = {}
        #: What the source decided about the inputs (band order, selections), for the run summary.
        self.notes: list[str] = []
        try:
            reference = self._open(self.paths[self.modalities[0]])
            self.reference_path = self.paths[self.modalities[0]]
            self.crs = reference.crs
            self.transform = reference.transform
            self.height, self.width = int(reference.height), int(reference.width)
            self._readers[self.modalities[0]] = reference
            originals = {self.modalities[0]: reference}
            for name in self.modalities[1:]:
                originals[name] = self._open(self.paths[name])
                self._readers[name] = self._on_grid(originals[name], reference)
            self._cloud = None
            if self.cloud_path is not None:
                self._cloud = self._on_grid(self._open(self.cloud_path), reference, nearest=True)
            self._dtm = None
            self._dtm_plan: BandPlan | None = None
            if self.dtm_path is not None:
                self._dtm = self._on_grid(self._open(self.dtm_path), reference)
                alpha = _alpha_band(self._dtm)
                if self._dtm.count - (alpha is not None) != 1:
                    raise DataError(f"{self.dtm_path} has {self._dtm.count} bands; a terrain model has one")
                self._dtm_plan = BandPlan((2 if alpha == 1 else 1,), alpha)
            for name in self.modalities:
                spec = specs.get(name)
                if spec is None:
                    raise DataError(
                        f"{self.paths[name]}: the engines take no {name} input (they know "
                        f"{', '.join(specs) or 'none'}); drop --{name}"
                    )
                reader = self._readers[name]
                descriptions = list(originals[name].descriptions) + [None] * reader.count
                plan = plan_bands(
                    str(self.paths[name]),
                    spec,
                    reader.count,
                    descriptions[: reader.count],
                    _alpha_band(reader),
                    (bands or {}).get(name),
                )
                self._plans[name] = plan
                if plan.note:
                    self.notes.append(f"{name}: {plan.note}")
        except BaseException:
            self.close()
            raise

    def handles(self, count: int) -> list[RasterSource]:
        """``count`` handles on these files, this one first, for that many reader threads (a GDAL dataset
        is not to be shared between threads): the same tiles through each one's own datasets. The others
        are opened on the first call and kept for the next chunks (opening them per chunk grew the peak
        memory with the number of chunks); ``close`` closes them."""
        while len(self._siblings) < count - 1:
            self._siblings.append(RasterSource(*self._arguments))
        return [self, *self._siblings[: count - 1]]

    def _open(self, path: Path) -> Any:
        text = gdal_path(path)
        if not text.startswith("/vsi"):
            if path.is_dir():
                raise DataError(f"{path} is a directory; pass a raster file (e.g. a GeoTIFF) inside it")
            if not path.is_file():
                raise DataError(f"{path} does not exist; check the path")
        try:
            dataset = rasterio.open(text)
        except RasterioIOError as exc:
            raise DataError(
                f"{path} is not a readable raster ({_one_line(exc)}); check the path, or re-export it as a "
                "GeoTIFF"
            ) from exc
        self._opened.append(dataset)
        problem = georeferencing_problem(dataset)
        if problem is not None:
            raise DataError(problem)
        return dataset

    def _on_grid(self, dataset: Any, reference: Any, nearest: bool = False) -> Any:
        """``dataset`` itself when it shares the reference grid, else a WarpedVRT onto that grid."""
        if same_grid(dataset, reference):
            return dataset
        try:
            left, bottom, right, top = transform_bounds(dataset.crs, reference.crs, *dataset.bounds)
        except Exception as exc:  # CRSError, CPLE_* (rasterio._err, not public), ValueError
            raise DataError(
                f"{dataset.name}: its CRS ({_crs_name(dataset.crs)}) cannot be transformed to the CRS of "
                f"{reference.name} ({_crs_name(reference.crs)}); reproject it onto the reference grid first "
                "(gdalwarp -t_srs)"
            ) from exc
        if not all(np.isfinite(v) for v in (left, bottom, right, top)):
            raise DataError(
                f"{dataset.name}: its bounds do not map into the CRS of {reference.name}; reproject it onto "
                "the reference grid first (gdalwarp -t_srs)"
            )
        ref = reference.bounds
        if left >= ref.right or right <= ref.left or bottom >= ref.top or top <= ref.bottom:
            raise DataError(
                f"{dataset.name} does not overlap the reference raster {reference.name}; "
                "pass rasters that cover the same area"
            )
        options: dict[str, Any] = {
            "crs": reference.crs,
            "transform": reference.transform,
            "width": reference.width,
            "height": reference.height,
            "resampling": Resampling.nearest if nearest else Resampling.bilinear,
        }
        if dataset.nodata is None and _alpha_band(dataset) is None:
            options["add_alpha"] = True  # the footprint: outside it nothing was measured
        try:
            vrt = WarpedVRT(dataset, **options)
        except Exception as exc:  # CRSError, CPLE_* (rasterio._err, not public)
            raise DataError(
                f"{dataset.name} cannot be warped onto the grid of {reference.name} ({_one_line(exc)}); "
                "reproject it onto the reference grid first (gdalwarp)"
            ) from exc
        self._opened.append(vrt)
        return vrt

    def band_counts(self) -> dict[str, int]:
        return {m: len(self._plans[m].indexes) for m in self.modalities}

    @property
    def band_indexes(self) -> dict[str, list[int]]:
        """The 1-based file bands read per modality, in the engines' order (part of a run's identity)."""
        return {m: list(self._plans[m].indexes) for m in self.modalities}

    @staticmethod
    def _stored_validity(reader: Any, bands: list[int], window: Any, data: np.ndarray) -> np.ndarray:
        """Validity the file itself declares: nodata values compared directly (no second pass through
        GDAL's mask band), mask bands / alpha / dataset masks through ``read_masks``."""
        flags = [reader.mask_flag_enums[b - 1] for b in bands]
        if all(MaskFlags.all_valid in f for f in flags):
            return np.ones(data.shape[1:], dtype=bool)
        nodata = reader.nodata
        if nodata is not None and all(f == [MaskFlags.nodata] for f in flags):
            if np.isnan(nodata):
                return np.ones(data.shape[1:], dtype=bool)  # NaN is caught by the finite check
            return (data != np.float32(nodata)).all(axis=0)
        return (reader.read_masks(bands, window=window) > 0).all(axis=0)

    def read(self, y: int, x: int, size: int) -> RawTile:
        h, w = clip_tile(y, x, size, self.height, self.width)
        inside = np.zeros((size, size), dtype=bool)
        inside[:h, :w] = True
        window = Window(x, y, w, h)
        values: dict[str, np.ndarray] = {}
        valid: dict[str, np.ndarray] = {}
        for name in self.modalities:
            plan = self._plans[name]
            if h == size and w == size:  # a tile inside the raster (nearly all): no padding to copy into
                values[name], valid[name] = self._read_physical(
                    self._readers[name], self.paths[name], plan, window, y
                )
                continue
            tile = np.zeros((len(plan.indexes), size, size), dtype=np.float32)
            mask = np.zeros((size, size), dtype=bool)
            if h and w:
                data, ok = self._read_physical(self._readers[name], self.paths[name], plan, window, y)
                tile[:, :h, :w] = data
                mask[:h, :w] = ok
            values[name], valid[name] = tile, mask
        if self._dtm is not None and self._dtm_plan is not None and h and w and "dsm" in values:
            assert self.dtm_path is not None
            terrain, ok = self._read_physical(self._dtm, self.dtm_path, self._dtm_plan, window, y)
            values["dsm"][0, :h, :w] -= terrain[0]
            valid["dsm"][:h, :w] &= ok
        if self._cloud is not None and h and w and "optical" in valid:
            try:
                clouds = self._cloud.read(1, window=window)
                cloud_valid = self._cloud.read_masks(1, window=window) > 0
            except RasterioError as exc:
                raise DataError(
                    f"{self.cloud_path}: reading failed ({_one_line(exc)}); re-export the cloud mask"
                ) from exc
            valid["optical"][:h, :w] &= ~((clouds > 0) & cloud_valid)
        return RawTile(values, valid, inside)

    def _read_physical(
        self, reader: Any, path: Path, plan: BandPlan, window: Window, y: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Physical values of ``plan``'s bands in ``window`` and their validity: the file's own masks,
        the alpha band, NaN/inf. One read path for the modalities and the terrain model."""
        bands = list(plan.indexes)
        try:
            data = reader.read(bands, window=window, out_dtype="float32")
            stored = self._stored_validity(reader, bands, window, data)
            if plan.alpha is not None:
                stored &= reader.read(plan.alpha, window=window) > 0
        except RasterioError as exc:
            raise DataError(
                f"{path}: reading rows {y}..{y + int(window.height)} failed ({_one_line(exc)}); the file "
                "is truncated or corrupt (or cannot be warped onto the grid), re-export it"
            ) from exc
        data = _apply_scale_offset(reader, bands, data)
        return data, stored & finite_valid(data)

    def sample_values(self) -> dict[str, tuple[np.ndarray, str]]:
        """Valid values ``(bands, N)`` of each modality from a few windows spread over the scene (a quick
        look at the value range, read with the same validity rules as the tiles). Windows start on the
        reference's block grid, so each decodes one block per band rather than up to four."""
        samples: dict[str, list[np.ndarray]] = {m: [] for m in self.modalities}
        size = min(RANGE_SAMPLE_PX, self.height, self.width)
        reference = self._readers[self.modalities[0]]
        block_rows, block_cols = reference.block_shapes[0] if reference.block_shapes else (1, 1)
        for fy in np.linspace(0, 1, RANGE_SAMPLES):
            for fx in np.linspace(0, 1, RANGE_SAMPLES):
                y = _block_aligned(fy * (self.height - size), block_rows, self.height - size)
                x = _block_aligned(fx * (self.width - size), block_cols, self.width - size)
                raw = self.read(y, x, size)
                for name in self.modalities:
                    samples[name].append(raw.values[name][:, raw.valid[name]])
        return {m: (np.concatenate(v, axis=1), str(self.paths[m])) for m, v in samples.items()}

    def close(self) -> None:
        """Close every dataset and VRT this source opened (VRTs first), and its reader threads' handles."""
        for sibling in self._siblings:
            sibling.close()
        self._siblings.clear()
        for dataset in reversed(self._opened):
            dataset.close()
        self._opened.clear()


def _block_aligned(position: float, block: int, limit: int) -> int:
    """``position`` snapped down to a multiple of ``block`` (when blocks are smaller than the raster), at
    most ``limit``."""
    snapped = int(position) // block * block if block > 1 else int(position)
    return max(0, min(snapped, limit))


def _alpha_band(reader: Any) -> int | None:
    """The 1-based band GDAL flags as alpha (``ColorInterp.alpha``, e.g. ``gdalwarp -dstalpha``), if any.

    An alpha band is a mask whatever its position or the band count: 0 = nothing measured there. GDAL's
    own mask flags do not always say so (a float GeoTIFF's or a warped VRT's alpha reads as all-valid
    through ``read_masks``), so the runtime applies it itself."""
    for index, interp in enumerate(reader.colorinterp):
        if interp == ColorInterp.alpha and reader.count > 1:
            return index + 1
    return None


def _apply_scale_offset(reader: Any, bands: list[int], data: np.ndarray) -> np.ndarray:
    """Physical values from stored ones where the file declares GDAL scale/offset (e.g. Sentinel-2 L2A:
    uint16 DN with scale 1e-4): engines are trained on physical units. Validity is decided on the stored
    values before this (nodata compares raw numbers)."""
    scales = [float(reader.scales[b - 1]) for b in bands]
    offsets = [float(reader.offsets[b - 1]) for b in bands]
    if all(sc == 1.0 for sc in scales) and all(of == 0.0 for of in offsets):
        return data
    scale = np.asarray(scales, dtype=np.float32).reshape(-1, 1, 1)
    offset = np.asarray(offsets, dtype=np.float32).reshape(-1, 1, 1)
    # in place on the freshly read array: the same float32 operations as ``data * scale + offset``
    np.multiply(data, scale, out=data)
    np.add(data, offset, out=data)
    return data


def _crs_name(crs: Any) -> str:
    """A short name for a CRS in an error message (EPSG code, else the WKT name, at most 60 chars)."""
    try:
        epsg = crs.to_epsg()
        if epsg is not None:
            return f"EPSG:{epsg}"
        wkt = crs.to_wkt()
        name = wkt.split('"')[1] if '"' in wkt else wkt
    except Exception:  # a CRS that cannot even be printed
        return "unreadable"
    return name[:60]


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line if len(line) <= 160 else line[:157] + "..."
