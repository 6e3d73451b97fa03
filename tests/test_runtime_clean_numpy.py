"""A clean in-memory tile straight into engine inputs with numpy (``runtime/clean_numpy.py``): the same bits
as the numpy path's copy-then-normalise, the same refusals as the compiled kernels, and the numpy path for
every tile it declines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from test_runtime_stride4 import build as build_pooled
from test_runtime_support import assert_same_tiles, clean_path_taken, make_physical

from runtime import Predictor, clean_numpy
from runtime.array_source import ArraySource
from runtime.kernels import KERNELS_ENV
from runtime.scheduling import PreparedTile, ReadSettings, Timer, prepare
from runtime.tile_source import NO_MASK, NO_SCALE
from runtime.tiling import TileGrid
from stars_edge.modalities import DEFAULT_SPECS


@pytest.fixture(autouse=True)
def _numpy_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The numpy path, whether or not numba is installed."""
    monkeypatch.setenv(KERNELS_ENV, "numpy")


class PlainSource(ArraySource):
    """An in-memory source without the clean-tile shortcut: every tile goes the numpy path."""

    def read_normalised(self, *args: Any, **kwargs: Any) -> None:
        return None


def _mean_std(name: str) -> tuple[np.ndarray, np.ndarray]:
    spec = DEFAULT_SPECS[name]
    return np.asarray(spec.mean, dtype=np.float32), np.asarray(spec.std, dtype=np.float32)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.uint16])
@pytest.mark.parametrize("scaled", [False, True])
def test_cut_normalised_gives_the_numpy_paths_bits(dtype: type, scaled: bool) -> None:
    rng = np.random.default_rng(0)
    array = (rng.random((4, 40, 50)) * 3000).astype(dtype)
    if dtype is np.float64:
        array += 1e-9  # values a float32 cast rounds
    array = array.transpose(0, 2, 1).copy().transpose(0, 2, 1)  # not C-contiguous, as views of scenes are
    spec = DEFAULT_SPECS["optical"]
    mean, std = _mean_std("optical")
    scale, offset = NO_SCALE, NO_SCALE
    if scaled:
        scale, offset = np.full(4, 1e-4, np.float32), np.full(4, -0.1, np.float32)
    out = np.empty((4, 16, 16), dtype=np.float32)
    assert clean_numpy.cut_normalised(array, NO_MASK, 7, 21, scale, offset, mean, std, out)
    want = np.array(array[:, 7:23, 21:37], dtype=np.float32)
    if scaled:
        np.multiply(want, scale[:, None, None], out=want)
        np.add(want, offset[:, None, None], out=want)
    want = spec.normalize(want)
    assert out.tobytes() == want.tobytes()


def test_cut_normalised_and_window_valid_refuse_an_invalid_pixel() -> None:
    array = np.ones((2, 20, 20), dtype=np.float32)
    mean, std = np.zeros(2, np.float32), np.ones(2, np.float32)
    out = np.empty((2, 8, 8), dtype=np.float32)
    assert clean_numpy.cut_normalised(array, NO_MASK, 4, 4, NO_SCALE, NO_SCALE, mean, std, out)
    for bad in (np.nan, np.inf, -np.inf):
        broken = array.copy()
        broken[1, 11, 5] = bad
        assert not clean_numpy.cut_normalised(broken, NO_MASK, 4, 4, NO_SCALE, NO_SCALE, mean, std, out)
        assert clean_numpy.cut_normalised(broken, NO_MASK, 12, 4, NO_SCALE, NO_SCALE, mean, std, out)
        assert not clean_numpy.window_valid(broken, NO_MASK, NO_SCALE, NO_SCALE, 11, 12, 0, 20)
        assert clean_numpy.window_valid(broken, NO_MASK, NO_SCALE, NO_SCALE, 0, 11, 0, 20)
    mask = np.ones((20, 20), dtype=bool)
    mask[4, 11] = False
    assert not clean_numpy.cut_normalised(array, mask, 4, 4, NO_SCALE, NO_SCALE, mean, std, out)
    assert clean_numpy.window_valid(array, mask, NO_SCALE, NO_SCALE, 5, 20, 0, 20)
    assert not clean_numpy.window_valid(array, mask, NO_SCALE, NO_SCALE, 0, 5, 0, 20)
    assert clean_numpy.window_valid(array, mask, NO_SCALE, NO_SCALE, 0, 0, 0, 20)  # an empty strip
    # a finite value whose normalisation overflows is declined (the numpy path then decides): time, not bits
    huge = np.full((2, 20, 20), 3e37, dtype=np.float32)
    assert clean_numpy.cut_normalised(huge, NO_MASK, 4, 4, NO_SCALE, NO_SCALE, mean, std, out)
    assert not clean_numpy.cut_normalised(huge, NO_MASK, 4, 4, NO_SCALE, NO_SCALE, mean, std / 100, out)


def _prepared(source: ArraySource, grid: TileGrid, settings: ReadSettings) -> list[PreparedTile]:
    return [
        prepare(source, grid, r, c, settings, Timer()) for r in range(grid.rows) for c in range(grid.cols)
    ]


@pytest.mark.parametrize(("dilation", "names"), [({}, "optical+sar+dsm"), ({"optical": 6}, "optical+sar")])
def test_prepare_gives_the_numpy_paths_tiles(dilation: dict[str, int], names: str) -> None:
    """Clean tiles take the shortcut, tiles with (or near) a hole or speckle the numpy path; every tile's
    inputs and codes are the bits of the numpy path alone. The hole sits so that the dilated halo of some
    tiles reaches it and of others does not, and the raster's size leaves padded edge tiles."""
    inputs = {m: a for m, a in make_physical((150, 170), seed=5).items() if m in names.split("+")}
    inputs["sar"][0, 60, 100] = np.nan  # speckle
    inputs["optical"][:, 100:112, 108:124] = np.nan  # a NaN hole only in the dilated ring of tile (3, 3)
    valid = {"optical": np.ones((150, 170), dtype=bool)}
    valid["optical"][20:30, 10:24] = False  # a hole
    grid = TileGrid(height=150, width=170, tile=32, overlap=8)
    settings = ReadSettings(DEFAULT_SPECS, 0.5, 4, dilation=dilation)
    source = ArraySource(inputs, valid)
    fast = _prepared(source, grid, settings)
    slow = _prepared(PlainSource(inputs, valid), grid, settings)
    assert_same_tiles(fast, slow)
    taken = clean_path_taken(source, grid, dilation)
    assert 0 < sum(taken) < len(taken)  # both paths ran


def test_predict_arrays_maps_are_the_numpy_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """End to end: the shortcut leaves the class and pattern maps as the numpy path alone makes them."""
    engines = build_pooled(tmp_path / "engines", 4)
    inputs = make_physical((96, 112), seed=2)
    valid = {"optical": np.ones((96, 112), dtype=bool)}
    valid["optical"][40:60, 50:90] = False
    maps = []
    for shortcut in (True, False):
        if not shortcut:
            monkeypatch.setattr(ArraySource, "read_normalised", PlainSource.read_normalised)
        with Predictor(engines, backend="onnxruntime", threads=1) as predictor:
            maps.append(predictor.predict_arrays(inputs, valid=valid, tile=32, overlap=8))
    for got, want in zip(maps[0], maps[1], strict=True):
        np.testing.assert_array_equal(got, want)
