"""GeoTIFF helpers: atomic writes, validity masks, warping onto a reference grid, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform_bounds

from stars_edge.data.geotiff import NODATA, BlockWriter, Grid, read_grid, read_raster, write_geotiff
from stars_edge.errors import DataError

UTM = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 4200000.0)


def test_write_and_read_back_with_nodata_and_nan(tmp_path: Path) -> None:
    data = np.arange(2 * 64 * 64, dtype=np.float32).reshape(2, 64, 64)
    data[0, 0, 0] = NODATA
    data[1, 5, 5] = np.nan
    path = write_geotiff(
        tmp_path / "a.tif", data, UTM, "EPSG:32631", band_names=("vv", "vh"), tags={"K": "v"}
    )
    raster = read_raster(path)
    assert raster.band_names == ("vv", "vh") and raster.tags["K"] == "v"
    assert raster.grid == Grid("EPSG:32631", UTM, 64, 64)
    assert not raster.valid[0, 0] and not raster.valid[5, 5] and raster.valid.sum() == 64 * 64 - 2
    with rasterio.open(path) as src:
        assert src.block_shapes[0] == (32, 32) and src.compression.value == "DEFLATE"


def test_mask_band_counts_as_invalid(tmp_path: Path) -> None:
    path = tmp_path / "masked.tif"
    profile = {
        "driver": "GTiff",
        "width": 32,
        "height": 32,
        "count": 1,
        "dtype": "uint8",
        "crs": "EPSG:32631",
        "transform": UTM,
    }
    mask = np.full((32, 32), 255, dtype=np.uint8)
    mask[:, :8] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((1, 32, 32), np.uint8))
        dst.write_mask(mask)
    raster = read_raster(path)
    assert not raster.valid[:, :8].any() and raster.valid[:, 8:].all()


def test_warp_from_another_crs(tmp_path: Path) -> None:
    # the same area in geographic coordinates, resampled onto a UTM reference grid
    reference = Grid("EPSG:32631", Affine(10.0, 0, 500000.0, 0, -10.0, 5000000.0), 40, 40)
    ramp = np.tile(np.linspace(0, 1, 80, dtype=np.float32), (1, 80, 1))
    left, bottom, right, top = transform_bounds("EPSG:32631", "EPSG:4326", *reference.bounds)
    geo = Affine((right - left + 0.002) / 80, 0, left - 0.001, 0, -(top - bottom + 0.002) / 80, top + 0.001)
    path = write_geotiff(tmp_path / "geo.tif", ramp, geo, "EPSG:4326")
    raster = read_raster(path, grid=reference)
    assert raster.array.shape == (1, 40, 40) and raster.grid == reference
    assert raster.valid.all()
    row = raster.array[0, 20]
    assert np.all(np.diff(row) > 0)  # west-to-east ramp survives the reprojection


def test_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"missing\.tif does not exist"):
        read_raster(tmp_path / "missing.tif")
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"bad\.tif"):
        read_grid(bad)
    good = write_geotiff(tmp_path / "g.tif", np.zeros((2, 32, 32), np.float32), UTM, "EPSG:32631")
    with pytest.raises(DataError, match=r"g\.tif has 2 band"):
        read_raster(good, expected_bands=3)
    with pytest.raises(DataError, match="band 5"):
        read_raster(good, bands=[5])
    elsewhere = Grid("EPSG:32631", Affine(10.0, 0, 700000.0, 0, -10.0, 4200000.0), 32, 32)
    with pytest.raises(DataError, match="does not overlap"):
        read_raster(good, grid=elsewhere)
    partial = Grid("EPSG:32631", Affine(10.0, 0, 600160.0, 0, -10.0, 4200000.0), 32, 32)
    raster = read_raster(good, grid=partial, allow_partial=True)
    assert raster.valid[:, :16].all() and not raster.valid[:, 16:].any()


def test_block_writer_commit_and_abort(tmp_path: Path) -> None:
    target = tmp_path / "big.tif"
    writer = BlockWriter(
        target, width=64, height=64, count=1, dtype="float32", transform=UTM, crs="EPSG:32631"
    )
    writer.write(np.ones((1, 32, 64), np.float32), (0, 0, 32, 64))
    assert not target.exists()  # nothing under the final name until commit
    writer.write(np.full((1, 32, 64), 2, np.float32), (32, 0, 32, 64))
    writer.commit()
    assert read_raster(target).array[0, 40, 0] == 2
    aborted = BlockWriter(
        tmp_path / "aborted.tif",
        width=32,
        height=32,
        count=1,
        dtype="uint8",
        transform=UTM,
        crs="EPSG:32631",
        nodata=255,
    )
    aborted.abort()
    assert list(tmp_path.iterdir()) == [target]
    with pytest.raises(DataError, match=r"nodata -9999\.0 does not fit uint8"):
        BlockWriter(tmp_path / "x.tif", width=32, height=32, count=1, dtype="uint8", transform=UTM, crs=None)
