"""Streaming rows (issue 21): ``Predictor.predict_rows`` takes blocks of rows as a push-broom sensor hands
them over and yields finished rows as soon as they are final.

The oracle is ``predict_arrays`` on the same rows concatenated: the class and pattern maps must be the same
bytes, whatever the block size, for stride-1 and stride-4 engines with a real receptive field (zero-padded
3x3 convolutions, so tile edges and padding show), with holes, masks, clouds and mask dilation. The input
rows held at once must not grow with the scene's height, every malformed block must be refused with its
index, and a stream that ends early or runs long must raise, never hang.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from test_runtime_support import build_engines, make_physical, random_weights

from runtime import Predictor, RowBlock, RowResult
from runtime.row_stream import RowStream, move_rows
from stars_edge.errors import DataError
from stars_edge.modalities import Pattern

CLASSES = 5
SHAPE = (300, 201)  # neither a multiple of the tile nor of its stride: the last tiles hang over both edges

Scene = tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray]


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """Engines per logits stride (1, 4): 3x3 convolutions, every pattern."""
    root = tmp_path_factory.mktemp("rows")
    return {
        stride: build_engines(
            root / f"s{stride}", random_weights(CLASSES, seed=7), CLASSES, kernel=3, logits_stride=stride
        )
        for stride in (1, 4)
    }


def make_scene(shape: tuple[int, int] = SHAPE, seed: int = 3) -> Scene:
    """Physical inputs with a small optical NaN hole (sar+dsm windows inside full-engine tiles), a SAR
    ``valid == False`` band, a cloud mask, a patch no modality covers (nodata) and float64 DSM values."""
    inputs = make_physical(shape, seed=seed)
    inputs["dsm"] = inputs["dsm"].astype(np.float64)
    inputs["optical"][:, 40:58, 30:52] = np.nan
    valid = {"sar": np.ones(shape, dtype=bool)}
    valid["sar"][150:230, 100:] = False
    clouds = np.zeros(shape, dtype=bool)
    clouds[100:141, 5:60] = True
    clouds[262:, 150:] = True  # reaches the bottom edge
    for array in inputs.values():
        array[:, 200:211, 10:23] = np.nan
    valid["sar"][195:215, 5:30] = False
    return inputs, valid, clouds


def blocks_of(scene: Scene, rows: int, sparse: bool = False, stop: int | None = None) -> Iterator[RowBlock]:
    """The scene as blocks of ``rows`` rows (to ``stop``); ``sparse`` leaves out masks that mark nothing."""
    inputs, valid, clouds = scene
    height = clouds.shape[0] if stop is None else stop
    for y in range(0, height, rows):
        part = slice(y, min(y + rows, height))
        block_valid = {m: v[part] for m, v in valid.items() if not (sparse and v[part].all())}
        block_clouds = None if sparse and not clouds[part].any() else clouds[part]
        yield RowBlock({m: a[:, part] for m, a in inputs.items()}, block_valid or None, block_clouds)


def stitched(results: list[RowResult], height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """The results as whole maps, checking that they cover every row exactly once, in order."""
    starts = [r.start for r in results]
    stops = [r.start + r.classes.shape[0] for r in results]
    assert starts[0] == 0 and starts[1:] == stops[:-1] and stops[-1] == height
    for result in results:
        assert result.classes.dtype == np.uint8 and result.patterns.dtype == np.uint8
        assert result.classes.shape == result.patterns.shape == (result.classes.shape[0], width)
    return np.concatenate([r.classes for r in results]), np.concatenate([r.patterns for r in results])


def predictor_for(folder: Path, dilation: int) -> Predictor:
    return Predictor(
        folder, backend="onnxruntime", threads=1, mask_dilation={"optical": dilation} if dilation else None
    )


@pytest.mark.parametrize("dilation", [0, 8], ids=["no-dilation", "dilation8"])
@pytest.mark.parametrize("stride", [1, 4], ids=["stride1", "stride4"])
@pytest.mark.parametrize("block", [1, 7, 128, 400], ids=["1row", "7rows", "one-tile", "whole"])
def test_streaming_gives_the_bytes_of_predict_arrays(
    engines: dict[int, Path], block: int, stride: int, dilation: int
) -> None:
    scene = make_scene()
    inputs, valid, clouds = scene
    options = {"tile": 128, "overlap": 32, "batch": 2}
    with predictor_for(engines[stride], dilation) as predictor:
        want = predictor.predict_arrays(inputs, valid, clouds, **options)  # type: ignore[arg-type]
        stream = predictor.predict_rows(blocks_of(scene, block, sparse=block == 7), *SHAPE, **options)  # type: ignore[arg-type]
        got = stitched(list(stream), *SHAPE)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])
    patterns = set(np.unique(want[1]).tolist())
    assert 0 in patterns and len(patterns - {0}) >= 3  # nodata and several patterns, not a trivial scene
    assert (want[1] == Pattern.parse("sar+dsm").index).sum() > 500


@pytest.mark.parametrize("stride", [1, 4], ids=["stride1", "stride4"])
def test_many_tile_rows_with_default_tiling(engines: dict[int, Path], stride: int) -> None:
    """The manifest's tile (64), the default overlap and batch: six tile rows, blocks of 5 rows."""
    scene = make_scene()
    with predictor_for(engines[stride], 3) as predictor:
        want = predictor.predict_arrays(*scene)
        got = stitched(list(predictor.predict_rows(blocks_of(scene, 5), *SHAPE)), *SHAPE)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


def peak_rows(folder: Path, tiles_tall: int, block: int, halo: int) -> tuple[int, int]:
    """(peak input rows held, height) streaming a 64 px wide scene ``tiles_tall`` tiles of 64 px tall."""
    height = tiles_tall * 48 + 16  # tile 64, overlap 16
    scene = make_scene((max(height, 300), 201))
    inputs, valid, clouds = scene
    cut: Scene = (
        {m: a[:, :height, :64] for m, a in inputs.items()},
        {"sar": valid["sar"][:height, :64]},
        clouds[:height, :64],
    )
    with predictor_for(folder, halo) as predictor:
        stream = predictor.predict_rows(blocks_of(cut, block), height, 64, tile=64, overlap=16)
        assert isinstance(stream, RowStream)
        stitched(list(stream), height, 64)
    return stream.peak_rows, height


def test_memory_is_bounded_by_the_tile_not_the_height(engines: dict[int, Path]) -> None:
    halo, block = 8, 5
    bound = 64 + 2 * halo + block - 1  # the tile read with its dilation halo, plus a block that overshoots
    short, _ = peak_rows(engines[1], 10, block, halo)
    tall, height = peak_rows(engines[1], 40, block, halo)
    assert height == 1936
    assert tall <= bound and short <= bound
    assert tall == short  # does not grow with the height


def test_rows_arrive_before_the_stream_ends(engines: dict[int, Path]) -> None:
    """The first rows are yielded while most blocks are still to come: blocks are pulled as tiles need
    them."""
    scene = make_scene((1000, 64))
    pulled: list[int] = []

    def counted() -> Iterator[RowBlock]:
        for block in blocks_of(scene, 4):
            pulled.append(block.values["sar"].shape[1])
            yield block

    with predictor_for(engines[1], 0) as predictor:
        stream = predictor.predict_rows(counted(), 1000, 64, tile=64, overlap=16)
        first = next(stream)
        assert first.start == 0 and sum(pulled) < 500
        rest = list(stream)
    stitched([first, *rest], 1000, 64)
    assert sum(pulled) == 1000


def drain(stream: Iterator[RowResult], seconds: float = 60.0) -> tuple[list[RowResult], BaseException | None]:
    """Consume ``stream`` in a thread: (results, the exception it raised); fails if it hangs."""
    results: list[RowResult] = []
    raised: list[BaseException] = []

    def run() -> None:
        try:
            results.extend(stream)
        except BaseException as exc:
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "the stream hung"
    return results, raised[0] if raised else None


def test_a_short_stream_raises_after_the_rows_it_could_finish(engines: dict[int, Path]) -> None:
    scene = make_scene()
    with predictor_for(engines[1], 0) as predictor:
        want, _ = predictor.predict_arrays(*scene, tile=64, overlap=16)
        stream = predictor.predict_rows(blocks_of(scene, 9, stop=250), *SHAPE, tile=64, overlap=16)
        results, error = drain(stream)
    assert isinstance(error, DataError)
    assert "the stream ended after 250 of 300 rows" in str(error) and "row block 28" in str(error)
    done = sum(r.classes.shape[0] for r in results)
    assert 0 < done < 250  # what could be finished was yielded, in order, with the full scene's bytes
    np.testing.assert_array_equal(np.concatenate([r.classes for r in results]), want[:done])


def test_a_stream_shorter_than_a_tile_is_refused_before_any_result(engines: dict[int, Path]) -> None:
    scene = make_scene()
    with (
        predictor_for(engines[1], 0) as predictor,
        pytest.raises(DataError, match="the stream ended after 40 of 300 rows"),
    ):
        predictor.predict_rows(blocks_of(scene, 10, stop=40), *SHAPE, tile=64, overlap=16)


def test_a_long_stream_is_refused(engines: dict[int, Path]) -> None:
    scene = make_scene()
    with predictor_for(engines[1], 0) as predictor:
        # one block crosses the height: refused when it is pulled
        results, error = drain(predictor.predict_rows(blocks_of(scene, 7), 290, 201, tile=64, overlap=16))
        assert isinstance(error, DataError)
        assert "row block 41 brings the stream to 294 rows, more than the scene's 290" in str(error)
        assert results and results[-1].start < 290
        # every row delivered, then one more block: refused after the last rows
        results, error = drain(predictor.predict_rows(blocks_of(scene, 10), 290, 201, tile=64, overlap=16))
        assert isinstance(error, DataError) and "row block 29 brings the stream to 300 rows" in str(error)
        stitched(results, 290, 201)


BAD_BLOCKS: dict[str, tuple[Callable[[RowBlock], object], str]] = {
    "modalities": (
        lambda b: RowBlock({m: a for m, a in b.values.items() if m != "dsm"}, b.valid, b.cloud_mask),
        r"row block {i} carries optical, sar, the first block optical, sar, dsm; every block must carry",
    ),
    "width": (
        lambda b: RowBlock(dict(b.values, sar=b.values["sar"][:, :, :200]), b.valid, b.cloud_mask),
        r"row block {i}: sar values is 200 px wide but the scene is 201; hand over whole rows",
    ),
    "bands": (
        lambda b: RowBlock(
            dict(b.values, sar=np.concatenate([b.values["sar"], b.values["sar"][:1]])), b.valid, b.cloud_mask
        ),
        r"row block {i}: input array 'sar' has 3 band\(s\) but the engines expect 2",
    ),
    "valid-rows": (
        lambda b: RowBlock(b.values, {"sar": np.ones((9, 201), dtype=bool)}, b.cloud_mask),
        r"row block {i}: its arrays disagree on the number of rows \(.*sar valid 9.*\); values, valid",
    ),
    "cloud-rows": (
        lambda b: RowBlock(b.values, b.valid, np.zeros((11, 201), dtype=bool)),
        r"row block {i}: its arrays disagree on the number of rows \(.*cloud_mask 11",
    ),
    "values-rows": (
        lambda b: RowBlock(dict(b.values, dsm=b.values["dsm"][:, :8]), b.valid, b.cloud_mask),
        r"row block {i}: its arrays disagree on the number of rows \(.*dsm values 8",
    ),
    "not-a-block": (lambda b: dict(b.values), r"row block {i} is a dict; hand over runtime.RowBlock objects"),
}


@pytest.mark.parametrize("index", [0, 6], ids=["first-rows", "streaming"])
@pytest.mark.parametrize("kind", list(BAD_BLOCKS))
def test_bad_blocks_are_refused_with_their_index(engines: dict[int, Path], kind: str, index: int) -> None:
    """Block 0 is pulled by the call (refused there); block 6 while streaming (refused after the rows
    finished before it, in the thread that iterates)."""
    make, message = BAD_BLOCKS[kind]
    pattern = message.format(i=index)
    if kind == "modalities" and index == 0:  # the first block sets the modalities: the next one differs
        pattern = "row block 1 carries optical, sar, dsm, the first block optical, sar; every block must"
    blocks = (make(b) if i == index else b for i, b in enumerate(blocks_of(make_scene(), 10)))
    with predictor_for(engines[1], 0) as predictor:
        if index == 0:
            with pytest.raises(DataError, match=pattern):
                predictor.predict_rows(blocks, *SHAPE, tile=32, overlap=8)  # type: ignore[arg-type]
            return
        results, error = drain(predictor.predict_rows(blocks, *SHAPE, tile=32, overlap=8))  # type: ignore[arg-type]
    assert isinstance(error, DataError), error
    assert re.search(pattern, str(error)), str(error)
    assert results and sum(r.classes.shape[0] for r in results) <= 60  # none past the bad block's rows


def test_linear_power_sar_is_refused_before_any_engine_call(engines: dict[int, Path]) -> None:
    """The input contract on the first rows: refused like ``predict_arrays`` refuses the array (a
    ``DataError`` from the call, before the engines load), accepted with a warning when allowed."""
    inputs, valid, clouds = make_scene()
    linear = dict(inputs, sar=10 ** (inputs["sar"] / 10))
    scene: Scene = (linear, valid, clouds)
    pulled: list[int] = []

    def counted() -> Iterator[RowBlock]:
        for block in blocks_of(scene, 16):
            pulled.append(block.values["sar"].shape[1])
            yield block

    with predictor_for(engines[1], 0) as predictor:
        with pytest.raises(DataError, match="input array 'sar': sar looks like linear power"):
            predictor.predict_arrays(linear, valid, clouds, tile=64)
        with pytest.raises(
            DataError, match=r"streamed input 'sar' \(rows 0-63\): sar looks like linear power"
        ):
            predictor.predict_rows(counted(), *SHAPE, tile=64)
        assert sum(pulled) == 64 and not predictor._engines  # only the first tile's rows; no engine loaded
        with pytest.warns(UserWarning, match="looks like linear power"):
            stream = predictor.predict_rows(blocks_of(scene, 16), *SHAPE, tile=64, allow_out_of_range=True)
        got = stitched(list(stream), *SHAPE)
        with pytest.warns(UserWarning, match="looks like linear power"):
            want = predictor.predict_arrays(linear, valid, clouds, tile=64, allow_out_of_range=True)
    np.testing.assert_array_equal(got[0], want[0])


def test_only_the_first_rows_are_checked_against_the_contract(engines: dict[int, Path]) -> None:
    """Documented limit: rows after the first tile's are not sampled (a sensor's units do not change
    mid-scene); a stream that turns to linear power later is not refused."""
    inputs, valid, clouds = make_scene()
    inputs["sar"][:, 100:] = 10 ** (inputs["sar"][:, 100:] / 10)
    with predictor_for(engines[1], 0) as predictor:
        results = list(predictor.predict_rows(blocks_of((inputs, valid, clouds), 20), *SHAPE, tile=64))
    stitched(results, *SHAPE)


@pytest.mark.parametrize(("first", "held"), [(3, 10), (5, 10), (10, 10), (12, 10), (1, 7), (0, 6), (4, 0)])
def test_the_store_moves_its_held_rows_as_one_copy_would(first: int, held: int) -> None:
    """Within one array (offsets below, at and above the rows held) and into a new one, along either axis."""
    values = np.arange(3 * 24 * 5, dtype=np.float32).reshape(3, 24, 5)
    valid = np.arange(24 * 5).reshape(24, 5) % 3 == 0
    want_values, want_valid = values.copy(), valid.copy()
    want_values[:, :held] = values[:, first : first + held].copy()
    want_valid[:held] = valid[first : first + held].copy()
    fresh_values, fresh_valid = np.zeros_like(values), np.zeros_like(valid)
    move_rows(values, fresh_values, first, held, axis=1)
    move_rows(valid, fresh_valid, first, held, axis=0)
    np.testing.assert_array_equal(fresh_values[:, :held], want_values[:, :held])
    np.testing.assert_array_equal(fresh_valid[:held], want_valid[:held])
    move_rows(values, values, first, held, axis=1)
    move_rows(valid, valid, first, held, axis=0)
    np.testing.assert_array_equal(values, want_values)
    np.testing.assert_array_equal(valid, want_valid)


def test_the_store_reclaims_rows_in_place_without_a_temporary() -> None:
    """numpy copies an overlapping assignment through a temporary as large as the rows moved; the store's
    move allocates nothing of that size (tracemalloc sees numpy's buffers)."""
    import tracemalloc

    values = np.ones((3, 400, 64), dtype=np.float32)
    moved = values[:, :250].nbytes
    tracemalloc.start()
    try:
        move_rows(values, values, 100, 250, axis=1)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < moved // 10
