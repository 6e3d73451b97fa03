"""Block bands: one column chunk's finished rows collected into whole block bands and written, on a writer
thread where there is one (GDAL releases the GIL, so the main thread goes back to blending while the previous
band is encoded), and the checkpoints that make the written bands durable before the journal records them.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_for
from typing import Any

import numpy as np

from runtime.blending import RowBands
from runtime.journal import CheckpointPolicy, Journal
from runtime.outputs import GeoTiffSink
from runtime.scheduling import Timer
from runtime.summary import code_counts
from runtime.tiling import Chunk
from stars_edge.modalities import ALL_PATTERNS

#: Block-band buffers with a writer thread: the band being filled and up to two handed over. With two (one
#: in flight) the main thread waited for the writer at nearly every tile row: a 448-row tile row finishes
#: about two 256-row bands at once, and the second had to wait for the first to be encoded (16-19 ms each;
#: 0.07-0.10 s of a 4096 px scene's main thread blocked, issue 21, session 19). One more band costs one
#: band of the chunk's outputs (2 MB at 4096 px without probabilities).
WRITE_BUFFERS = 3

#: One block band's buffers: classes, patterns and (where asked for) probabilities.
Buffers = tuple[np.ndarray, np.ndarray, np.ndarray | None]


class BlockWriter:
    """Collects one chunk's finished rows into one block band and writes it when full (each block exactly
    once). The buffers are block bands of the chunk's width, allocated once: memory does not grow with the
    scene, and a full band is contiguous, so it is written without another copy.

    With a ``background`` executor (one thread) a full band is handed to it and the next band fills another
    of ``WRITE_BUFFERS`` buffers; the main thread waits only when every other buffer is still queued or being
    written, for the oldest band (a failed write raises there, or in ``drain``, and marks the sink broken, so
    no checkpoint ever records rows that are not on disk: jobs run in order on the one writer thread).
    """

    def __init__(
        self,
        sink: GeoTiffSink,
        chunk: Chunk,
        height: int,
        block: int,
        rows_written: int,
        probabilities: tuple[int, str] | None = None,
        background: ThreadPoolExecutor | None = None,
        timer: Timer | None = None,
    ) -> None:
        self.sink = sink
        self.chunk = chunk
        self.height = height
        self.block = block
        self.next_row = rows_written
        self.pixels_written = 0
        self.counts = np.zeros(len(ALL_PATTERNS) + 1, dtype=np.int64)
        self._background = background
        self._timer = timer
        self._jobs: list[Future[None]] = []
        width = chunk.x_stop - chunk.x_start
        spares = WRITE_BUFFERS - 1 if background is not None else 0
        #: Buffers free to fill next, and the bands handed over (their job, their buffers), oldest first.
        self._free: list[Buffers] = [self._buffers(width, probabilities) for _ in range(spares)]
        self._handed: deque[tuple[Future[None], Buffers]] = deque()
        self._classes, self._patterns, self._probs = self._buffers(width, probabilities)
        self._filled = 0

    def _buffers(self, width: int, probabilities: tuple[int, str] | None) -> Buffers:
        classes = np.empty((self.block, width), dtype=np.uint8)
        patterns = np.empty((self.block, width), dtype=np.uint8)
        probs = None
        if probabilities is not None:
            probs = np.empty((probabilities[0], self.block, width), dtype=probabilities[1])
        return classes, patterns, probs

    def add(self, bands: RowBands) -> bool:
        """Take a tile row's finished rows; returns True when a block band was written (or handed over)."""
        rows = bands.classes.shape[0]
        first = max(0, self.next_row + self._filled - bands.start)  # rows a resume recomputed: on disk
        wrote = False
        while first < rows:
            size = min(self.block, self.height - self.next_row)
            take = min(size - self._filled, rows - first)
            at = self._filled
            self._classes[at : at + take] = bands.classes[first : first + take]
            self._patterns[at : at + take] = bands.patterns[first : first + take]
            if self._probs is not None and bands.probabilities is not None:
                self._probs[:, at : at + take] = bands.probabilities[:, first : first + take]
            self._filled += take
            first += take
            if self._filled == size:
                self._write(size)
                wrote = True
        return wrote

    def drain(self) -> None:
        """Wait for the writer thread's jobs (the bands in flight, checkpoints); the first error raises. A job
        leaves the list only once done, so an interruption while waiting leaves it for ``settle``."""
        while self._jobs:
            self._jobs[0].result()
            self._jobs.pop(0)
        self._free.extend(buffers for _, buffers in self._handed)
        self._handed.clear()

    def _reclaim(self) -> None:
        """Wait for the oldest band handed over and take its buffers back. The jobs before it ran first (one
        writer thread, in order): the first of them that failed raises here, as in ``drain``."""
        job, buffers = self._handed.popleft()
        while self._jobs:
            head = self._jobs[0]
            head.result()
            self._jobs.pop(0)
            if head is job:
                break
        self._free.append(buffers)

    def settle(self) -> None:
        """Wait for the writer thread's jobs whatever happens (unwinding: the sink must not close under the
        writer thread); a job that failed has marked the sink broken."""
        jobs, self._jobs = self._jobs, []
        while not all(job.done() for job in jobs):
            with contextlib.suppress(KeyboardInterrupt):
                wait_for(jobs)

    def checkpoint(self, journal: Journal, chunk: int, rows_written: int, names: dict[str, int]) -> None:
        """Make the bands handed over durable, then record them in the journal (on the writer thread, after
        the bands in flight, so the main thread does not wait for the flush and the fsyncs)."""
        if self._background is None:
            checkpoint(self.sink, journal, chunk, rows_written, names)
        else:
            self._submit(checkpoint, self.sink, journal, chunk, rows_written, names)

    def _write(self, count: int) -> None:
        full = count == self.block
        data: dict[str, Any] = {
            "classes": self._classes[None] if full else self._classes[None, :count],
            "patterns": self._patterns[None] if full else self._patterns[None, :count],
        }
        if self._probs is not None:
            data["probabilities"] = self._probs if full else self._probs[:, :count]
        self.counts += code_counts(self._patterns[:count], self.counts.size)
        self.pixels_written += count * self._classes.shape[1]
        self._filled = 0
        row, self.next_row = self.next_row, self.next_row + count
        if self._background is None:  # no writer thread
            self.sink.write(row, self.chunk.x_start, data)
            return
        if not self._free:
            self._reclaim()  # every other buffer is handed over: the oldest one is filled next
        self._submit(self.sink.write, row, self.chunk.x_start, data)
        self._handed.append((self._jobs[-1], (self._classes, self._patterns, self._probs)))
        self._classes, self._patterns, self._probs = self._free.pop()

    def _submit(self, job: Callable[..., None], *args: Any) -> None:
        assert self._background is not None
        self._jobs.append(self._background.submit(self._on_writer_thread, job, *args))

    def _on_writer_thread(self, job: Callable[..., None], *args: Any) -> None:
        """Any failure marks the sink broken: the rows of that band, or of that checkpoint, are not durable,
        so unwinding keeps the journal of the last checkpoint that completed. Jobs queued behind a failed one
        do not run (a checkpoint must never record the failed band); the failure itself is what raises."""
        if self.sink.broken:
            return
        started = Timer.mark()
        try:
            job(*args)
        except BaseException:
            self.sink.broken = True
            raise
        finally:
            if self._timer is not None:
                self._timer.since("encode", started)


def checkpoint(
    sink: GeoTiffSink, journal: Journal, chunk: int, rows_written: int, names: dict[str, int]
) -> None:
    """Make the written blocks durable (flush + fsync), then record them in the journal atomically."""
    sink.flush()
    journal.chunk, journal.rows_written, journal.pattern_pixels = chunk, rows_written, names
    journal.save()


def save_progress(
    policy: CheckpointPolicy, writer: BlockWriter, journal: Journal, names: dict[str, int]
) -> None:
    """A checkpoint after a written block band, when the policy says one is due."""
    if policy.due():
        writer.checkpoint(journal, writer.chunk.index, writer.next_row, names)
        policy.reset()
