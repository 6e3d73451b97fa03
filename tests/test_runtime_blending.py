"""Tiling and blending: the grid covers the scene, the weights are a partition of unity, no seams."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_runtime_support import (
    build_engines,
    make_physical,
    random_weights,
    reference_probabilities,
    write_raster,
)

from runtime import Predictor
from runtime.blending import RowBlender
from runtime.tiling import TileGrid, blend_window, ramp_1d
from stars_edge.errors import ConfigError
from stars_edge.modalities import DEFAULT_SPECS, Pattern


@pytest.mark.parametrize(
    ("size", "tile", "overlap", "count"),
    [(100, 32, 8, 4), (32, 32, 8, 1), (20, 32, 0, 1), (64, 32, 0, 2), (65, 32, 16, 4)],
)
def test_grid_covers_the_raster(size: int, tile: int, overlap: int, count: int) -> None:
    grid = TileGrid(size, size, tile, overlap)
    assert grid.rows == count
    assert (grid.rows - 1) * grid.stride + tile >= size
    finals = [grid.final_rows(r) for r in range(grid.rows)]
    assert finals[0][0] == 0 and finals[-1][1] == size
    assert all(a[1] == b[0] for a, b in itertools.pairwise(finals))


@pytest.mark.parametrize(("tile", "overlap"), [(32, 8), (64, 32), (512, 64)])
def test_ramps_of_neighbours_sum_to_one(tile: int, overlap: int) -> None:
    ramp = ramp_1d(tile, overlap)
    stride = tile - overlap
    assert ramp.min() > 0
    np.testing.assert_allclose(ramp[stride:] + ramp[:overlap], 1.0, atol=1e-12)
    assert blend_window(tile, overlap).shape == (tile, tile)


@pytest.mark.parametrize(("tile", "overlap"), [(32, 33), (48, 8), (0, 0), (32, -1)])
def test_bad_tiling_is_refused(tile: int, overlap: int) -> None:
    with pytest.raises(ConfigError):
        TileGrid(100, 100, tile, overlap)


def test_blender_reproduces_a_smooth_field_without_seams() -> None:
    """Tiles cut from one probability field (fed as its logarithm: the blender takes logits) and blended
    give the field back everywhere, borders included."""
    height, width, tile, overlap, classes = 90, 75, 32, 12, 3
    grid = TileGrid(height, width, tile, overlap)
    yy, xx = np.mgrid[0 : grid.rows * tile, 0 : grid.padded_width]
    field = np.stack([np.sin(yy / 7.0) ** 2, np.cos(xx / 5.0) ** 2, np.full(yy.shape, 0.5)]).astype(
        np.float32
    )
    field /= field.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore"):  # sin^2 reaches 0: log 0 = -inf, probability 0
        logits = np.log(field)
    blender = RowBlender(grid, classes, probabilities="float32")
    result = np.zeros((classes, height, width), dtype=np.float32)
    for row in range(grid.rows):
        blender.start_row(row, fresh=row == 0)
        for col in range(grid.cols):
            y, x = grid.origin(row, col)
            blender.add(col, logits[:, y : y + tile, x : x + tile], np.full((tile, tile), 2, dtype=np.uint8))
        bands = blender.finish_row()
        assert bands.probabilities is not None
        result[:, bands.start : bands.start + bands.classes.shape[0]] = bands.probabilities
        assert (bands.patterns == 2).all()
    np.testing.assert_allclose(result, field[:, :height, :width], atol=2e-6)


@pytest.fixture(scope="module")
def conv_engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engines(tmp_path_factory.mktemp("engines"), random_weights(classes=5, seed=7), classes=5)


def test_tiled_equals_untiled_with_equivariant_engines(conv_engines: Path) -> None:
    inputs = make_physical((96, 80), seed=5)
    predictor = Predictor(conv_engines, backend="onnxruntime", threads=1)
    tiled, _ = predictor.predict_arrays(inputs, tile=32, overlap=8, batch=4)
    whole, patterns = predictor.predict_arrays(inputs, tile=128, overlap=0)
    np.testing.assert_array_equal(tiled, whole)
    assert (patterns == Pattern.parse("optical+sar+dsm").index).all()
    expected = reference_probabilities(
        inputs, DEFAULT_SPECS, Pattern.full(), random_weights(classes=5, seed=7)
    )
    assert (whole == expected.argmax(axis=0)).mean() > 0.999  # float rounding may flip exact ties only


def test_batching_does_not_change_results(conv_engines: Path) -> None:
    inputs = make_physical((70, 70), seed=6)
    inputs["sar"][:, :35] = np.nan
    predictor = Predictor(conv_engines, backend="onnxruntime", threads=1)
    one = predictor.predict_arrays(inputs, tile=32, overlap=8, batch=1)
    many = predictor.predict_arrays(inputs, tile=32, overlap=8, batch=5)
    np.testing.assert_array_equal(one[0], many[0])
    np.testing.assert_array_equal(one[1], many[1])


def test_argmax_channels_matches_numpy_including_ties() -> None:
    from runtime.blending import argmax_channels

    stack = np.random.default_rng(3).integers(0, 4, size=(6, 40, 50)).astype(np.float32)  # many ties
    np.testing.assert_array_equal(argmax_channels(stack), np.argmax(stack, axis=0))


def test_blender_carries_only_the_patterns_that_appeared_and_ties_go_to_the_lower_index() -> None:
    """Weight channels are added as patterns appear (a full-pattern scene blends 1, not 7), kept in pattern
    index order whatever order they came in, so exact ties resolve as they did with all 7 declared."""
    tile, overlap, classes = 32, 8, 2
    grid = TileGrid(32, 56, tile, overlap)  # one row of two tiles sharing an 8 px overlap
    blender = RowBlender(grid, classes)
    probabilities = np.full((classes, tile, tile), 0.5, dtype=np.float32)
    blender.start_row(0, fresh=True)
    blender.add(0, probabilities, np.full((tile, tile), 5, dtype=np.uint8))
    assert blender._channels == classes + 1
    blender.add(1, probabilities, np.full((tile, tile), 2, dtype=np.uint8))
    assert blender._channels == classes + 2
    assert blender._indices.tolist() == [2, 5]  # pattern 5 came first
    patterns = blender.finish_row().patterns
    assert set(np.unique(patterns[:, :20])) == {5} and set(np.unique(patterns[:, 36:])) == {2}
    with pytest.raises(ConfigError, match="not declared"):
        RowBlender(grid, classes, patterns=(Pattern.parse("sar"),)).add(
            0, probabilities, np.full((tile, tile), 1, dtype=np.uint8)
        )


def test_windows_of_one_pattern_and_shape_run_together_across_a_groups_tiles(
    conv_engines: Path, tmp_path: Path
) -> None:
    """A SAR hole at the same place in each of four 128 px tiles: its 64 px windows (one per tile, the same
    shape) run as one call of four when tiles are batched by four, with the same maps as one at a time."""
    from affine import Affine

    inputs = make_physical((128, 512), seed=8)
    for x0 in range(0, 512, 128):
        inputs["sar"][:, 20:30, x0 + 20 : x0 + 30] = np.nan
    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4000000.0)
    paths = {m: write_raster(tmp_path / f"{m}.tif", a, transform) for m, a in inputs.items()}
    predictor = Predictor(conv_engines, backend="onnxruntime", threads=1)
    maps = {}
    for batch in (1, 4):
        out = tmp_path / f"batch{batch}"
        summary = predictor.predict_scene(
            **paths,
            out=out / "c.tif",
            pattern_map=out / "p.tif",
            tile=128,
            overlap=0,
            batch=batch,
            progress=False,
        )
        maps[batch] = []
        for name in ("c.tif", "p.tif"):
            with rasterio.open(out / name) as dataset:
                maps[batch].append(dataset.read())
        shapes = summary.engine_shapes["optical+dsm"]
        assert shapes == ({"1x64x64": 4} if batch == 1 else {"4x64x64": 1}), shapes
    for one, four in zip(maps[1], maps[4], strict=True):
        np.testing.assert_array_equal(one, four)
