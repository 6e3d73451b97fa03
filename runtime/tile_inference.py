"""Each pattern's engine runs where its pixels are, on a batch of prepared tiles.

Per tile, the pattern with the most pixels runs on the whole tile (batched with other tiles of that
pattern). Every other pattern runs only on windows around its pixels: the pixels' bounding boxes on a
32-px cell grid, grown by the context margin and snapped to multiples of 32 (the engines' size multiple),
so a cloud in a corner costs a corner-sized engine call, not a whole tile. When the windows would cover more
than half the tile, the whole tile runs instead. A tile row reaches the engines in groups of at most
``--batch`` tiles of sizes as equal as possible (``row_groups``); a group's whole tiles of one pattern run in
one call, windows ``--batch`` at a time per shape, a remainder one at a time (``engine_calls``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

from runtime.batch_buffers import as_batch
from runtime.engines import EngineSet
from runtime.scheduling import EngineUse, PreparedTile
from runtime.stride4_mixed import Box, PatchedTile
from runtime.summary import code_counts
from runtime.tiling import SIZE_MULTIPLE
from runtime.validity import CODE_PATTERNS, CODE_TO_INDEX
from stars_edge.modalities import Pattern

#: Above this fraction of the tile, a secondary pattern runs on the whole tile (one batched call).
WINDOW_AREA_LIMIT = 0.5
#: Window sides (px): a window's height and width are each rounded up to one of these (or the tile).
WINDOW_SIDES = (64, 128, 256, 512, 1024)


def pattern_windows(mask: np.ndarray, margin: int) -> list[tuple[int, int, int, int]]:
    """Windows ``(y0, y1, x0, x1)`` covering ``mask`` with ``margin`` px of context, on the 32-px grid.

    Cells of 32 px holding a masked pixel are grouped into 8-connected components; the bounding box of each
    component's pixels grows by the margin, is snapped outward to multiples of 32 and clipped to the tile;
    overlapping windows merge.
    """
    size = mask.shape[0]
    cell = SIZE_MULTIPLE
    cells = np.asarray(mask.reshape(size // cell, cell, size // cell, cell).any(axis=(1, 3)))
    boxes = [_grow(_tight(mask, box, cell), margin, cell, size) for box in _components(cells)]
    while True:  # merge, then round each side up to a bucket; again until nothing changes
        boxes = _merged(boxes)
        bucketed = [_bucketed(box, size) for box in boxes]
        if bucketed == boxes:
            return boxes
        boxes = bucketed


def _merged(boxes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """``boxes`` with every overlapping pair replaced by its bounding box."""
    boxes = list(boxes)
    merged = True
    while merged:
        merged = False
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i], boxes[j]
                if a[0] < b[1] and b[0] < a[1] and a[2] < b[3] and b[2] < a[3]:
                    boxes[i] = (min(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3]))
                    del boxes[j]
                    merged = True
                    break
            if merged:
                break
    return boxes


def _bucketed(box: tuple[int, int, int, int], size: int) -> tuple[int, int, int, int]:
    """``box`` grown on each axis to the next window side in ``WINDOW_SIDES`` (at most the tile), about its
    centre on the 32-px grid and moved inside the tile: more context for the same pixels, and engine calls
    of a few shapes (each new shape costs a dynamic-shape engine a slow first call)."""
    y0, y1 = _bucketed_axis(box[0], box[1], size)
    x0, x1 = _bucketed_axis(box[2], box[3], size)
    return y0, y1, x0, x1


def _bucketed_axis(start: int, stop: int, size: int) -> tuple[int, int]:
    side = next((s for s in WINDOW_SIDES if s >= stop - start), size)
    side = min(side, size)
    start -= (side - (stop - start)) // 2 // SIZE_MULTIPLE * SIZE_MULTIPLE
    start = min(max(0, start), size - side)
    return start, start + side


def _tight(mask: np.ndarray, box: tuple[int, int, int, int], cell: int) -> tuple[int, int, int, int]:
    """Pixel bounding box ``(y0, y1, x0, x1)`` of ``mask`` inside a component's cells."""
    top, left = box[0] * cell, box[2] * cell
    sub = mask[top : box[1] * cell, left : box[3] * cell]
    rows, cols = np.flatnonzero(sub.any(axis=1)), np.flatnonzero(sub.any(axis=0))
    return top + int(rows[0]), top + int(rows[-1]) + 1, left + int(cols[0]), left + int(cols[-1]) + 1


def _grow(box: tuple[int, int, int, int], margin: int, cell: int, size: int) -> tuple[int, int, int, int]:
    y0, y1, x0, x1 = box
    snap_down = lambda v: max(0, (v - margin) // cell * cell)  # noqa: E731
    snap_up = lambda v: min(size, -(-(v + margin) // cell) * cell)  # noqa: E731
    return snap_down(y0), snap_up(y1), snap_down(x0), snap_up(x1)


def _components(cells: np.ndarray) -> Iterator[tuple[int, int, int, int]]:
    """Bounding boxes ``(r0, r1, c0, c1)`` (exclusive ends) of 8-connected True regions of a small grid."""
    seen = np.zeros_like(cells)
    rows, cols = cells.shape
    for r, c in zip(*np.nonzero(cells), strict=True):
        if seen[r, c]:
            continue
        stack = [(int(r), int(c))]
        seen[r, c] = True
        r0, r1, c0, c1 = int(r), int(r) + 1, int(c), int(c) + 1
        while stack:
            y, x = stack.pop()
            r0, r1, c0, c1 = min(r0, y), max(r1, y + 1), min(c0, x), max(c1, x + 1)
            for ny in range(max(0, y - 1), min(rows, y + 2)):
                for nx in range(max(0, x - 1), min(cols, x + 2)):
                    if cells[ny, nx] and not seen[ny, nx]:
                        seen[ny, nx] = True
                        stack.append((ny, nx))
        yield r0, r1, c0, c1


def batch_of_one(array: np.ndarray) -> np.ndarray:
    """``array`` as a contiguous batch of one, with the strides of a fresh array: ``array[None]`` has a zero
    stride on the batch axis, and OpenVINO ran a 512 px INT8 tile given that way ~20 % slower (loaded
    2-core machine, same-process A/B)."""
    return np.ascontiguousarray(array).reshape(1, *array.shape)


def engine_calls(items: Sequence[int], batch: int) -> Iterator[Sequence[int]]:
    """``items`` in engine calls of ``batch``, the remainder one at a time: each window shape then reaches
    the engine at two batch sizes at most, and a dynamic-shape engine's first call at a new shape costs 10-37
    ms against 0.6-23 ms for the next (OpenVINO INT8, session 13). Each item's logits are the same bits in
    a batch of one as in a batch of several (checked per backend by the runtime's tests)."""
    full = len(items) - len(items) % batch
    for offset in range(0, full, batch):
        yield items[offset : offset + batch]
    for offset in range(full, len(items)):
        yield items[offset : offset + 1]


def batch_inputs(items: Sequence[Mapping[str, np.ndarray]], pattern: Pattern) -> dict[str, np.ndarray]:
    """One engine call's inputs: one item as a contiguous batch of one (no stacking copy); several as the
    slice of their group's buffer that holds them (``batch_buffers.as_batch``), else stacked."""
    if len(items) == 1:
        return {m: batch_of_one(items[0][m]) for m in pattern}
    return {m: _batched([item[m] for item in items]) for m in pattern}


def _batched(arrays: list[np.ndarray]) -> np.ndarray:
    batch = as_batch(arrays)
    return np.stack(arrays) if batch is None else batch


def run_windows(
    tiles: list[PreparedTile],
    windows: list[tuple[int, int, tuple[int, int, int, int]]],
    engines: EngineSet,
    batch: int,
    use: EngineUse,
) -> list[np.ndarray]:
    """Each window's logits, in order. Windows of one pattern and shape (the buckets keep shapes few) run
    ``batch`` at a time across the tiles of the group, the remainder one at a time (``engine_calls``)."""
    groups: dict[tuple[int, int, int], list[int]] = {}
    for slot, (_, code, (y0, y1, x0, x1)) in enumerate(windows):
        groups.setdefault((code, y1 - y0, x1 - x0), []).append(slot)
    results: dict[int, np.ndarray] = {}
    for (code, height, width), slots in groups.items():
        pattern = CODE_PATTERNS[code]
        assert pattern is not None
        for part in engine_calls(slots, batch):
            crops = []
            for slot in part:
                index, _, (y0, y1, x0, x1) = windows[slot]
                crops.append({m: tiles[index].inputs[m][:, y0:y1, x0:x1] for m in pattern})
            inputs = batch_inputs(crops, pattern)
            logits = engines.run(pattern, inputs)
            use.add(pattern.name, len(part), len(part) * height * width, (len(part), height, width))
            for position, slot in enumerate(part):
                results[slot] = logits[position]
    return [results[slot] for slot in range(len(windows))]


def infer_tiles(
    tiles: list[PreparedTile],
    engines: EngineSet,
    batch: int,
    margin: int,
    use: EngineUse,
    logits_stride: int = 1,
) -> list[np.ndarray | PatchedTile | None]:
    """Per tile, logits composed per pixel from the engine of each pixel's pattern (None for a tile with no
    valid pixel). Composing is a per-pixel selection, so it works on logits; the blender applies softmax
    where it needs probabilities.

    Stride-4 engines (``logits_stride`` 4): a tile with one pattern keeps its engine's coarse logits; a tile
    with several becomes a ``PatchedTile`` (each engine run's coarse logits and the box it ran on), which the
    blender sorts into coarse cells and full-resolution boundary pixels (``runtime/stride4_mixed.py``)."""
    stride4 = logits_stride != 1
    mixed: set[int] = set()
    parts: dict[int, list[tuple[Box, int, np.ndarray]]] = {}  # stride 4: a mixed tile's engine runs
    whole: dict[int, list[int]] = {}
    windows: list[tuple[int, int, tuple[int, int, int, int]]] = []
    for index, tile in enumerate(tiles):
        counts = code_counts(tile.codes)
        found = [int(c) for c in np.flatnonzero(counts[1:]) + 1]
        if not found:
            continue
        main = max(found, key=lambda c: (counts[c], -c))
        whole.setdefault(main, []).append(index)
        size = tile.codes.shape[0]
        if len(found) > 1:
            mixed.add(index)
            if stride4:
                parts[index] = []
        for code in found:
            if code == main:
                continue
            boxes = pattern_windows(tile.codes == code, margin)
            area = sum((b[1] - b[0]) * (b[3] - b[2]) for b in boxes)
            if area > WINDOW_AREA_LIMIT * size * size:
                whole.setdefault(code, []).append(index)
            else:
                windows.extend((index, code, box) for box in boxes)
    composed: list[np.ndarray | None] = [None] * len(tiles)
    for code in sorted(whole, key=lambda c: int(CODE_TO_INDEX[c])):
        pattern = CODE_PATTERNS[code]
        assert pattern is not None
        # a group (``row_groups``) is at most ``batch`` tiles: its whole tiles of one pattern run as one call
        for part in engine_calls(whole[code], min(batch, len(tiles))):
            inputs = batch_inputs([tiles[i].inputs for i in part], pattern)
            logits = engines.run(pattern, inputs)
            if not logits.flags.writeable:  # later engines patch their pixels into it
                logits = logits.copy()
            fed = next(iter(inputs.values())).shape  # (batch, bands, height, width)
            use.add(pattern.name, len(part), len(part) * tiles[part[0]].codes.size, (fed[0], fed[2], fed[3]))
            for slot, index in enumerate(part):
                if stride4 and index in mixed:
                    size = tiles[index].codes.shape
                    parts[index].append(((0, size[0], 0, size[1]), int(CODE_TO_INDEX[code]), logits[slot]))
                    continue
                target = composed[index]
                tile_logits = logits[slot]
                if target is None:  # the tile's first engine: take it whole, later ones patch their pixels
                    composed[index] = tile_logits
                else:
                    np.copyto(target, tile_logits, where=(tiles[index].codes == code)[None])
    window_logits = run_windows(tiles, windows, engines, batch, use)
    for (index, code, (y0, y1, x0, x1)), logits in zip(windows, window_logits, strict=True):
        tile = tiles[index]
        if stride4:
            parts[index].append(((y0, y1, x0, x1), int(CODE_TO_INDEX[code]), logits))
            continue
        target = composed[index]
        assert target is not None
        view = target[:, y0:y1, x0:x1]
        np.copyto(view, logits, where=(tile.codes[y0:y1, x0:x1] == code)[None])
    if not stride4:
        return list(composed)
    return [PatchedTile(parts[index]) if index in parts else logits for index, logits in enumerate(composed)]
