"""Engine inputs prepared where the engines read them: a tile row's groups as contiguous batches.

A tile row reaches the engines in groups of at most ``--batch`` tiles (``row_groups``). Each tile used to be
prepared into arrays of its own and each group stacked into a batch on the main thread (``np.stack``: 0.13
of 1.05 s in a serial profile of the clean 4096 px scene from arrays, issue 21), a copy of every input
pixel plus fresh memory for it. Here the reader threads prepare each tile's modalities straight into slot
``k`` of its group's ``(group size, bands, T, T)`` buffer (``GroupBuffers``), and ``as_batch`` hands the
engines a slice of that buffer when a call's tiles are consecutive slots of one buffer: the same values in
the same order, no copy. Anything else (tiles of a group split by pattern, windows cut from tiles, inputs
prepared elsewhere) is stacked as before.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

__all__ = ["GroupBuffers", "as_batch", "row_groups"]


def row_groups(columns: int, batch: int) -> list[int]:
    """Sizes of the groups a tile row of ``columns`` tiles is handed to the engines in: as few groups of at
    most ``batch`` as will do, their sizes as equal as possible (9 columns at batch 4: 3, 3, 3 rather than 4,
    4, 1). A row's whole-tile calls then take one batch size, or two that differ by one, and no lone tile:
    OpenVINO re-prepares a dynamic-shape graph each time a stream's input shape changes (1.7-2 ms per change
    at window sizes, quiet, session 14), and a batch of 3 costs no more per tile than one of 4 (3.16 against
    3.30 ms per 512 px INT8 tile, two streams busy; a lone tile 3.49 ms)."""
    if columns <= 0:
        return []
    count = -(-columns // batch)
    base, extra = divmod(columns, count)
    return [base + 1] * extra + [base] * (count - extra)


class GroupBuffers:
    """One chunk's engine-input buffers, a ``(group size, bands, tile, tile)`` float32 array per tile row,
    group and modality, handed out a tile's slot at a time; safe to use from several reader threads.

    A buffer leaves the open ones once every slot of it was handed out; the tiles' views keep it alive until
    the engines have read it. A slot asked for again (a tile the clean path declined, prepared the numpy way)
    is the same slot. Once the group's engine calls are done and its tiles blended, ``recycle`` takes its
    buffers back for a later group of the same shape: fresh buffers cost the kernel zeroing their pages on
    first touch (``clear_page``, 4 % of a clean scene's CPU, session 18), reused ones do not. Memory stays
    that of the tiles in flight: no more buffers exist than the groups the prefetch depth allows."""

    def __init__(self, columns: Sequence[int], batch: int, tile: int) -> None:
        self._tile = tile
        #: Per tile column: (group index in the row, slot in the group, group size).
        self._places: dict[int, tuple[int, int, int]] = {}
        position = 0
        for group, size in enumerate(row_groups(len(columns), max(1, batch))):
            for slot in range(size):
                self._places[columns[position]] = (group, slot, size)
                position += 1
        self._open: dict[tuple[int, int, str], tuple[np.ndarray, set[int]]] = {}
        #: Buffers made here and not yet recycled, by ``id`` (only these are ever taken back), and the
        #: recycled ones by shape, ready for the next group.
        self._made: dict[int, np.ndarray] = {}
        self._free: dict[tuple[int, ...], list[np.ndarray]] = {}
        self._lock = threading.Lock()

    def slot(self, row: int, col: int, modality: str, bands: int) -> np.ndarray:
        """The ``(bands, tile, tile)`` float32 slot tile ``(row, col)``'s ``modality`` is prepared into."""
        group, slot, size = self._places[col]
        key = (row, group, modality)
        with self._lock:
            entry = self._open.get(key)
            if entry is None or entry[0].shape[1] != bands:
                shape = (size, bands, self._tile, self._tile)
                free = self._free.get(shape)
                buffer = free.pop() if free else np.empty(shape, dtype=np.float32)
                self._made[id(buffer)] = buffer
                entry = (buffer, set())
                self._open[key] = entry
            buffer, handed = entry
            handed.add(slot)
            if len(handed) == size:
                del self._open[key]
        return buffer[slot]

    def slots(self, row: int, col: int, bands: dict[str, int]) -> dict[str, np.ndarray]:
        """Tile ``(row, col)``'s slot for each modality of ``bands`` (modality -> band count)."""
        return {name: self.slot(row, col, name, count) for name, count in bands.items()}

    def recycle(self, groups: Sequence[Sequence[np.ndarray]]) -> None:
        """Take back the buffers behind these engine inputs (each a group's tiles' arrays, every tile of the
        group among them): the caller guarantees that nothing reads them any more (the group's engine calls
        returned, its tiles are blended). Arrays made elsewhere, and buffers still open, are left alone."""
        with self._lock:
            open_ids = {id(entry[0]) for entry in self._open.values()}
            for arrays in groups:
                for array in arrays:
                    buffer = array.base
                    if not isinstance(buffer, np.ndarray) or id(buffer) in open_ids:
                        continue
                    if self._made.pop(id(buffer), None) is buffer:
                        self._free.setdefault(buffer.shape, []).append(buffer)


def as_batch(arrays: Sequence[np.ndarray]) -> np.ndarray | None:
    """``np.stack(arrays)`` without the copy where ``arrays`` are consecutive slots of one C-contiguous
    buffer (``GroupBuffers``): that buffer's slice holding exactly them, in order; None otherwise."""
    first = arrays[0]
    base = first.base
    if not isinstance(base, np.ndarray) or base.ndim != first.ndim + 1 or not base.flags.c_contiguous:
        return None
    if base.shape[1:] != first.shape or base.dtype != first.dtype:
        return None
    step = base.strides[0]
    origin = base.__array_interface__["data"][0]
    offset = first.__array_interface__["data"][0] - origin
    if offset % step:
        return None
    start = offset // step
    for position, array in enumerate(arrays):
        if (
            array.base is not base
            or array.shape != first.shape
            or array.strides != base.strides[1:]
            or array.__array_interface__["data"][0] != origin + (start + position) * step
        ):
            return None
    return base[start : start + len(arrays)]
