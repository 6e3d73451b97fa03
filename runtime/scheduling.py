"""Tile scheduling: reader threads read and prepare tiles (``Prefetcher``) and the stages are timed
(``Timer``); where each pattern's engine runs on a prepared tile is ``runtime/tile_inference.py``."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.batch_buffers import GroupBuffers
from runtime.modality_readers import ModalityView, modality_groups
from runtime.sources import RawTile, TileSource
from runtime.tiling import Chunk, TileGrid
from runtime.validity import (
    MODALITY_BITS,
    box_any,
    clean_tile,
    pixel_codes,
    prepare_inputs,
    speckle_mask,
)
from stars_edge.modalities import ModalitySpec

#: ``encode`` is the writer thread's (compressing and writing block bands); ``write`` the main thread's part
#: (copying finished rows into the band, waiting for the band before).
STAGES: tuple[str, ...] = ("read", "preprocess", "wait", "inference", "blend", "write", "encode")
#: The stages the reader threads time (``prepare``); with several readers their seconds add up over them.
READER_STAGES: tuple[str, ...] = ("read", "preprocess")


class Timer:
    """Seconds per stage, safe to add to from the reader, writer and main threads: wall time, and the CPU
    time of the thread that ran the stage (``time.thread_time``). On a busy machine a stage's wall time
    includes the time its thread waited for a core; its CPU time does not, so the CPU columns add up to
    what each stage cost and the process's CPU beyond them is the engines' own threads."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self.cpu_seconds = dict.fromkeys(STAGES, 0.0)
        self._lock = threading.Lock()

    @staticmethod
    def mark() -> tuple[float, float]:
        """Now, as (wall, this thread's CPU) seconds."""
        return time.perf_counter(), time.thread_time()

    def since(self, stage: str, mark: tuple[float, float]) -> tuple[float, float]:
        """Add the time since ``mark`` (taken on this thread) to ``stage``; returns a new mark."""
        now = self.mark()
        with self._lock:
            self.seconds[stage] += now[0] - mark[0]
            self.cpu_seconds[stage] += now[1] - mark[1]
        return now


@dataclass
class EngineUse:
    """Engine runs (tiles and windows; a batched call of n tiles is n runs), the pixels they processed, and
    the engine calls per input shape ``(batch, height, width)``, per pattern name."""

    runs: dict[str, int] = field(default_factory=dict)
    pixels: dict[str, int] = field(default_factory=dict)
    shapes: dict[str, dict[tuple[int, int, int], int]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, name: str, runs: int, pixels: int, shape: tuple[int, int, int]) -> None:
        """Count one engine call of input ``shape`` that covered ``runs`` tiles or windows and ``pixels``
        (calls run on several threads when the engines have several streams)."""
        with self._lock:
            self.runs[name] = self.runs.get(name, 0) + runs
            self.pixels[name] = self.pixels.get(name, 0) + pixels
            calls = self.shapes.setdefault(name, {})
            calls[shape] = calls.get(shape, 0) + 1

    def shape_counts(self) -> dict[str, dict[str, int]]:
        """Engine calls per ``"BxHxW"`` input shape, per pattern name (``RunSummary.engine_shapes``)."""
        return {
            name: {"x".join(str(v) for v in shape): calls for shape, calls in counts.items()}
            for name, counts in self.shapes.items()
        }


@dataclass
class PreparedTile:
    row: int
    col: int
    inputs: dict[str, np.ndarray]
    codes: np.ndarray


@dataclass
class ReadSettings:
    """How raw tiles become engine inputs. ``dilation`` grows each modality's invalid mask by that many
    pixels (e.g. thin cloud edges a cloud mask misses) before anything else sees it."""

    specs: Mapping[str, ModalitySpec]
    min_valid: float
    margin: int
    fill: float = 0.0
    dilation: Mapping[str, int] = field(default_factory=dict)
    #: Reader threads preparing tiles at once, each with its own handle on the source (``handles``); sources
    #: without several handles (a sensor's row stream) are read by one.
    readers: int = 1


def read_dilated(source: TileSource, y: int, x: int, size: int, dilation: Mapping[str, int]) -> RawTile:
    """Tile ``(y, x)`` with each modality's holes grown by ``dilation[modality]`` px (Chebyshev); speckle
    (isolated invalid pixels, filled from their neighbours later) is left as it is.

    The tile is read with a halo of the largest dilation, so an invalid pixel just outside the tile masks
    its neighbours inside it too: neighbouring tiles agree on every pixel's validity.
    """
    halo = max((d for m, d in dilation.items() if m in source.modalities), default=0)
    if halo <= 0:
        return source.read(y, x, size)
    y0, x0 = max(0, y - halo), max(0, x - halo)
    oy, ox = y - y0, x - x0
    raw = source.read(y0, x0, size + 2 * halo)
    window = (slice(oy, oy + size), slice(ox, ox + size))
    valid = {}
    for name, ok in raw.valid.items():
        radius = dilation.get(name, 0)
        grown = ok
        if radius > 0:  # holes grow; speckle (dead pixels, filled later) does not
            holes = ~(ok | speckle_mask(ok, raw.inside)) & raw.inside
            grown = ok & ~box_any(holes, radius)
        valid[name] = grown[window]
    values = {name: data[(slice(None), *window)] for name, data in raw.values.items()}
    return RawTile(values, valid, raw.inside[window])


def reader_count(source: TileSource, readers: int, columns: int) -> int:
    """Reader threads a chunk of ``columns`` tile columns gets: ``readers`` when the source gives several
    handles (``handles``), never more than one per column; one otherwise (a sensor's row stream)."""
    return max(1, min(readers, columns)) if getattr(source, "handles", None) is not None else 1


@dataclass
class PreparedPart:
    """Some modalities of a prepared tile: engine inputs and validity (None: every pixel of every one of them
    valid and the tile inside the raster: the clean path), before the patterns are decided over them all."""

    inputs: dict[str, np.ndarray]
    valid: dict[str, np.ndarray] | None
    inside: np.ndarray | None


def prepare_part(
    source: TileSource,
    grid: TileGrid,
    row: int,
    col: int,
    settings: ReadSettings,
    timer: Timer,
    buffers: GroupBuffers | None = None,
) -> PreparedPart:
    """Read tile ``(row, col)`` of ``source``'s modalities, fill speckle and normalise, into the tile's
    slots of ``buffers`` where given (its group then reaches the engines without a stacking copy).

    A source with ``read_normalised`` (arrays, files, a row stream) hands a tile whose every pixel is valid
    straight as engine inputs (``runtime/kernels.py``, ``runtime/clean_numpy.py``)."""
    y, x = grid.origin(row, col)
    start = timer.mark()
    out = None
    if buffers is not None:
        bands = {m: settings.specs[m].bands for m in source.modalities if m in settings.specs}
        out = buffers.slots(row, col, bands)
    read_normalised = getattr(source, "read_normalised", None)
    if read_normalised is not None:
        ready = read_normalised(y, x, grid.tile, settings.dilation, settings.specs, out=out)
        if ready is not None:
            timer.since("read", start)
            return PreparedPart(ready, None, None)
    raw = read_dilated(source, y, x, grid.tile, settings.dilation)
    middle = timer.since("read", start)
    values, valid = clean_tile(raw)
    inputs = prepare_inputs(values, valid, raw.inside, settings.specs, settings.fill, out)
    timer.since("preprocess", middle)
    return PreparedPart(inputs, valid, raw.inside)


def combine_parts(
    row: int, col: int, tile: int, parts: list[PreparedPart], settings: ReadSettings
) -> PreparedTile:
    """The prepared tile of its parts' modalities together: each pixel's pattern (``pixel_codes``) decided
    over all of them. A clean part counts as valid everywhere, as ``pixel_codes`` would find it; all parts
    clean, every pixel takes every modality."""
    inputs = {name: data for part in parts for name, data in part.inputs.items()}
    inside = next((part.inside for part in parts if part.inside is not None), None)
    if inside is None:
        code = sum(MODALITY_BITS[m] for m in inputs)
        return PreparedTile(row, col, inputs, np.full((tile, tile), code, dtype=np.uint8))
    valid: dict[str, np.ndarray] = {}
    for part in parts:
        if part.valid is None:
            valid.update({name: np.ones((tile, tile), dtype=bool) for name in part.inputs})
        else:
            valid.update(part.valid)
    return PreparedTile(row, col, inputs, pixel_codes(valid, inside, settings.min_valid, settings.margin))


def prepare(
    source: TileSource,
    grid: TileGrid,
    row: int,
    col: int,
    settings: ReadSettings,
    timer: Timer,
    buffers: GroupBuffers | None = None,
) -> PreparedTile:
    """Read tile ``(row, col)``, fill speckle, decide the per-pixel patterns and normalise: every pixel of a
    clean tile (every modality valid, ``read_normalised``) takes every modality, as ``pixel_codes`` decides
    for such a tile."""
    part = prepare_part(source, grid, row, col, settings, timer, buffers)
    mark = timer.mark()
    tile = combine_parts(row, col, grid.tile, [part], settings)
    if part.inside is not None:
        timer.since("preprocess", mark)
    return tile


_END = object()


class Prefetcher:
    """Reader threads filling bounded queues with one chunk's prepared tiles, row-major from a row.

    With ``settings.readers`` > 1 and a source that gives several handles (``handles``), reader ``i`` of ``n``
    prepares the tiles of the ``i``-th band of the chunk's columns, row by row, on its own handle into its
    own queue, and ``get`` takes each tile from its reader's queue in row-major order: the tiles come out in
    the same order as from one reader. Where two readers can split the modalities evenly instead
    (``modality_readers.modality_groups``: files, optical against SAR and DSM), each prepares its modalities
    of every tile and ``get`` combines the two parts: then no block is decoded twice.
    """

    def __init__(
        self,
        source: TileSource,
        grid: TileGrid,
        chunk: Chunk,
        first_row: int,
        settings: ReadSettings,
        timer: Timer,
        depth: int,
        batch: int = 1,
    ) -> None:
        self._stop = threading.Event()
        self._grid, self._settings, self._timer = grid, settings, timer
        columns = list(range(chunk.first_col, chunk.last_col + 1))
        #: Each tile is prepared into its slot of its group's batch (``stream_chunk`` groups a row so).
        self._buffers = GroupBuffers(columns, batch, grid.tile)
        count = reader_count(source, settings.readers, len(columns))
        positions = [(row, col) for row in range(first_row, grid.rows) for col in columns]
        self._positions = positions
        self._taken = 0
        groups = modality_groups(source, count)
        sources: list[TileSource]
        if groups is not None:
            # each reader reads its own files' modalities of every tile: every block is decoded once
            sources = [ModalityView(source, group) for group in groups]
            mine = [positions] * len(groups)
            #: Each tile comes in parts, one per reader, which ``get`` combines (else one reader per tile).
            self._in_parts = True
            sizes = [max(1, depth)] * len(groups)
        else:
            # each reader takes a band of columns, so that it decodes its own blocks (a GDAL handle caches
            # the blocks it decoded; handles interleaved tile by tile would each decode every block)
            sources = source.handles(count) if count > 1 else [source]  # type: ignore[attr-defined]
            owner = {col: index * count // len(columns) for index, col in enumerate(columns)}
            #: Which reader's queue holds each tile, in the order ``get`` hands them out.
            self._owners = [owner[col] for _, col in positions]
            self._in_parts = False
            mine = [[p for p in positions if owner[p[1]] == index] for index in range(count)]
            sizes = [max(1, -(-depth // count))] * count
        self._queues: list[queue.Queue[Any]] = [queue.Queue(maxsize=size) for size in sizes]
        self._threads = [
            threading.Thread(
                target=self._work,
                args=(index, sources[index], grid, mine[index], settings, timer),
                name=f"stars-edge-reader-{index}",
                daemon=True,
            )
            for index in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def _put(self, index: int, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queues[index].put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(
        self,
        index: int,
        source: TileSource,
        grid: TileGrid,
        positions: list[tuple[int, int]],
        settings: ReadSettings,
        timer: Timer,
    ) -> None:
        try:
            for row, col in positions:
                if self._stop.is_set():
                    return
                item = (
                    prepare(source, grid, row, col, settings, timer, self._buffers)
                    if not self._in_parts
                    else prepare_part(source, grid, row, col, settings, timer, self._buffers)
                )
                if not self._put(index, item):
                    return
            self._put(index, _END)
        except BaseException as exc:  # handed to the main thread, which re-raises it
            self._put(index, exc)

    def get(self) -> PreparedTile:
        if not self._in_parts:
            tile: PreparedTile = self._take(self._queues[self._owners[self._taken]])
            self._taken += 1
            return tile
        parts = [self._take(q) for q in self._queues]
        row, col = self._positions[self._taken]
        self._taken += 1
        mark = self._timer.mark()
        tile = combine_parts(row, col, self._grid.tile, parts, self._settings)
        self._timer.since("preprocess", mark)  # the patterns, decided here over both parts
        return tile

    def recycle(self, tiles: Sequence[PreparedTile]) -> None:
        """The engine-input buffers of a group of tiles whose engine calls are done and which are blended
        (``GroupBuffers.recycle``)."""
        self._buffers.recycle([list(tile.inputs.values()) for tile in tiles])

    @staticmethod
    def _take(source: queue.Queue[Any]) -> Any:
        item = source.get()
        if isinstance(item, BaseException):
            raise item
        if item is _END:
            raise RuntimeError("reader thread ended early")
        return item

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
