"""How a raster's stored numbers become physical values and validity, by GDAL's own semantics: nodata,
mask bands and dataset masks, alpha bands, and scale/offset tags (``runtime/raster_source.py`` reads them)."""

from __future__ import annotations

from typing import Any

import numpy as np
from rasterio.enums import ColorInterp, MaskFlags

from runtime.tile_source import NO_SCALE

__all__ = ["alpha_band", "apply_scale_offset", "scale_offset", "stored_validity"]


def stored_validity(reader: Any, bands: list[int], window: Any, data: np.ndarray) -> np.ndarray:
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


def alpha_band(reader: Any) -> int | None:
    """The 1-based band GDAL flags as alpha (``ColorInterp.alpha``, e.g. ``gdalwarp -dstalpha``), if any.

    An alpha band is a mask whatever its position or the band count: 0 = nothing measured there. GDAL's
    own mask flags do not always say so (a float GeoTIFF's or a warped VRT's alpha reads as all-valid
    through ``read_masks``), so the runtime applies it itself."""
    for index, interp in enumerate(reader.colorinterp):
        if interp == ColorInterp.alpha and reader.count > 1:
            return index + 1
    return None


def scale_offset(reader: Any, bands: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """The GDAL scale and offset of ``bands`` as float32, or two empty arrays where every band has scale 1
    and offset 0 (then the stored values are the physical ones, untouched)."""
    scales = [float(reader.scales[b - 1]) for b in bands]
    offsets = [float(reader.offsets[b - 1]) for b in bands]
    if all(sc == 1.0 for sc in scales) and all(of == 0.0 for of in offsets):
        return NO_SCALE, NO_SCALE
    return np.asarray(scales, dtype=np.float32), np.asarray(offsets, dtype=np.float32)


def apply_scale_offset(reader: Any, bands: list[int], data: np.ndarray) -> np.ndarray:
    """Physical values from stored ones where the file declares GDAL scale/offset (e.g. Sentinel-2 L2A:
    uint16 DN with scale 1e-4): engines are trained on physical units. Validity is decided on the stored
    values before this (nodata compares raw numbers)."""
    scales, offsets = scale_offset(reader, bands)
    if scales.size == 0:
        return data
    scale, offset = scales.reshape(-1, 1, 1), offsets.reshape(-1, 1, 1)
    # in place on the freshly read array: the same float32 operations as ``data * scale + offset``
    np.multiply(data, scale, out=data)
    np.add(data, offset, out=data)
    return data
