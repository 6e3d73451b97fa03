"""Blending and writing: stream one column chunk's tile rows through the engines and the blender
(``stream_chunk``), and run a scene's chunks (``SceneRun``): finished rows go to whole block bands
(``runtime/block_bands.py``, written on a writer thread), the journal is checkpointed as bands land on disk,
and an interrupted or failed run unwinds without losing what was made durable."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from runtime.batch_buffers import row_groups
from runtime.blending import RowBands, RowBlender
from runtime.blending_stride4 import Stride4Blender
from runtime.block_bands import BlockWriter, save_progress
from runtime.engines import EngineSet
from runtime.journal import CheckpointPolicy, Journal
from runtime.outputs import (
    GeoTiffSink,
    OutputSpec,
    RasterGrid,
    block_rows,
    discard,
    pending,
    validate_partial,
)
from runtime.pipelining import EnginePipeline
from runtime.scheduling import EngineUse, Prefetcher, ReadSettings, Timer
from runtime.sources import TileSource
from runtime.summary import count_names, names_to_counts
from runtime.tiling import Chunk, TileGrid
from runtime.validity import CODE_TO_INDEX
from stars_edge.errors import OutputError, StarsEdgeError
from stars_edge.modalities import Pattern, all_patterns


def pattern_index(codes: np.ndarray) -> np.ndarray:
    """Per-pixel ``Pattern.index`` (0 = none) of a tile's pattern codes."""
    low = codes.min()
    if low == codes.max():  # one code on the whole tile (most tiles)
        return np.full(codes.shape, CODE_TO_INDEX[low], dtype=np.uint8)
    return CODE_TO_INDEX.take(codes)


def first_tile_row(grid: TileGrid, rows_written: int) -> int:
    """The tile row whose finished rows contain raster row ``rows_written`` (where a resume restarts)."""
    for row in range(grid.rows):
        if grid.final_rows(row)[1] > rows_written:
            return row
    return grid.rows


def stream_chunk(
    source: TileSource,
    grid: TileGrid,
    chunk: Chunk,
    engines: EngineSet,
    settings: ReadSettings,
    timer: Timer,
    batch: int,
    first_row: int,
    classes: int,
    probabilities: str | None,
    patterns: Sequence[Pattern],
    use: EngineUse,
    on_tiles: Callable[[int], None] | None = None,
) -> Generator[tuple[int, RowBands], None, None]:
    """Yield ``(tile_row, finished rows)`` of one chunk from ``first_row`` on; a resume recomputes the row
    before it (without yielding or counting it) to rebuild the overlap carry exactly."""
    warmup = first_row - 1 if first_row > 0 else None
    start_row = first_row if warmup is None else warmup
    stride = engines.manifest.logits_stride
    blending = RowBlender if stride == 1 else Stride4Blender  # stride-4 logits: blended at stride 4
    blender = blending(grid, classes, probabilities, patterns, chunk)
    pipeline = EnginePipeline(engines, batch, settings.margin, stride)
    depth = (pipeline.concurrency + 1) * batch + 2  # tiles: the groups in flight, the one blended, the next
    prefetch = Prefetcher(source, grid, chunk, start_row, settings, timer, depth, batch)
    columns = chunk.last_col - chunk.first_col + 1
    blending_row = -1

    def blend_oldest() -> Generator[tuple[int, RowBands], None, None]:
        nonlocal blending_row
        started = timer.mark()
        (row, last), tiles, logits = pipeline.take()  # tag: tile row, last group of the row
        blended = timer.since("inference", started)
        if row != blending_row:
            blender.start_row(row, fresh=row == start_row)
            blending_row = row
        for tile, tile_logits in zip(tiles, logits, strict=True):
            blender.add(tile.col, tile_logits, pattern_index(tile.codes))
        prefetch.recycle(tiles)  # the group's engine calls returned and it is blended: its buffers are free
        timer.since("blend", blended)
        if row != warmup and on_tiles is not None:
            on_tiles(len(tiles))
        if last and row != warmup:
            finishing = timer.mark()
            bands = blender.finish_row()  # the row's pixels: upsampling and the stride-4 quads
            timer.since("blend", finishing)
            yield row, bands

    try:
        groups = row_groups(columns, batch)
        for row in range(start_row, grid.rows):
            for index, size in enumerate(groups):
                waited = timer.mark()
                tiles = [prefetch.get() for _ in range(size)]
                timer.since("wait", waited)
                pipeline.submit(tiles, use if row != warmup else EngineUse(), (row, index == len(groups) - 1))
                while pipeline.full():
                    yield from blend_oldest()
        while len(pipeline):
            yield from blend_oldest()
    finally:
        pipeline.close()
        prefetch.close()


class SceneRun:
    """One scene's chunks, tile rows and block bands, with checkpoints and the unwinding rules.

    It opens the partial files itself (reopening them on a resume, starting over when they cannot be read)
    and, once every row is on disk, marks the journal finished before anything finalises the outputs: an
    interruption during overviews, COG translation or the renames then resumes by finalising again
    (``pending``) instead of reopening partials that are COGs already or were renamed.
    """

    def __init__(
        self,
        classes: int,
        source: TileSource,
        grid: TileGrid,
        engines: EngineSet,
        raster: RasterGrid,
        outputs: list[OutputSpec],
        journal: Journal,
        policy: CheckpointPolicy,
        batch: int,
        on_row_done: Callable[[int], None] | None,
    ) -> None:
        self.classes, self.source, self.grid, self.engines = classes, source, grid, engines
        self.raster, self.outputs = raster, outputs
        self.journal, self.policy, self.batch = journal, policy, batch
        self.on_row_done = on_row_done
        self.sink: GeoTiffSink | None = None
        #: Outputs still to finalise: all of them, unless an interrupted finalisation renamed some already.
        self.pending: list[OutputSpec] = list(outputs)
        self.timer = Timer()
        self.use = EngineUse()
        self.counts = names_to_counts(journal.pattern_pixels)
        self.resumed = journal.started
        self.resumed_chunk = journal.chunk
        self.resumed_row = 0
        self.pixels = 0
        self.chunks = 1

    def execute(
        self, chunks: list[Any], settings: ReadSettings, probabilities: str | None, progress: bool
    ) -> None:
        from tqdm import tqdm

        grid, journal = self.grid, self.journal
        self.chunks = len(chunks)
        journal.height, journal.width, journal.chunks = grid.height, grid.width, len(chunks)
        if journal.finished and self._finished_partials_sound():
            self.pending = pending(self.outputs)
            self.resumed_row = grid.rows
            return
        block = block_rows(self.raster)
        patterns = all_patterns(self.source.modalities)
        probs = None if probabilities is None else (self.classes, probabilities)
        writer: BlockWriter | None = None
        bar = tqdm(total=len(grid), unit="tile", disable=not progress, desc="stars-edge run")
        background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="stars-edge-writer")
        try:
            sink = self.sink = self._open_sink()
            for chunk in chunks[journal.chunk :]:
                done = journal.rows_written if chunk.index == journal.chunk else 0
                first = first_tile_row(grid, done)
                if chunk.index == self.resumed_chunk:
                    self.resumed_row = first
                writer = BlockWriter(sink, chunk, grid.height, block, done, probs, background, self.timer)
                base = self.counts.copy()
                stream = stream_chunk(
                    self.source, grid, chunk, self.engines, settings, self.timer, self.batch, first,
                    self.classes, probabilities, patterns, self.use, bar.update,
                )  # fmt: skip
                with contextlib.closing(stream):  # an interruption stops the reader thread here
                    for row, bands in stream:
                        written = self.timer.mark()
                        wrote = writer.add(bands)
                        self.counts = base + writer.counts
                        self.timer.since("write", written)
                        self.policy.tile_row_done()
                        if wrote and writer.next_row < grid.height:
                            save_progress(self.policy, writer, journal, count_names(self.counts))
                        if self.on_row_done is not None:
                            self.on_row_done(row)
                        del bands  # views into the blender's rows: keep them from outliving the chunk
                if chunk.index + 1 < len(chunks):
                    writer.checkpoint(journal, chunk.index + 1, 0, count_names(self.counts))
                    self.policy.reset()
                writer.drain()
                self.pixels += writer.pixels_written
                writer = None
            sink.close()
            journal.chunk, journal.rows_written = len(chunks) - 1, grid.height
            journal.pattern_pixels, journal.finished = count_names(self.counts), True
            journal.save()
        except BaseException as exc:
            self._unwind(exc, writer)
            raise
        finally:
            background.shutdown(wait=True)
            bar.close()

    def _open_sink(self) -> GeoTiffSink:
        """The partial files, reopened when resuming; a partial left unreadable (e.g. by a crash during its
        directory write) is discarded with the journal and the scene starts over."""
        try:
            return GeoTiffSink(self.raster, self.outputs, self.journal.started)
        except OutputError:
            if not self.journal.started:
                raise
        self._start_over()
        return GeoTiffSink(self.raster, self.outputs, False)

    def _finished_partials_sound(self) -> bool:
        """Whether the partials of a finished journal are whole (every block reads); if not, start over."""
        try:
            for spec in pending(self.outputs):
                validate_partial(spec, self.raster)
        except OutputError:
            self._start_over()
            return False
        return True

    def _start_over(self) -> None:
        discard(self.outputs, self.journal.path)
        self.journal.restart()
        self.counts = names_to_counts({})
        self.resumed, self.resumed_chunk = False, 0

    def _unwind(self, exc: BaseException, writer: BlockWriter | None) -> None:
        """An interruption or a failed write keeps what is durably written for ``--resume``; bad data
        (which would fail again) removes the partial files and the journal. A journal that cannot be saved
        here leaves the last checkpoint's, and ``exc`` stays the error that is reported."""
        resumable = isinstance(exc, OutputError) or not isinstance(exc, StarsEdgeError)
        if writer is not None:
            writer.settle()
        if self.sink is not None:
            try:
                self.sink.close()
                broken = self.sink.broken
            except OutputError:
                broken = True
            if broken:  # a failed write, flush or close: only what the last checkpoint recorded is durable
                if not self.journal.path.is_file():  # and there is none: the partials are worth nothing
                    discard(self.outputs)
                return  # the last checkpoint's journal stays; a partial it cannot reopen restarts on resume
        if not resumable:
            discard(self.outputs, self.journal.path)
            return
        if writer is not None and (writer.next_row > 0 or writer.chunk.index > 0):
            self.journal.chunk, self.journal.rows_written = writer.chunk.index, writer.next_row
            self.journal.pattern_pixels = count_names(self.counts)
        if self.journal.started:
            with contextlib.suppress(OutputError):
                self.journal.save()
            if self.journal.path.is_file():
                return  # this point's journal, or the last checkpoint's if it could not be saved
        discard(self.outputs, self.journal.path)  # no journal describes the partials: they are worth nothing
