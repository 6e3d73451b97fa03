"""Reader threads (``ReadSettings.readers``, ``Predictor(readers=)``): tiles prepared by several threads, each
on its own handle and band of columns, come out in the order of one reader, with the same maps."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from rasterio.transform import from_origin
from test_runtime_stride4 import build as build_pooled
from test_runtime_support import make_physical, write_holed_scene

from runtime import Predictor
from runtime.array_source import ArraySource
from runtime.raster_source import RasterSource
from runtime.scheduling import Prefetcher, ReadSettings, Timer
from runtime.sources import RawTile
from runtime.tiling import Chunk, TileGrid
from stars_edge.errors import ConfigError, DataError
from stars_edge.modalities import DEFAULT_SPECS

GRID = from_origin(500000, 4000000, 10, 10)


class CountingSource(ArraySource):
    """An in-memory source whose handles record which tiles each read, on which thread; one handle can be
    made to fail at a tile."""

    def __init__(self, inputs: dict[str, np.ndarray], log: list[Any], fail_at: tuple[int, int] | None = None):
        super().__init__(inputs)
        self.inputs, self.log, self.fail_at = inputs, log, fail_at
        self.closed = False
        self.opened: list[CountingSource] = []

    def handles(self, count: int) -> list[CountingSource]:  # type: ignore[override]
        self.opened += [CountingSource(self.inputs, self.log, self.fail_at) for _ in range(count - 1)]
        return [self, *self.opened[-(count - 1) or len(self.opened) :]]

    def _record(self, y: int, x: int) -> None:
        if (y, x) == self.fail_at:
            raise DataError(f"tile at {y}, {x} is corrupt")
        self.log.append((id(self), threading.current_thread().name, y, x))

    def read(self, y: int, x: int, size: int) -> RawTile:
        self._record(y, x)
        return super().read(y, x, size)

    def read_normalised(
        self, y: int, x: int, size: int, *args: Any, **kwargs: Any
    ) -> dict[str, np.ndarray] | None:
        """The compiled path's read of a clean tile (``runtime/kernels.py``), recorded the same way; a tile
        it declines is then read (and recorded) by ``read``, so it is logged once either way."""
        ready = super().read_normalised(y, x, size, *args, **kwargs)
        if ready is not None or (y, x) == self.fail_at:
            self._record(y, x)
        return ready

    def close(self) -> None:
        self.closed = True


def _prefetch(
    source: Any, readers: int, rows: int = 3, cols: int = 5
) -> tuple[Prefetcher, list[tuple[int, int]]]:
    grid = TileGrid(height=rows * 16 + 16, width=cols * 16 + 16, tile=32, overlap=16)
    chunk = Chunk(0, 0, grid.cols - 1, 0, grid.width)
    settings = ReadSettings(DEFAULT_SPECS, 0.5, 0, readers=readers)
    order = [(r, c) for r in range(grid.rows) for c in range(grid.cols)]
    return Prefetcher(source, grid, chunk, 0, settings, Timer(), depth=4), order


def test_readers_hand_tiles_out_in_row_major_order_each_on_its_own_columns() -> None:
    inputs = make_physical((64, 96), seed=3)
    log: list[Any] = []
    source = CountingSource(inputs, log)
    prefetch, order = _prefetch(source, readers=2)
    try:
        got = [(tile.row, tile.col) for tile in (prefetch.get() for _ in order)]
    finally:
        prefetch.close()
    assert got == order
    handles = {entry[0] for entry in log}
    assert len(handles) == 2 and len({entry[1] for entry in log}) == 2  # two handles, two threads
    columns = [sorted({x for h, _, _, x in log if h == handle}) for handle in handles]
    assert not set(columns[0]) & set(columns[1])  # disjoint bands: no block decoded by both
    assert max(min(columns, key=min)) < min(max(columns, key=max))  # left band, right band
    assert not source.closed and not any(h.closed for h in source.opened)  # the source owns its handles


def test_a_reader_error_is_raised_where_its_tile_comes() -> None:
    inputs = make_physical((64, 96), seed=3)
    source = CountingSource(inputs, [], fail_at=(16, 48))  # row 1, col 3: the second reader's band
    prefetch, order = _prefetch(source, readers=2)
    taken = []
    try:
        with pytest.raises(DataError, match="corrupt"):
            for _ in order:
                tile = prefetch.get()
                taken.append((tile.row, tile.col))
    finally:
        prefetch.close()
    assert taken == order[: order.index((1, 3))]  # every tile before the corrupt one, in order


def test_a_source_with_one_handle_is_read_by_one_thread() -> None:
    class OneHandle(CountingSource):
        handles = None  # type: ignore[assignment]  # like a sensor's row stream

    log: list[Any] = []
    prefetch, order = _prefetch(OneHandle(make_physical((64, 96), seed=3), log), readers=3)
    try:
        assert [(t.row, t.col) for t in (prefetch.get() for _ in order)] == order
    finally:
        prefetch.close()
    assert len({entry[1] for entry in log}) == 1


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pooled(tmp_path_factory.mktemp("readers"), 4, kernel=3)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """GeoTIFFs with a cloud mask, a SAR gap and a DSM void."""
    return write_holed_scene(tmp_path_factory.mktemp("scene"), GRID)


@pytest.mark.parametrize("backend", ["openvino", "onnxruntime"])
def test_several_readers_give_the_maps_of_one(
    engines: Path, scene: dict[str, Path], tmp_path: Path, backend: str
) -> None:
    maps = []
    for readers in (1, 2, 3):
        out, patterns = tmp_path / f"classes{readers}.tif", tmp_path / f"patterns{readers}.tif"
        with Predictor(engines, backend=backend, readers=readers, mask_dilation={"optical": 4}) as predictor:
            predictor.predict_scene(
                **scene, out=out, pattern_map=patterns, tile=64, overlap=16, progress=False
            )
        maps.append((out.read_bytes(), patterns.read_bytes()))
    assert maps[1] == maps[0] and maps[2] == maps[0]


def test_files_get_two_readers_and_arrays_one_by_default(
    engines: Path, scene: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``run_options.DEFAULT_READERS``: a second reader paid off from files, not from arrays (measured)."""
    import runtime.writing

    seen: list[tuple[str, int]] = []

    class Recording(Prefetcher):
        def __init__(self, source: Any, *args: Any, **kwargs: Any) -> None:
            super().__init__(source, *args, **kwargs)
            seen.append((type(source).__name__, len(self._threads)))

    monkeypatch.setattr(runtime.writing, "Prefetcher", Recording)
    with Predictor(engines, backend="onnxruntime") as predictor:
        summary = predictor.predict_scene(
            **scene, out=tmp_path / "c.tif", tile=64, overlap=16, progress=False
        )
        predictor.predict_arrays(make_physical((96, 96), seed=2), tile=64, overlap=16)
    assert seen == [("RasterSource", 2), ("ArraySource", 1)]
    assert summary.reader_threads == 2 and "2 reader threads, summed" in summary.format()


def test_a_raster_source_opens_its_reader_handles_once_and_closes_them(scene: dict[str, Path]) -> None:
    paths = {m: scene[m] for m in ("optical", "sar", "dsm")}
    source = RasterSource(paths, DEFAULT_SPECS, cloud_mask=scene["cloud_mask"])
    first, other = source.handles(2)
    assert first is source and other is not source
    assert source.handles(2)[1] is other  # kept for the next chunk, not opened again
    first_tile, other_tile = source.read(100, 40, 64), other.read(100, 40, 64)
    for name in paths:
        np.testing.assert_array_equal(first_tile.values[name], other_tile.values[name])
        np.testing.assert_array_equal(first_tile.valid[name], other_tile.valid[name])
    assert other._readers["optical"] is not source._readers["optical"]  # its own GDAL handles
    source.close()
    assert not other._opened  # closed with the source


def test_one_reader_thread_opens_one_handle_for_the_contract_sample_too(
    engines: Path, scene: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``readers=1`` neither the contract's sample nor the reader opens a second set of files (the
    sample used to open the second reader's handle, which nothing then read); the default opens two where
    its readers split the columns (optical and SAR), none where they split the files (optical, SAR and DSM:
    ``runtime/modality_readers.py``)."""
    asked: list[int] = []
    handles = RasterSource.handles

    def recording(self: RasterSource, count: int) -> list[RasterSource]:
        asked.append(count)
        return handles(self, count)

    monkeypatch.setattr(RasterSource, "handles", recording)
    two = {m: scene[m] for m in ("optical", "sar", "cloud_mask")}
    for inputs, readers, most in ((scene, 1, 1), (two, 1, 1), (two, None, 2), (scene, None, 0)):
        asked.clear()
        with Predictor(engines, backend="onnxruntime", readers=readers) as predictor:
            predictor.predict_scene(
                **inputs, out=tmp_path / f"c{readers}{len(inputs)}.tif", tile=64, overlap=16, progress=False
            )
        assert max(asked, default=0) == most


def test_readers_must_be_at_least_one(engines: Path) -> None:
    with pytest.raises(ConfigError, match="--readers"):
        Predictor(engines, readers=0)


def test_the_timer_splits_a_stages_wall_time_from_its_threads_cpu_time() -> None:
    timer = Timer()
    start = timer.mark()
    time.sleep(0.1)  # waiting for a core (or a queue) costs wall time, not CPU
    busy = timer.since("wait", start)
    while time.thread_time() - busy[1] < 0.05:
        pass
    timer.since("blend", busy)
    assert timer.seconds["wait"] >= 0.1 and timer.cpu_seconds["wait"] < 0.02
    assert timer.cpu_seconds["blend"] >= 0.05 and timer.seconds["blend"] >= timer.cpu_seconds["blend"]


@pytest.fixture(scope="module")
def tiled_scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """640 px GeoTIFFs in 128 px blocks, so the contract's 9 sample windows are 9 different blocks."""
    import rasterio

    folder = tmp_path_factory.mktemp("tiled")
    paths = {}
    for name, array in make_physical((640, 640), seed=5).items():
        profile = dict(driver="GTiff", height=640, width=640, count=array.shape[0], dtype=array.dtype)
        profile.update(crs="EPSG:32631", transform=GRID, tiled=True, blockxsize=128, blockysize=128)
        with rasterio.open(folder / f"{name}.tif", "w", **profile) as dataset:
            dataset.write(array)
        paths[name] = folder / f"{name}.tif"
    return paths


def test_the_contract_sample_is_read_on_two_handles_in_the_order_of_one(
    tiled_scene: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``RasterSource.sample_values``: where the readers split the columns (optical and SAR), its windows
    are decoded on the reader threads' two handles at once, and the values come out in the windows' order,
    as one handle reading them all gives them."""
    import runtime.raster_sample

    tiled_scene = {m: tiled_scene[m] for m in ("optical", "sar")}
    source = RasterSource(tiled_scene, DEFAULT_SPECS)
    reads: list[tuple[int, str, int, int]] = []
    original = RasterSource.read

    def recording(self: RasterSource, y: int, x: int, size: int) -> RawTile:
        reads.append((id(self), threading.current_thread().name, y, x))
        time.sleep(0.01)  # the two handles' reads overlap, so a share put back out of turn would show
        return original(self, y, x, size)

    monkeypatch.setattr(RasterSource, "read", recording)
    try:
        sample = source.sample_values()
        assert len({entry[0] for entry in reads}) == 2 and len({entry[1] for entry in reads}) == 2
        assert len({(y, x) for _, _, y, x in reads}) == 9
        monkeypatch.setattr(runtime.raster_sample, "SAMPLE_READERS", 1)
        reads.clear()
        serial = source.sample_values()
        assert len({entry[1] for entry in reads}) == 1
        for name, path in tiled_scene.items():
            np.testing.assert_array_equal(sample[name][0], serial[name][0])
            assert sample[name][0].shape[1] == 9 * 128 * 128 and sample[name][1] == str(path)
    finally:
        source.close()


def test_a_failing_sample_window_is_raised_from_its_handle(
    scene: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = {m: scene[m] for m in ("optical", "sar")}  # the readers split the columns
    source = RasterSource(paths, DEFAULT_SPECS)
    other = source.handles(2)[1]

    def corrupt(y: int, x: int, size: int) -> RawTile:
        raise DataError(f"{paths['optical']}: reading rows {y}..{y + size} failed")

    monkeypatch.setattr(other, "read", corrupt)
    try:
        with pytest.raises(DataError, match="reading rows"):
            source.sample_values()
    finally:
        source.close()
