"""Whether a raster lies on a georeferenced grid the runtime can read, and if not, the GDAL command to fix it.

The runtime reads windows of a north-up grid: it needs a CRS and a geotransform. Rasters can instead be
georeferenced by ground control points or by rational polynomial coefficients (raw satellite scenes, many
SAR products), which map pixels to the ground but define no grid: those need ``gdalwarp`` (which resamples
onto a grid using the GCPs or RPCs), not ``gdal_edit.py -a_srs`` (which only labels an existing grid).
"""

from __future__ import annotations

import shlex
from pathlib import PurePath
from typing import Any

from rasterio.errors import CRSError, RasterioError

__all__ = ["georeferencing_problem"]


def georeferencing_problem(dataset: Any) -> str | None:
    """The one-line problem and fix for an open rasterio dataset that is not on a georeferenced grid, or
    None when it has a readable CRS and a geotransform.

    The line starts with the dataset's name (its path) and ends with the GDAL command to run:
    ``gdal_edit.py -a_srs`` (no CRS), ``-a_ullr`` too (no geotransform either), ``gdalwarp`` (ground control
    points), ``gdalwarp -rpc`` (RPCs only).
    """
    name = str(dataset.name)
    arg = shlex.quote(name)
    try:
        crs = dataset.crs
        if crs is not None:
            crs.to_wkt()
    except (CRSError, RasterioError) as exc:
        return (
            f"{name} has an unreadable CRS ({_one_line(exc)}); set a valid one with "
            f"`gdal_edit.py -a_srs EPSG:xxxx {arg}`"
        )
    has_grid = not dataset.transform.is_identity
    if crs is not None and has_grid:
        return None
    warped = shlex.quote(_warped_name(name))
    gcps, gcp_crs = dataset.gcps
    if gcps and not has_grid:
        source = "" if _readable(gcp_crs) else "-s_srs EPSG:xxxx "  # the GCPs' CRS, when the file lacks it
        return (
            f"{name} is georeferenced only by {len(gcps)} ground control points, not on a grid; warp it onto "
            f"one with `gdalwarp {source}-t_srs EPSG:xxxx {arg} {warped}` (add -tps for a thin-plate spline "
            "through the GCPs) and pass the warped file"
        )
    if dataset.rpcs is not None and not has_grid:
        return (
            f"{name} is georeferenced only by RPCs (rational polynomial coefficients), not on a grid; "
            f"orthorectify it with `gdalwarp -rpc -t_srs EPSG:xxxx {arg} {warped}` (add -to RPC_DEM=dem.tif "
            "for terrain) and pass the warped file"
        )
    if crs is None and has_grid:
        return f"{name} has a geotransform but no CRS; set it with `gdal_edit.py -a_srs EPSG:xxxx {arg}`"
    if crs is None:
        return (
            f"{name} has no CRS and no geotransform; georeference it with "
            f"`gdal_edit.py -a_srs EPSG:xxxx -a_ullr ulx uly lrx lry {arg}`"
        )
    return (
        f"{name} has a CRS but no geotransform (its pixels would be 1 CRS unit at the origin); set its "
        f"extent with `gdal_edit.py -a_ullr ulx uly lrx lry {arg}`"
    )


def _readable(crs: Any) -> bool:
    try:
        return crs is not None and bool(crs.to_wkt())
    except (CRSError, RasterioError):
        return False


def _warped_name(name: str) -> str:
    """``scene.tif`` -> ``scene.warped.tif`` (next to the input), for the suggested gdalwarp command."""
    path = PurePath(name)
    if not path.suffix:
        return f"{name}.warped.tif"
    return str(path.with_name(f"{path.stem}.warped{path.suffix}"))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
