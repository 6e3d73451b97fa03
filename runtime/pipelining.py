"""Engine calls kept in flight while the main thread blends (issue 21).

With one call at a time the engine waits while the main thread blends a tile row's results, and the
blending waits while the engine runs. Engines that take several calls at once (OpenVINO with ``streams``
> 1: one infer request per stream) get groups of tiles submitted to worker threads, up to one group per
stream ahead of the group being blended; the results are taken back in submission order, so the blender
sees exactly the same tiles in the same order and the maps are the same bytes. Engines that take one call
at a time (ONNX Runtime, TensorRT, one OpenVINO stream) run each group when it is taken, as before.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any

import numpy as np

from runtime.engines import EngineSet
from runtime.scheduling import EngineUse, PreparedTile
from runtime.stride4_mixed import PatchedTile
from runtime.tile_inference import infer_tiles

Logits = list[np.ndarray | PatchedTile | None]


class EnginePipeline:
    """Groups of prepared tiles in, their logits out in the same order, up to ``concurrency`` in flight."""

    def __init__(self, engines: EngineSet, batch: int, margin: int, logits_stride: int) -> None:
        self._engines, self._batch, self._margin, self._stride = engines, batch, margin, logits_stride
        self.concurrency = engines.concurrency
        self._workers = (
            ThreadPoolExecutor(self.concurrency, thread_name_prefix="stars-edge-engine")
            if self.concurrency > 1
            else None
        )
        #: Per submitted group: the caller's tag, its tiles, its engine use and its running calls.
        self._pending: deque[tuple[Any, list[PreparedTile], EngineUse, Future[Logits] | None]] = deque()

    def _infer(self, tiles: list[PreparedTile], use: EngineUse) -> Logits:
        return infer_tiles(tiles, self._engines, self._batch, self._margin, use, self._stride)

    def submit(self, tiles: list[PreparedTile], use: EngineUse, tag: Any = None) -> None:
        """Queue one group (``tag``: what the caller needs back with it); its engine calls start now when a
        stream is free (else when it is taken)."""
        future = self._workers.submit(self._infer, tiles, use) if self._workers is not None else None
        self._pending.append((tag, tiles, use, future))

    def full(self) -> bool:
        """True when the oldest group should be taken before another is submitted."""
        return len(self._pending) > (self.concurrency if self._workers is not None else 0)

    def __len__(self) -> int:
        return len(self._pending)

    def take(self) -> tuple[Any, list[PreparedTile], Logits]:
        """The oldest group's tag, tiles and logits (waits for its engine calls; their errors are raised
        here)."""
        tag, tiles, use, future = self._pending.popleft()
        return tag, tiles, future.result() if future is not None else self._infer(tiles, use)

    def close(self) -> None:
        """Drop the groups not taken and wait for the calls already running (they use the engines)."""
        for *_, future in self._pending:
            if future is not None:
                future.cancel()
        self._pending.clear()
        if self._workers is not None:
            self._workers.shutdown(wait=True, cancel_futures=True)


class Together:
    """``count`` copies of ``call`` run at once on threads, as the pipeline keeps every stream busy: what
    a timer around one ``Together()`` measures is ``count`` calls at full occupancy (for timing engines)."""

    def __init__(self, call: Callable[[], object], count: int) -> None:
        self.call, self.count = call, count
        self._workers = ThreadPoolExecutor(count) if count > 1 else None

    def __call__(self) -> None:
        if self._workers is None:
            self.call()
            return
        for future in [self._workers.submit(self.call) for _ in range(self.count)]:
            future.result()

    def __enter__(self) -> Together:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._workers is not None:
            self._workers.shutdown(wait=True)
