"""``runtime.georef.georeferencing_problem``: real GeoTIFFs written with rasterio, each missing part of its
georeferencing, get the GDAL command that fixes exactly that (GCP and RPC rasters need gdalwarp, not
gdal_edit.py)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint
from rasterio.errors import NotGeoreferencedWarning
from rasterio.rpc import RPC

from runtime.georef import georeferencing_problem

TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
SIZE = 32


def _write(path: Path, **georef: Any) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(
            path, "w", driver="GTiff", height=SIZE, width=SIZE, count=1, dtype="float32", **georef
        ) as dataset:
            dataset.write(np.ones((1, SIZE, SIZE), dtype=np.float32))
    return path


def _gcps() -> list[GroundControlPoint]:
    corners = [(0, 0), (0, SIZE), (SIZE, 0), (SIZE, SIZE)]
    return [GroundControlPoint(row, col, 500000.0 + 10 * col, 4000000.0 - 10 * row) for row, col in corners]


def _rpcs() -> RPC:
    return RPC(
        height_off=0.0, height_scale=500.0, lat_off=43.6, lat_scale=0.1, long_off=1.4, long_scale=0.1,
        line_off=SIZE / 2, line_scale=SIZE / 2, samp_off=SIZE / 2, samp_scale=SIZE / 2,
        line_num_coeff=[0.0, 0.0, -1.0] + [0.0] * 17, line_den_coeff=[1.0] + [0.0] * 19,
        samp_num_coeff=[0.0, 1.0] + [0.0] * 18, samp_den_coeff=[1.0] + [0.0] * 19,
    )  # fmt: skip


@pytest.fixture
def opened() -> Iterator[Any]:
    """Opens a path with rasterio (its not-georeferenced warning silenced) and closes it after the test."""
    datasets: list[Any] = []

    def open_(path: Path) -> Any:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            datasets.append(rasterio.open(path))
        return datasets[-1]

    yield open_
    for dataset in datasets:
        dataset.close()


def test_a_georeferenced_grid_has_no_problem(tmp_path: Path, opened: Any) -> None:
    path = _write(tmp_path / "ok.tif", crs="EPSG:32631", transform=TRANSFORM)
    assert georeferencing_problem(opened(path)) is None


def test_gcp_only_raster_needs_gdalwarp_not_gdal_edit(tmp_path: Path, opened: Any) -> None:
    path = _write(tmp_path / "scene.tif", gcps=_gcps(), crs="EPSG:32631")
    dataset = opened(path)
    assert dataset.crs is None and len(dataset.gcps[0]) == 4  # what the runtime sees: no CRS, no grid
    problem = georeferencing_problem(dataset)
    assert problem is not None and "\n" not in problem
    assert problem.startswith(str(path)) and "4 ground control points" in problem
    assert f"`gdalwarp -t_srs EPSG:xxxx {path} {tmp_path / 'scene.warped.tif'}`" in problem
    assert "gdal_edit" not in problem and "-s_srs" not in problem  # the GCPs carry their CRS


def test_rpc_only_raster_needs_gdalwarp_rpc(tmp_path: Path, opened: Any) -> None:
    path = _write(tmp_path / "l1b.tif", rpcs=_rpcs())
    dataset = opened(path)
    assert dataset.crs is None and dataset.rpcs is not None and not dataset.gcps[0]
    problem = georeferencing_problem(dataset)
    assert problem is not None and "\n" not in problem and problem.startswith(str(path))
    assert "only by RPCs" in problem
    assert f"`gdalwarp -rpc -t_srs EPSG:xxxx {path} {tmp_path / 'l1b.warped.tif'}`" in problem
    assert "gdal_edit" not in problem


def test_no_crs_and_no_geotransform_needs_both(tmp_path: Path, opened: Any) -> None:
    path = _write(tmp_path / "bare.tif")
    problem = georeferencing_problem(opened(path))
    assert problem is not None and "\n" not in problem
    assert problem.startswith(str(path)) and "no CRS and no geotransform" in problem
    assert problem.endswith(f"`gdal_edit.py -a_srs EPSG:xxxx -a_ullr ulx uly lrx lry {path}`")


def test_a_grid_without_crs_needs_only_the_crs(tmp_path: Path, opened: Any) -> None:
    path = _write(tmp_path / "nocrs.tif", transform=TRANSFORM)
    problem = georeferencing_problem(opened(path))
    assert problem is not None and "\n" not in problem
    assert problem.endswith(f"set it with `gdal_edit.py -a_srs EPSG:xxxx {path}`")
    assert "-a_ullr" not in problem and "gdalwarp" not in problem


def test_a_crs_without_grid_needs_the_extent(tmp_path: Path, opened: Any) -> None:
    path = _write(tmp_path / "crs only.tif", crs="EPSG:32631")
    problem = georeferencing_problem(opened(path))
    assert problem is not None and "\n" not in problem
    # the suggested command is quoted for the shell when the path has a space
    assert problem.endswith(f"`gdal_edit.py -a_ullr ulx uly lrx lry '{path}'`")
    assert "-a_srs" not in problem
