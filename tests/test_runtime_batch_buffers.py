"""Tiles prepared into their group's batch buffer (``runtime/batch_buffers.py``): a group's tiles are one
contiguous batch the engines read in place, never a slot shared by two tiles, and the maps are those of
tiles stacked the way they were before."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from rasterio.transform import from_origin
from test_runtime_stride4 import build as build_pooled
from test_runtime_support import make_physical, write_holed_scene

from runtime import Predictor, tile_inference
from runtime.batch_buffers import GroupBuffers, as_batch, row_groups
from runtime.kernels import KERNELS_ENV
from runtime.tiling import TileGrid
from runtime.validity import normalize_owned
from stars_edge.modalities import DEFAULT_SPECS


@pytest.fixture(autouse=True)
def _numpy_kernels(monkeypatch: pytest.MonkeyPatch) -> None:
    """The numpy path, whether or not numba is installed."""
    monkeypatch.setenv(KERNELS_ENV, "numpy")


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pooled(tmp_path_factory.mktemp("batch_buffers"), 4, kernel=3)


def _filled(slots: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    for slot in slots:
        slot[...] = rng.normal(size=slot.shape)
    return slots


def test_a_rows_groups_are_consecutive_slots_of_one_buffer_per_modality() -> None:
    columns = list(range(3, 12))  # 9 columns at batch 4: groups of 3, 3, 3
    buffers = GroupBuffers(columns, batch=4, tile=8)
    slots = _filled([buffers.slot(0, col, "sar", 2) for col in columns])
    for start in (0, 3, 6):
        batch = as_batch(slots[start : start + 3])
        assert batch is not None and batch.shape == (3, 2, 8, 8)
        for position in range(3):
            assert np.shares_memory(batch[position], slots[start + position])
        np.testing.assert_array_equal(batch, np.stack(slots[start : start + 3]))
        assert as_batch(slots[start : start + 2]) is not None  # a call of part of a group, from its start
    assert as_batch(slots[2:4]) is None  # two groups
    assert as_batch([slots[1], slots[0]]) is None  # out of order
    assert as_batch([slots[0], slots[2]]) is None  # a gap
    assert as_batch([slots[0], buffers.slot(1, 4, "sar", 2)]) is None  # another row
    assert as_batch([slot[:, :4, :4] for slot in slots[:2]]) is None  # windows cut from tiles
    assert as_batch([np.zeros((2, 8, 8), np.float32)] * 2) is None  # arrays of their own
    optical = buffers.slot(0, 3, "optical", 4)
    assert optical.shape == (4, 8, 8) and not np.shares_memory(optical, slots[0])


def test_a_slot_asked_again_is_the_same_and_a_handed_out_group_is_not_handed_again() -> None:
    buffers = GroupBuffers([0, 1], batch=2, tile=4)
    first = buffers.slot(0, 0, "dsm", 1)
    again = buffers.slot(0, 0, "dsm", 1)  # a tile the clean path declined, prepared the numpy way
    assert again.__array_interface__["data"] == first.__array_interface__["data"]
    second = buffers.slot(0, 1, "dsm", 1)
    assert as_batch([first, second]) is not None
    later = buffers.slot(0, 0, "dsm", 1)  # every slot was handed out: a new buffer
    assert not np.shares_memory(later, first) and not np.shares_memory(later, second)


def test_a_recycled_buffer_serves_a_later_group_of_its_shape_and_nothing_else() -> None:
    buffers = GroupBuffers([0, 1], batch=2, tile=4)
    first = [buffers.slot(0, col, "sar", 2) for col in (0, 1)]
    buffers.recycle([first])
    again = [buffers.slot(1, col, "sar", 2) for col in (0, 1)]
    assert again[0].base is first[0].base  # the next row's group takes the buffer back
    buffers.recycle([again, again])  # named twice: taken back once
    optical = buffers.slot(2, 0, "optical", 4)  # another shape: a buffer of its own
    assert not np.shares_memory(optical, first[0])
    reused = [buffers.slot(2, col, "sar", 2) for col in (0, 1)]
    assert reused[0].base is first[0].base
    fresh = [buffers.slot(3, col, "sar", 2) for col in (0, 1)]
    assert fresh[0].base is not first[0].base  # recycled once, handed out once
    open_slot = buffers.slot(4, 0, "sar", 2)  # its group's second slot not handed out yet
    buffers.recycle([[open_slot], [np.zeros((2, 4, 4), np.float32)[None][0]]])  # and an array made elsewhere
    assert buffers.slot(5, 0, "sar", 2).base is not open_slot.base


def test_a_clean_scene_reuses_its_group_buffers_and_the_maps_are_unchanged(
    engines: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each group's buffers go back to ``GroupBuffers`` once it is blended: far fewer buffers than groups,
    and the maps of a run that never reuses one."""
    inputs = make_physical((160, 232), seed=4)
    made: list[int] = []
    original = np.empty

    def counting_empty(shape: Any, *args: Any, **kwargs: Any) -> np.ndarray:
        array = original(shape, *args, **kwargs)
        if isinstance(shape, tuple) and len(shape) == 4:
            made.append(shape[0])
        return array

    monkeypatch.setattr("runtime.batch_buffers.np.empty", counting_empty)
    maps = []
    for recycled in (True, False):
        if not recycled:
            monkeypatch.setattr(GroupBuffers, "recycle", lambda self, groups: None)
        made.clear()
        with Predictor(engines, backend="onnxruntime", threads=1) as predictor:
            maps.append(predictor.predict_arrays(inputs, tile=32, overlap=8, batch=4))
        if recycled:
            reused_buffers = len(made)
        else:
            fresh_buffers = len(made)
    grid = TileGrid(160, 232, 32, 8)
    assert fresh_buffers >= len(inputs) * grid.rows * len(row_groups(grid.cols, 4))  # one per group
    assert reused_buffers < fresh_buffers // 2
    for got, want in zip(maps[0], maps[1], strict=True):
        np.testing.assert_array_equal(got, want)


def test_normalising_into_a_slot_gives_the_bits_of_normalising_in_place() -> None:
    spec = DEFAULT_SPECS["optical"]
    data = make_physical((20, 20), seed=1)["optical"][:, 2:18, 2:18]  # a crop: not contiguous
    in_place = normalize_owned(spec, data.copy())
    slot = np.full((spec.bands, 16, 16), np.nan, dtype=np.float32)
    into = normalize_owned(spec, data.copy(), slot)
    assert into is slot
    np.testing.assert_array_equal(into, in_place)


def test_a_clean_scene_reaches_the_engines_in_its_group_buffers(
    engines: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every call of several whole tiles on a clean scene is a slice of one buffer (no stacking copy)."""
    read_in_place = _spy(monkeypatch)
    with Predictor(engines, backend="onnxruntime", threads=1) as predictor:
        predictor.predict_arrays(make_physical((96, 232), seed=3), tile=32, overlap=8, batch=4)
    assert read_in_place and all(read_in_place)


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """Per call of several tiles or windows, whether its inputs were read in place."""
    read_in_place: list[bool] = []

    def spy(arrays: list[np.ndarray]) -> np.ndarray | None:
        batch = as_batch(arrays)
        read_in_place.append(batch is not None)
        return batch

    monkeypatch.setattr(tile_inference, "as_batch", spy)
    return read_in_place


def _without_buffers(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiles prepared into arrays of their own and stacked, as before the buffers."""
    monkeypatch.setattr(GroupBuffers, "slots", lambda self, row, col, bands: {})


def test_the_maps_are_those_of_tiles_stacked_from_arrays(
    engines: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scene with holes (tiles on the clean path and the numpy path, windows, whole second patterns)."""
    inputs = make_physical((96, 232), seed=5)
    inputs["sar"][:, :, 170:] = np.nan
    inputs["dsm"][:, 30:50, 20:80] = np.nan
    valid = {"optical": np.ones((96, 232), dtype=bool)}
    valid["optical"][40:70, 90:150] = False
    maps = []
    for buffered in (True, False):
        if not buffered:
            _without_buffers(monkeypatch)
        with Predictor(engines, backend="onnxruntime", threads=1) as predictor:
            maps.append(predictor.predict_arrays(inputs, valid=valid, tile=32, overlap=8, batch=4))
    for got, want in zip(maps[0], maps[1], strict=True):
        np.testing.assert_array_equal(got, want)
    assert len(np.unique(maps[0][1])) > 2  # several patterns ran


def test_the_maps_are_those_of_tiles_stacked_from_files(
    engines: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GeoTIFFs with a cloud mask, a SAR gap and a DSM void, read by two readers (the numpy path)."""
    paths = write_holed_scene(tmp_path, from_origin(500000, 4000000, 10, 10))
    read_in_place = _spy(monkeypatch)
    maps = []
    for buffered in (True, False):
        if not buffered:
            _without_buffers(monkeypatch)
        out, patterns = tmp_path / f"classes_{buffered}.tif", tmp_path / f"patterns_{buffered}.tif"
        with Predictor(engines, backend="onnxruntime", threads=1) as predictor:
            predictor.predict_scene(
                **paths, out=out, pattern_map=patterns, tile=64, overlap=16, batch=4, progress=False
            )
        with rasterio.open(out) as classes, rasterio.open(patterns) as codes:
            maps.append((classes.read(), codes.read()))
        if buffered:  # the numpy path prepared into the buffers too
            assert any(read_in_place)
    for got, want in zip(maps[0], maps[1], strict=True):
        np.testing.assert_array_equal(got, want)
