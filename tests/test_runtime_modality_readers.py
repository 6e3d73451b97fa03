"""Two reader threads split by modality (``runtime/modality_readers.py``): when the split is taken, that each
reader reads only its own files, and that the tiles and maps are those of one reader."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from rasterio.transform import from_origin
from test_runtime_stride4 import build as build_pooled
from test_runtime_support import (
    assert_same_tiles,
    make_physical,
    use_kernels,
    write_holed_scene,
    write_raster,
)

from runtime import Predictor
from runtime.array_source import ArraySource
from runtime.kernels import KERNELS_ENV
from runtime.modality_readers import modality_groups
from runtime.raster_source import RasterSource
from runtime.scheduling import Prefetcher, ReadSettings, Timer
from runtime.tiling import Chunk, TileGrid
from stars_edge.errors import DataError
from stars_edge.modalities import DEFAULT_SPECS

GRID = from_origin(500000, 4000000, 10, 10)


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_pooled(tmp_path_factory.mktemp("modality_readers"), 4, kernel=3)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """GeoTIFFs with a cloud mask, a SAR gap and a DSM void."""
    return write_holed_scene(tmp_path_factory.mktemp("modality_scene"), GRID)


def _source(scene: dict[str, Path], names: tuple[str, ...], cls: type = RasterSource) -> Any:
    paths = {m: scene[m] for m in names}
    clouds = scene["cloud_mask"] if "optical" in names else None
    return cls(paths, DEFAULT_SPECS, cloud_mask=clouds)


def test_the_split_is_optical_against_sar_and_dsm_and_only_where_even(scene: dict[str, Path]) -> None:
    every = _source(scene, ("optical", "sar", "dsm"))
    try:
        assert modality_groups(every, 2) == [("optical",), ("sar", "dsm")]
        assert modality_groups(every, 1) is None and modality_groups(every, 3) is None
    finally:
        every.close()
    for names in (("optical", "sar"), ("optical", "dsm"), ("sar", "dsm"), ("optical",)):
        source = _source(scene, names)
        try:
            assert modality_groups(source, 2) is None, names  # 4:2, 4:1, 2:1: the column split
        finally:
            source.close()
    arrays = ArraySource(make_physical((64, 64), seed=1))
    assert modality_groups(arrays, 2) is None  # cannot read its modalities apart: one reader from arrays


class Recording(RasterSource):
    """A raster source that logs which thread read which modalities of which tile."""

    log: ClassVar[list[tuple[str, tuple[str, ...], int, int]]] = []

    def read(self, y: int, x: int, size: int, modalities: Any = None) -> Any:
        names = tuple(self.modalities if modalities is None else modalities)
        self.log.append((threading.current_thread().name, names, y, x))
        return super().read(y, x, size, modalities)


def test_each_modality_reader_reads_its_own_files_and_gives_one_readers_tiles(
    scene: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The numpy path (every tile through ``read``, which the source logs); the compiled path's reads are
    ``test_clean_and_numpy_parts_together_give_the_maps_of_one_reader``'s."""
    monkeypatch.setenv(KERNELS_ENV, "numpy")
    grid = TileGrid(height=300, width=260, tile=64, overlap=16)
    chunk = Chunk(0, 0, grid.cols - 1, 0, grid.width)
    tiles = {}
    for readers in (1, 2):
        source = _source(scene, ("optical", "sar", "dsm"), Recording)
        Recording.log = []
        settings = ReadSettings(DEFAULT_SPECS, 0.5, 0, dilation={"optical": 4}, readers=readers)
        prefetch = Prefetcher(source, grid, chunk, 0, settings, Timer(), depth=4)
        try:
            tiles[readers] = [prefetch.get() for _ in range(grid.rows * grid.cols)]
        finally:
            prefetch.close()
            source.close()
        if readers == 2:
            by_thread: dict[str, set[tuple[str, ...]]] = {}
            for thread, names, _, _ in Recording.log:
                by_thread.setdefault(thread, set()).add(names)
            assert sorted(map(sorted, by_thread.values())) == [[("optical",)], [("sar", "dsm")]]
            assert len(Recording.log) == 2 * grid.rows * grid.cols  # each tile once per reader
    assert_same_tiles(tiles[2], tiles[1])


@pytest.mark.parametrize("build", ["c", "numba"])
def test_clean_and_numpy_parts_together_give_the_maps_of_one_reader(
    build: str,
    engines: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the compiled kernels a clean modality part takes their path while the other part of the same
    tile has a hole: combined, the maps are still one reader's."""
    use_kernels(monkeypatch, build)
    inputs = make_physical((200, 200), seed=4)
    inputs["sar"][:, 60:140, 100:200] = np.nan  # a SAR gap: optical stays clean on those tiles
    paths = {m: write_raster(tmp_path / f"{m}.tif", a, GRID) for m, a in inputs.items()}
    maps = []
    for readers in (1, 2):
        out, patterns = tmp_path / f"c{readers}.tif", tmp_path / f"p{readers}.tif"
        with Predictor(engines, backend="onnxruntime", readers=readers) as predictor:
            predictor.predict_scene(
                **paths, out=out, pattern_map=patterns, tile=64, overlap=16, progress=False
            )
        maps.append((out.read_bytes(), patterns.read_bytes()))
    assert maps[0] == maps[1]


def test_the_contract_sample_is_read_by_file_on_two_threads_as_one_thread_reads_it(
    scene: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the readers split the files, so does the contract's sample: each of two tasks reads its own
    files' windows on this source's handles (no second set opened), with one thread's values; a window that
    fails to read is raised."""
    import runtime.raster_sample

    source = _source(scene, ("optical", "sar", "dsm"), Recording)
    Recording.log = []
    try:
        sample = source.sample_values(2)
        # each read is one file group's (the pool may run both groups on one thread when the first is quick)
        assert {names for _, names, _, _ in Recording.log} == {("optical",), ("sar", "dsm")}
        assert not source._siblings
        monkeypatch.setattr(runtime.raster_sample, "SAMPLE_READERS", 1)
        Recording.log = []
        serial = source.sample_values(2)
        assert {names for _, names, _, _ in Recording.log} == {("optical", "sar", "dsm")}
        for name in ("optical", "sar", "dsm"):
            assert sample[name][0].tobytes() == serial[name][0].tobytes()
            assert sample[name][1] == serial[name][1]
        monkeypatch.setattr(runtime.raster_sample, "SAMPLE_READERS", 2)

        def corrupt(self: RasterSource, y: int, x: int, size: int, modalities: Any = None) -> Any:
            if modalities is not None and "sar" in modalities:
                raise DataError(f"{scene['sar']}: reading rows {y}..{y + size} failed")
            return RasterSource.read(self, y, x, size, modalities)

        monkeypatch.setattr(Recording, "read", corrupt)
        with pytest.raises(DataError, match="reading rows"):
            source.sample_values(2)
    finally:
        source.close()


@pytest.mark.parametrize("failing", ["optical", "sar"])
def test_a_modality_readers_error_is_raised_where_its_tile_comes(
    scene: dict[str, Path], failing: str
) -> None:
    """Either modality reader's error reaches the main thread at its tile, after every tile before it, in
    order."""
    grid = TileGrid(height=300, width=260, tile=64, overlap=16)
    chunk = Chunk(0, 0, grid.cols - 1, 0, grid.width)
    bad = grid.origin(2, 1)

    class Failing(RasterSource):
        """Fails at ``bad`` on both read paths: a clean tile goes through the compiled ``read_normalised``."""

        def read(self, y: int, x: int, size: int, modalities: Any = None) -> Any:
            if (y, x) == bad and modalities is not None and failing in modalities:
                raise DataError(f"{failing}: reading rows {y}..{y + size} failed")
            return super().read(y, x, size, modalities)

        def read_normalised(self, y: int, x: int, size: int, *args: Any, **kwargs: Any) -> Any:
            modalities = kwargs.get("modalities", args[2] if len(args) > 2 else None)
            if (y, x) == bad and modalities is not None and failing in modalities:
                raise DataError(f"{failing}: reading rows {y}..{y + size} failed")
            return super().read_normalised(y, x, size, *args, **kwargs)

    source = _source(scene, ("optical", "sar", "dsm"), Failing)
    prefetch = Prefetcher(source, grid, chunk, 0, ReadSettings(DEFAULT_SPECS, 0.5, 0, readers=2), Timer(), 4)
    taken = []
    try:
        with pytest.raises(DataError, match=f"{failing}: reading rows"):
            while True:
                tile = prefetch.get()
                taken.append((tile.row, tile.col))
    finally:
        prefetch.close()
        source.close()
    order = [(r, c) for r in range(grid.rows) for c in range(grid.cols)]
    assert taken == order[: order.index((2, 1))]
