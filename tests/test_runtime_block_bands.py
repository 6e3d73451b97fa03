"""Block bands handed to the writer thread (``runtime/block_bands.py``): the main thread hands a second band
over while the first is still being written, waits only when every buffer is taken, and no band's rows are
overwritten before the writer has written them."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest

from runtime.blending import RowBands
from runtime.block_bands import WRITE_BUFFERS, BlockWriter
from runtime.tiling import Chunk

BLOCK, WIDTH = 8, 16


class HeldSink:
    """A sink whose writes wait until the test releases them; it keeps a copy of each band as written."""

    broken = False

    def __init__(self) -> None:
        self.release = threading.Event()
        self.started = threading.Event()
        self.written: list[tuple[int, np.ndarray]] = []

    def write(self, row: int, col: int, bands: dict[str, Any]) -> None:
        self.started.set()
        assert self.release.wait(10), "the test never released the writes"
        self.written.append((row, bands["classes"][0].copy()))


def _band(start: int, value: int) -> RowBands:
    rows = np.full((BLOCK, WIDTH), value, dtype=np.uint8)
    return RowBands(start, rows, rows.copy(), None)


def _add_on_a_thread(writer: BlockWriter, band: RowBands) -> threading.Thread:
    thread = threading.Thread(target=writer.add, args=(band,), daemon=True)
    thread.start()
    thread.join(0.5)
    return thread


def test_a_second_band_is_handed_over_while_the_first_is_written_and_none_is_overwritten() -> None:
    assert WRITE_BUFFERS == 3
    sink = HeldSink()
    with ThreadPoolExecutor(max_workers=1) as background:
        writer = BlockWriter(sink, Chunk(0, 0, 0, 0, WIDTH), 5 * BLOCK, BLOCK, 0, None, background)  # type: ignore[arg-type]
        writer.add(_band(0, 1))
        assert sink.started.wait(5)  # band 1 is being written, and held there
        second = _add_on_a_thread(writer, _band(BLOCK, 2))
        assert not second.is_alive(), "handing over a second band waited for the first to be written"
        third = _add_on_a_thread(writer, _band(2 * BLOCK, 3))
        assert third.is_alive(), "a third band must wait: every other buffer is still handed over"
        sink.release.set()
        third.join(5)
        assert not third.is_alive()
        writer.add(_band(3 * BLOCK, 4))
        writer.add(_band(4 * BLOCK, 5))
        writer.drain()
    assert [row for row, _ in sink.written] == [0, BLOCK, 2 * BLOCK, 3 * BLOCK, 4 * BLOCK]
    for index, (_, rows) in enumerate(sink.written):
        np.testing.assert_array_equal(rows, index + 1)  # each band's own rows: no buffer refilled too soon
    assert writer.counts.sum() == 5 * BLOCK * WIDTH


def test_a_failed_band_is_raised_when_its_buffer_is_needed_again() -> None:
    class FailingSink(HeldSink):
        def write(self, row: int, col: int, bands: dict[str, Any]) -> None:
            if row == 0:
                raise OSError("No space left on device")
            super().write(row, col, bands)

    sink = FailingSink()
    sink.release.set()
    with ThreadPoolExecutor(max_workers=1) as background:
        writer = BlockWriter(sink, Chunk(0, 0, 0, 0, WIDTH), 5 * BLOCK, BLOCK, 0, None, background)  # type: ignore[arg-type]
        with pytest.raises(OSError, match="No space"):
            for band in range(5):
                writer.add(_band(band * BLOCK, band + 1))
        writer.settle()
    assert sink.broken  # the writer thread marked it: nothing queued behind the failure was written
    assert sink.written == []


@pytest.mark.parametrize("codes", [(3,), (0, 7), (1, 2, 5), (0, 1, 2, 3, 4, 5, 6, 7)])
def test_code_counts_are_bincounts(codes: tuple[int, ...]) -> None:
    """The pattern counts of a band or a tile: ``np.bincount``'s, from one code to all eight, on a band and
    on a view of part of it; nothing counted for no pixels."""
    from runtime.summary import code_counts

    rng = np.random.default_rng(len(codes))
    band = rng.choice(np.array(codes, dtype=np.uint8), size=(2 * BLOCK, WIDTH + 3))
    for values in (band, band[:BLOCK, 1:-2]):
        want = np.bincount(values.ravel(), minlength=8)
        got = code_counts(values)
        np.testing.assert_array_equal(got, want)
        assert got.dtype == want.dtype
    np.testing.assert_array_equal(code_counts(band[:0]), np.zeros(8, dtype=np.intp))
