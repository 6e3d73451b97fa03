"""GDAL block-cache sizing: a column chunk's block rows of the inputs, independent of the scene's size."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin

from runtime.predictor import GDAL_CACHE_MAX_MB, GDAL_CACHE_MB, gdal_cache_limit, tile_cache_bytes


def _raster(path: Path, height: int, width: int, bands: int, block: int) -> Path:
    profile = {
        "driver": "GTiff",
        "width": width,
        "height": height,
        "count": bands,
        "dtype": "float32",
        "crs": "EPSG:32631",
        "transform": from_origin(0, height, 1, 1),
        "tiled": True,
        "blockxsize": block,
        "blockysize": block,
    }
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(np.zeros((bands, height, width), dtype=np.float32))
    return path


def test_cache_bytes_cover_a_chunk_of_block_rows_whatever_the_scene_size(tmp_path: Path) -> None:
    """(tile + 2 blocks) rows by (chunk + tile + block) columns: each block decoded once per chunk."""
    tall = _raster(tmp_path / "tall.tif", 2048, 1024, 4, 128)
    wide = _raster(tmp_path / "wide.tif", 1024, 4096, 4, 128)
    expected = (256 + 2 * 128) * (512 + 256 + 128) * 4 * 4
    assert tile_cache_bytes([tall], 256, chunk_width=512) == expected
    assert tile_cache_bytes([wide], 256, chunk_width=512) == expected
    sar = _raster(tmp_path / "sar.tif", 1024, 4096, 2, 128)
    assert tile_cache_bytes([wide, sar], 256, chunk_width=512) == expected * 3 // 2
    small = _raster(tmp_path / "small.tif", 256, 256, 4, 128)
    assert tile_cache_bytes([small], 256) == 256 * (256 + 128) * 4 * 4  # never more rows than the file


def test_unreadable_inputs_count_zero_and_leave_errors_to_the_reader(tmp_path: Path) -> None:
    broken = tmp_path / "broken.tif"
    broken.write_bytes(b"not a tiff")
    assert tile_cache_bytes([broken, tmp_path / "missing.tif"], 512) == 0


def test_cache_limit_is_clamped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GDAL_CACHEMAX", raising=False)
    for wanted, megabytes in [(0, GDAL_CACHE_MB), (60 * 2**20, 60), (10**12, GDAL_CACHE_MAX_MB)]:
        with gdal_cache_limit(wanted):
            assert rasterio.env.getenv()["GDAL_CACHEMAX"] == max(GDAL_CACHE_MB, megabytes) * 2**20
