"""Engines with a real spatial receptive field: fill values never reach a valid pixel's class, sub-pattern
engines run on windows, speckle costs nothing, and the carries, the taper and the column chunks matter.

The engines here are k x k convolutions with zero padding (``build_engines(kernel=5)``: radius 2), so a
pixel's output depends on its neighbours, tile edges show, and fill values leak unless the runtime keeps
them out of the receptive field.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from test_runtime_support import build_engines, make_physical, random_weights, write_raster

import runtime.tile_inference
from runtime import Predictor
from runtime.batch_buffers import row_groups
from runtime.tile_inference import engine_calls
from runtime.tiling import TileGrid
from runtime.validity import box_any, speckle_mask
from stars_edge.modalities import Pattern

TRANSFORM = Affine(0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0)
KERNEL, RADIUS = 5, 2


@pytest.fixture(scope="module")
def wide_engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engines(
        tmp_path_factory.mktemp("engines"),
        random_weights(classes=4, seed=11),
        classes=4,
        kernel=KERNEL,
        context_margin=RADIUS,
    )


@pytest.fixture(scope="module")
def leaky_engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same engines with a manifest that (wrongly) says fills reach nowhere."""
    return build_engines(
        tmp_path_factory.mktemp("leaky"), random_weights(classes=4, seed=11), classes=4, kernel=KERNEL,
        context_margin=0,
    )  # fmt: skip


def _scene(folder: Path, shape: tuple[int, int], seed: int = 1) -> dict[str, np.ndarray]:
    values = make_physical(shape, seed=seed)
    values["sar"][:, 40:70, 30:80] = np.nan  # a SAR gap
    values["sar"][:, 100:103, 10:14] = np.nan  # a small hole (3x4, not speckle)
    values["optical"][:, 90:130, 60:110] = np.nan  # a cloud-like optical gap
    return values


def _run_scene(
    engines: Path, folder: Path, values: dict[str, np.ndarray], fill: float = 0.0, **kwargs: object
) -> tuple[dict[str, np.ndarray], object]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = {m: write_raster(folder / f"{m}.tif", v, TRANSFORM) for m, v in values.items()}
    predictor = Predictor(engines, backend="onnxruntime", threads=1)
    predictor.fill_value = fill
    options: dict[str, object] = {"tile": 64, "overlap": 16, **kwargs}
    summary = predictor.predict_scene(
        **paths,  # type: ignore[arg-type]
        out=folder / "pred.tif",
        pattern_map=folder / "pat.tif",
        probabilities=folder / "prob.tif",
        probabilities_dtype="float32",
        progress=False,
        **options,  # type: ignore[arg-type]
    )
    arrays = {}
    for name in ("pred", "pat", "prob"):
        with rasterio.open(folder / f"{name}.tif") as dataset:
            arrays[name] = dataset.read()
    return arrays, summary


def test_values_put_into_invalid_pixels_change_no_output_pixel(
    wide_engines: Path, leaky_engines: Path, tmp_path: Path
) -> None:
    values = _scene(tmp_path, (150, 140))
    base, _ = _run_scene(wide_engines, tmp_path / "a", values, fill=0.0)
    other, _ = _run_scene(wide_engines, tmp_path / "b", values, fill=9.0)
    for name in base:
        np.testing.assert_array_equal(base[name], other[name], err_msg=name)
    # the pixels next to the gaps do not use the missing modality, the ones further away do
    sar_gap = np.zeros((150, 140), dtype=bool)
    sar_gap[40:70, 30:80] = True
    near = box_any(sar_gap, RADIUS) & ~sar_gap
    assert not np.isin(
        base["pat"][0][near], [Pattern.parse(p).index for p in ("optical+sar+dsm", "sar+dsm")]
    ).any()
    # the same engines with a zero margin in the manifest do leak: the test above can fail
    leak_a, _ = _run_scene(leaky_engines, tmp_path / "c", values, fill=0.0)
    leak_b, _ = _run_scene(leaky_engines, tmp_path / "d", values, fill=9.0)
    assert not np.array_equal(leak_a["prob"], leak_b["prob"])


def test_sub_pattern_engines_run_on_windows_with_the_same_result(
    wide_engines: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = make_physical((256, 256), seed=4)
    values["optical"][:, 10:30, 20:44] = np.nan  # one small cloud inside the first tile
    windowed, summary = _run_scene(wide_engines, tmp_path / "w", values, tile=256, overlap=0)
    assert summary.engine_runs == {"optical+sar+dsm": 1, "sar+dsm": 1}  # type: ignore[attr-defined]
    # the window: the cloud's 32-px cells grown by the margin, on the 32-px grid: 64 x 64, not 256 x 256
    assert summary.engine_pixels["sar+dsm"] == 64 * 64  # type: ignore[attr-defined]
    # the call shapes fed to the engines: the whole tile, and the window
    assert summary.engine_shapes == {  # type: ignore[attr-defined]
        "optical+sar+dsm": {"1x256x256": 1},
        "sar+dsm": {"1x64x64": 1},
    }
    monkeypatch.setattr(runtime.tile_inference, "WINDOW_AREA_LIMIT", -1.0)  # every pattern on the whole tile
    whole, whole_summary = _run_scene(wide_engines, tmp_path / "t", values, tile=256, overlap=0)
    assert whole_summary.engine_pixels["sar+dsm"] == 256 * 256  # type: ignore[attr-defined]
    np.testing.assert_array_equal(windowed["pred"], whole["pred"])
    np.testing.assert_array_equal(windowed["pat"], whole["pat"])
    np.testing.assert_allclose(windowed["prob"], whole["prob"], atol=1e-5)


def test_windows_take_a_few_shapes_and_keep_their_pixels_and_margin() -> None:
    """Windows are rounded up to ``WINDOW_SIDES`` per axis (a few engine call shapes instead of one per
    cloud), stay inside the tile, never overlap, and still hold every masked pixel with its margin."""
    rng = np.random.default_rng(3)
    size, margin = 512, 16
    shapes: set[tuple[int, int]] = set()
    for _ in range(40):
        mask = np.zeros((size, size), dtype=bool)
        for _ in range(int(rng.integers(1, 5))):
            y, x = rng.integers(0, size - 8, 2)
            h, w = rng.integers(3, 90, 2)
            mask[y : y + h, x : x + w] = True
        boxes = runtime.tile_inference.pattern_windows(mask, margin)
        covered = np.zeros_like(mask)
        for y0, y1, x0, x1 in boxes:
            assert 0 <= y0 < y1 <= size and 0 <= x0 < x1 <= size
            assert {y1 - y0, x1 - x0} <= {*runtime.tile_inference.WINDOW_SIDES, size}
            assert not covered[y0:y1, x0:x1].any()  # no two windows overlap
            covered[y0:y1, x0:x1] = True
            shapes.add((y1 - y0, x1 - x0))
        grown = box_any(mask, margin)  # every pixel within the margin of a masked one (inside the tile)
        assert covered[grown].all()
    assert len(shapes) <= 12


def test_the_summary_counts_engine_calls_per_input_shape(wide_engines: Path, tmp_path: Path) -> None:
    """``RunSummary.engine_shapes``: calls per ``BxHxW`` of every whole-tile batch and every window, which
    add up to ``engine_runs`` (a batch of n tiles is n runs) and ``engine_pixels`` per pattern."""
    values = make_physical((256, 384), seed=5)
    values["optical"][:, 10:30, 20:44] = np.nan  # a small cloud: a window of sar+dsm
    values["optical"][:, 140:256, 130:384] = np.nan  # a large one: sar+dsm on whole tiles
    values["sar"][:, 70:80, 300:310] = np.nan  # a small SAR gap: a window of optical+dsm
    _, summary = _run_scene(wide_engines, tmp_path, values, tile=128, overlap=16, batch=2)
    shapes, runs, pixels = summary.engine_shapes, summary.engine_runs, summary.engine_pixels  # type: ignore[attr-defined]
    assert set(shapes) == set(runs)
    seen: set[tuple[int, ...]] = set()
    for name, calls in shapes.items():
        parsed = {tuple(int(v) for v in key.split("x")): count for key, count in calls.items()}
        assert all(count > 0 for count in parsed.values())
        assert sum(b * count for (b, _, _), count in parsed.items()) == runs[name]
        assert sum(b * h * w * count for (b, h, w), count in parsed.items()) == pixels[name]
        seen |= set(parsed)
    # whole-tile batches of 2, lone whole tiles, and windows smaller than a tile, all recorded
    assert {(2, 128, 128), (1, 128, 128)} <= seen and any(h * w < 128 * 128 for _, h, w in seen)
    assert summary.to_dict()["engine_shapes"] == shapes  # type: ignore[attr-defined]


def test_a_remainder_of_windows_runs_one_at_a_time(wide_engines: Path, tmp_path: Path) -> None:
    """Three small clouds at the same place in three tiles of one row give three windows of one shape: with
    batch 4 they run as three calls of one, not one call of three, so each window shape reaches the engine
    at two batch sizes at most (a dynamic-shape engine's first call at a new shape is slow), and the maps
    stay those of batch 1."""
    values = make_physical((128, 320), seed=9)
    grid = TileGrid(128, 320, 128, 16)
    assert grid.rows == 1 and grid.cols >= 3
    for col in range(3):
        y, x = grid.origin(0, col)
        values["optical"][:, y + 40 : y + 50, x + 50 : x + 60] = np.nan
    four, summary = _run_scene(wide_engines, tmp_path / "four", values, tile=128, overlap=16, batch=4)
    one, _ = _run_scene(wide_engines, tmp_path / "one", values, tile=128, overlap=16, batch=1)
    shapes: dict[str, dict[str, int]] = summary.engine_shapes  # type: ignore[attr-defined]
    windows = shapes["sar+dsm"]
    assert {int(key.split("x")[0]) for key in windows} == {1} and sum(windows.values()) >= 3
    # the row's whole tiles: one call per group of the row (``row_groups``), no lone remainder
    whole = {int(key.split("x")[0]) for key in shapes["optical+sar+dsm"]}
    assert whole == set(row_groups(grid.cols, 4))
    for name in ("pred", "pat"):
        np.testing.assert_array_equal(four[name], one[name])


def test_a_row_goes_to_the_engines_in_groups_as_equal_as_the_batch_allows() -> None:
    """9 columns at batch 4: 3, 3, 3 (one batch size, no lone tile) rather than 4, 4, 1."""
    assert row_groups(9, 4) == [3, 3, 3]
    assert row_groups(10, 4) == [4, 3, 3]
    assert row_groups(8, 4) == [4, 4]
    assert row_groups(5, 4) == [3, 2]
    assert row_groups(3, 1) == [1, 1, 1]
    assert row_groups(1, 4) == [1]
    assert row_groups(0, 4) == []
    for columns in range(1, 40):
        for batch in range(1, 9):
            groups = row_groups(columns, batch)
            assert sum(groups) == columns and max(groups) <= batch and max(groups) - min(groups) <= 1
            assert len(groups) == -(-columns // batch)


def test_engine_calls_are_full_batches_then_one_at_a_time() -> None:
    assert [list(c) for c in engine_calls(list(range(10)), 4)] == [[0, 1, 2, 3], [4, 5, 6, 7], [8], [9]]
    assert [list(c) for c in engine_calls([5, 6, 7], 4)] == [[5], [6], [7]]
    assert [list(c) for c in engine_calls([5, 6], 1)] == [[5], [6]]
    assert list(engine_calls([], 4)) == []


def test_scattered_invalid_pixels_cost_no_extra_engine_work(wide_engines: Path, tmp_path: Path) -> None:
    shape = (512, 512)
    clean = make_physical(shape, seed=8)
    _, clean_summary = _run_scene(wide_engines, tmp_path / "clean", clean, tile=128, overlap=16)
    speckled = {m: v.copy() for m, v in clean.items()}
    rng = np.random.default_rng(0)
    flat = rng.choice(shape[0] * shape[1], size=shape[0] * shape[1] // 1000, replace=False)  # 0.1 %
    speckled["sar"][:, flat // shape[1], flat % shape[1]] = np.nan
    outputs, summary = _run_scene(wide_engines, tmp_path / "speckle", speckled, tile=128, overlap=16)
    clean_pixels = sum(clean_summary.engine_pixels.values())  # type: ignore[attr-defined]
    pixels = sum(summary.engine_pixels.values())  # type: ignore[attr-defined]
    runs = sum(summary.engine_runs.values())  # type: ignore[attr-defined]
    assert runs <= 1.2 * sum(clean_summary.engine_runs.values())  # type: ignore[attr-defined]
    assert pixels <= 1.2 * clean_pixels
    # every speckle pixel was filled from its neighbours and predicted with all modalities
    assert (outputs["pat"] == Pattern.full().index).all()


def test_speckle_is_what_a_3x3_square_cannot_cover() -> None:
    valid = np.ones((12, 12), dtype=bool)
    valid[2, 2] = False  # single pixel
    valid[5, 5:7] = False  # two pixels
    valid[8:11, 8:11] = False  # a 3x3 hole: a region, not speckle
    inside = np.ones_like(valid)
    speckle = speckle_mask(valid, inside)
    assert speckle[2, 2] and speckle[5, 5] and speckle[5, 6]
    assert not speckle[8:11, 8:11].any()
    assert speckle.sum() == 3


def _tiled_and_untiled(engines: Path, folder: Path) -> tuple[np.ndarray, np.ndarray]:
    values = make_physical((150, 130), seed=5)
    tiled, _ = _run_scene(engines, folder / "tiled", values, tile=64, overlap=16)
    whole, _ = _run_scene(engines, folder / "whole", values, tile=160, overlap=0)
    return tiled["prob"], whole["prob"]


def test_blending_hides_tile_edges_of_a_receptive_field_engine(wide_engines: Path, tmp_path: Path) -> None:
    """Tile edges see zero padding; the taper gives them weight ~0.002, the carries bring the neighbour's
    interior. Measured: 0.005 at most; without the vertical carry 0.31, the column carry 0.37, the taper
    0.23."""
    tiled, whole = _tiled_and_untiled(wide_engines, tmp_path)
    error = np.abs(tiled - whole)
    assert error.max() < 0.02, error.max()


@pytest.mark.parametrize("chunk_width", [64, 96, 128])
def test_column_chunks_give_the_identical_result(wide_engines: Path, chunk_width: int) -> None:
    values = make_physical((100, 300), seed=6)
    values["sar"][:, 20:50, 90:200] = np.nan
    predictor = Predictor(wide_engines, backend="onnxruntime", threads=1)
    whole = predictor.predict_arrays(values, tile=64, overlap=16)
    chunked = predictor.predict_arrays(values, tile=64, overlap=16, chunk_width=chunk_width)
    np.testing.assert_array_equal(chunked[0], whole[0])
    np.testing.assert_array_equal(chunked[1], whole[1])


def test_chunked_scene_files_are_identical(wide_engines: Path, tmp_path: Path) -> None:
    values = make_physical((120, 700), seed=7)
    values["optical"][:, 30:90, 200:400] = np.nan
    chunked, summary = _run_scene(wide_engines, tmp_path / "c", values, chunk_width=256)
    whole, _ = _run_scene(wide_engines, tmp_path / "w", values, chunk_width=None)
    assert summary.chunks == 3  # type: ignore[attr-defined]
    for name in whole:
        np.testing.assert_array_equal(chunked[name], whole[name], err_msg=name)


@pytest.mark.parametrize(("kernel", "expected"), [(1, 0), (3, 1), (5, 2)])
def test_context_margin_measured_at_export_is_the_receptive_field(
    tmp_path: Path, kernel: int, expected: int
) -> None:
    from export.context_margin import measure_manifest_margin
    from stars_edge.manifest import load_manifest

    folder = build_engines(
        tmp_path / "e", random_weights(classes=3, seed=2), classes=3, kernel=kernel, context_margin=None
    )
    manifest = load_manifest(folder)
    assert manifest.context_margin is None  # manifests from before the measurement still load
    assert Predictor(folder, backend="onnxruntime").context_margin == 32  # and get the safe default
    assert measure_manifest_margin(manifest, size=64) == expected
