"""Where tiles come from: GeoTIFFs on a reference grid (others warped onto it) or in-memory arrays.

Every source answers ``read(y, x, size)`` with physical values per modality and a per-pixel validity mask
that already folds in nodata, mask bands / dataset masks, NaN/inf and (for optical) the cloud mask.
Pixels outside the raster are padding: invalid, and marked in ``inside``.

The pieces live in ``tile_source`` (``RawTile``, the ``TileSource`` protocol, shared checks),
``array_source``, ``raster_source`` and ``gdal_env`` (GDAL paths and block cache); this module gathers
them under one import path.
"""

from __future__ import annotations

from runtime.array_source import ArraySource
from runtime.gdal_env import (
    GDAL_CACHE_MAX_MB,
    GDAL_CACHE_MB,
    gdal_cache_limit,
    gdal_path,
    local_file,
    tile_cache_bytes,
)
from runtime.raster_source import GRID_TOLERANCE_PX, RasterSource, same_grid
from runtime.tile_source import RANGE_SAMPLE_PX, RANGE_SAMPLES, RawTile, TileSource, check_band_counts

__all__ = [
    "GDAL_CACHE_MAX_MB",
    "GDAL_CACHE_MB",
    "GRID_TOLERANCE_PX",
    "RANGE_SAMPLES",
    "RANGE_SAMPLE_PX",
    "ArraySource",
    "RasterSource",
    "RawTile",
    "TileSource",
    "check_band_counts",
    "gdal_cache_limit",
    "gdal_path",
    "local_file",
    "same_grid",
    "tile_cache_bytes",
]
