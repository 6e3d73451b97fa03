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
from rasterio.enums import Resampling
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.vrt import WarpedVRT
from rasterio.warp import transform_bounds
from rasterio.windows import Window

from runtime import raster_sample
from runtime.bands import BandPlan, plan_bands
from runtime.gdal_env import gdal_path
from runtime.georef import georeferencing_problem
from runtime.kernels import compiled
from runtime.stored_values import alpha_band, apply_scale_offset, scale_offset, stored_validity
from runtime.tile_source import (
    NO_MASK,
    RawTile,
    clean_window,
    clip_tile,
    finite_valid,
    ring,
)
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
                alpha = alpha_band(self._dtm)
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
                    alpha_band(reader),
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
        if dataset.nodata is None and alpha_band(dataset) is None:
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

    #: ``read`` / ``read_normalised`` of disjoint ``modalities`` may run on two threads at once: each file
    #: has a dataset of its own (its cloud mask goes with optical, its terrain model with the DSM).
    reads_modalities_apart = True

    def read(self, y: int, x: int, size: int, modalities: Sequence[str] | None = None) -> RawTile:
        """Tile ``(y, x)`` of every modality, or of ``modalities`` only."""
        h, w = clip_tile(y, x, size, self.height, self.width)
        inside = np.zeros((size, size), dtype=bool)
        inside[:h, :w] = True
        window = Window(x, y, w, h)
        values: dict[str, np.ndarray] = {}
        valid: dict[str, np.ndarray] = {}
        for name in self.modalities if modalities is None else modalities:
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
            valid["optical"][:h, :w] &= ~self._cloudy(window)
        return RawTile(values, valid, inside)

    def _cloudy(self, window: Window) -> np.ndarray:
        """Pixels of ``window`` the cloud mask marks (value > 0 where the mask itself is valid)."""
        assert self._cloud is not None
        try:
            clouds = self._cloud.read(1, window=window)
            cloud_valid = self._cloud.read_masks(1, window=window) > 0
        except RasterioError as exc:
            raise DataError(
                f"{self.cloud_path}: reading failed ({_one_line(exc)}); re-export the cloud mask"
            ) from exc
        return np.asarray((clouds > 0) & cloud_valid)

    def read_normalised(
        self,
        y: int,
        x: int,
        size: int,
        dilation: Mapping[str, int],
        specs: Mapping[str, ModalitySpec],
        modalities: Sequence[str] | None = None,
        out: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray] | None:
        """Normalised engine inputs of tile ``(y, x)``, scale/offset, finite check and normalisation in one
        compiled pass per modality after GDAL's read (``runtime/kernels.py``), when the tile lies inside the
        raster and every pixel of every modality is valid, and so is every pixel within its ``dilation``
        around the tile; None otherwise, and the caller takes the numpy path (``scheduling.prepare``). Also
        None without the compiled kernels, with a terrain model (``--dtm``) or for a modality warped onto
        the grid (its window would be resampled on its own). The same bits as the numpy path. Every modality,
        or ``modalities`` only; into ``out``'s arrays (``GroupBuffers`` slots) where given."""
        kernels = compiled()
        names = self.modalities if modalities is None else tuple(modalities)
        inside = min(y, x) >= 0 and y + size <= self.height and x + size <= self.width
        if kernels is None or (self._dtm is not None and "dsm" in names) or not inside:
            return None
        inputs: dict[str, np.ndarray] = {}
        for name in names:
            spec, plan, reader = specs.get(name), self._plans[name], self._readers[name]
            if spec is None or spec.bands != len(plan.indexes) or isinstance(reader, WarpedVRT):
                return None
            radius = max(0, dilation.get(name, 0))
            y0, x0 = max(0, y - radius), max(0, x - radius)
            y1, x1 = min(self.height, y + size + radius), min(self.width, x + size + radius)
            window = Window(x0, y0, x1 - x0, y1 - y0)
            if name == "optical" and self._cloud is not None and self._cloudy(window).any():
                return None  # before decoding the optical bands: the common reason to decline
            data, stored = self._read_stored(reader, self.paths[name], plan, window, y0)
            if not stored.all():
                return None
            scale, offset = scale_offset(reader, list(plan.indexes))
            strips = ring(y - y0, x - x0, size, radius, y1 - y0, x1 - x0) if radius else []
            slot = None if out is None else out.get(name)
            ready = clean_window(
                kernels, data, NO_MASK, scale, offset, y - y0, x - x0, size, spec, strips, slot
            )
            if ready is None:
                return None
            inputs[name] = ready
        return inputs

    def _read_stored(
        self, reader: Any, path: Path, plan: BandPlan, window: Window, y: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Stored values of ``plan``'s bands in ``window`` as float32 and the validity the file declares:
        its own masks and the alpha band."""
        bands = list(plan.indexes)
        try:
            data = reader.read(bands, window=window, out_dtype="float32")
            stored = stored_validity(reader, bands, window, data)
            if plan.alpha is not None:
                stored &= reader.read(plan.alpha, window=window) > 0
        except RasterioError as exc:
            raise DataError(
                f"{path}: reading rows {y}..{y + int(window.height)} failed ({_one_line(exc)}); the file "
                "is truncated or corrupt (or cannot be warped onto the grid), re-export it"
            ) from exc
        return data, stored

    def _read_physical(
        self, reader: Any, path: Path, plan: BandPlan, window: Window, y: int
    ) -> tuple[np.ndarray, np.ndarray]:
        """Physical values of ``plan``'s bands in ``window`` and their validity: the file's own masks,
        the alpha band, NaN/inf. One read path for the modalities and the terrain model."""
        data, stored = self._read_stored(reader, path, plan, window, y)
        data = apply_scale_offset(reader, list(plan.indexes), data)
        return data, stored & finite_valid(data)

    @property
    def reference_block_shape(self) -> tuple[int, int]:
        """Rows and columns of the reference raster's blocks ((1, 1) where it declares none)."""
        reference = self._readers[self.modalities[0]]
        return tuple(reference.block_shapes[0]) if reference.block_shapes else (1, 1)

    def sample_values(self, readers: int = raster_sample.SAMPLE_READERS) -> dict[str, tuple[np.ndarray, str]]:
        """Valid values ``(bands, N)`` of each modality from a few windows spread over the scene, for the
        input contract (``raster_sample.sample_values``), on up to ``readers`` threads."""
        return raster_sample.sample_values(self, readers)

    def close(self) -> None:
        """Close every dataset and VRT this source opened (VRTs first), and its reader threads' handles."""
        for sibling in self._siblings:
            sibling.close()
        self._siblings.clear()
        for dataset in reversed(self._opened):
            dataset.close()
        self._opened.clear()


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
