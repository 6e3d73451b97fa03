"""The compiled kernels themselves (numba, ``nogil``: reader threads run them beside the main thread). Import
this module through ``runtime.kernels.compiled``, which decides whether to use it; importing it imports
numba, and a broken numba install fails here, loudly. Each kernel's docstring names the numpy code whose
bits it reproduces."""

from __future__ import annotations

import numba
import numpy as np

from runtime.upsampling import QUAD_NEIGHBOUR_WEIGHTS
from runtime.upsampling import QUAD_OWN_CELL as QUAD_OWN_CELLS

__all__ = [
    "cut_normalised",
    "finite_pixels",
    "normalise_filled",
    "normalise_in_place",
    "quad_decisions",
    "quad_pixels",
    "warm",
    "window_valid",
]

jit = numba.njit(nogil=True, cache=True, boundscheck=False, error_model="numpy")


@jit
def cut_normalised(
    array: np.ndarray,
    mask: np.ndarray,
    top: int,
    left: int,
    scale: np.ndarray,
    offset: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    out: np.ndarray,
) -> bool:
    """Engine inputs of the ``out``-sized window at ``(top, left)`` of stored values ``array`` in one pass:
    ``v = float32(stored)``, then where ``scale`` is not empty ``v = v * scale + offset`` (GDAL scale/offset
    tags, as ``stored_values.apply_scale_offset``), then ``(v - mean) / std`` (``validity.normalize_owned``):
    the same float32 operations in the same order. False (``out`` partly written) as soon as a pixel is
    invalid: ``mask`` (``(H, W)`` booleans, or a ``(0, 0)`` array for none) False there, or a band not
    finite after scaling; the caller then takes the numpy path, which fills speckle and decides patterns."""
    bands, rows, cols = out.shape
    if mask.shape[0] > 0 and not _mask_holds(mask, top, top + rows, left, left + cols):
        return False
    scaled = scale.shape[0] > 0
    for b in range(bands):
        m, s = mean[b], std[b]
        a = scale[b] if scaled else np.float32(1.0)
        c = offset[b] if scaled else np.float32(0.0)
        for i in range(rows):
            # rows sliced first: indexing ``array[b, y, left + j]`` makes numba handle negative indices,
            # and LLVM then gathers element by element instead of loading vectors (3x slower)
            source = array[b, top + i, left : left + cols]
            target = out[b, i]
            bad = np.int32(0)
            if scaled:
                for j in range(cols):
                    value = np.float32(source[j]) * a + c
                    bad |= np.int32((value - value) != 0)  # NaN or infinite; an integer OR vectorises
                    target[j] = (value - m) / s
            else:
                for j in range(cols):
                    value = np.float32(source[j])
                    bad |= np.int32((value - value) != 0)
                    target[j] = (value - m) / s
            if bad:
                return False
    return True


@jit
def window_valid(
    array: np.ndarray,
    mask: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    y0: int,
    y1: int,
    x0: int,
    x1: int,
) -> bool:
    """Whether every pixel of ``array[:, y0:y1, x0:x1]`` is valid by ``cut_normalised``'s rule."""
    if mask.shape[0] > 0 and not _mask_holds(mask, y0, y1, x0, x1):
        return False
    scaled = scale.shape[0] > 0
    for b in range(array.shape[0]):
        a = scale[b] if scaled else np.float32(1.0)
        c = offset[b] if scaled else np.float32(0.0)
        for i in range(y0, y1):
            source = array[b, i, x0:x1]
            bad = np.int32(0)
            for j in range(x1 - x0):
                value = np.float32(source[j]) * a + c if scaled else np.float32(source[j])
                bad |= np.int32((value - value) != 0)
            if bad:
                return False
    return True


@jit
def _mask_holds(mask: np.ndarray, y0: int, y1: int, x0: int, x1: int) -> bool:
    """Whether ``mask`` is True on every pixel of ``[y0, y1) x [x0, x1)``."""
    for i in range(y0, y1):
        line = mask[i, x0:x1]
        missing = np.int32(0)
        for j in range(x1 - x0):
            missing |= 1 - np.int32(line[j])
        if missing:
            return False
    return True


@jit
def normalise_in_place(data: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """``validity.normalize_owned``: ``data = (data - mean) / std`` per band, float32, in one pass."""
    for b in range(data.shape[0]):
        m, s = mean[b], std[b]
        for i in range(data.shape[1]):
            line = data[b, i]
            for j in range(data.shape[2]):
                line[j] = (line[j] - m) / s


@jit
def normalise_filled(
    data: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    holes: np.ndarray,
    inside: np.ndarray,
    fill: np.float32,
    out: np.ndarray,
) -> None:
    """``validity.prepare_inputs`` for one modality in one pass: ``out = (data - mean) / std`` per band,
    float32, then ``fill`` where ``holes`` and 0 outside ``inside`` (empty masks: none). ``out`` may be
    ``data``."""
    with_holes, with_inside = holes.shape[0] > 0, inside.shape[0] > 0
    for b in range(data.shape[0]):
        m, s = mean[b], std[b]
        for i in range(data.shape[1]):
            for j in range(data.shape[2]):
                value = (data[b, i, j] - m) / s
                if with_holes and holes[i, j]:
                    value = fill
                if with_inside and not inside[i, j]:
                    value = np.float32(0.0)
                out[b, i, j] = value


@jit
def finite_pixels(values: np.ndarray) -> np.ndarray:
    """``tile_source.finite_valid``: pixels whose every band is finite, ``(bands, H, W) -> (H, W)``."""
    bands, height, width = values.shape
    out = np.ones((height, width), dtype=np.bool_)
    for b in range(bands):
        for i in range(height):
            line, ok = values[b, i], out[i]
            for j in range(width):
                value = line[j]
                ok[j] = ok[j] and (value - value) == 0
    return out


#: ``upsampling``'s quad geometry as arrays the kernels read: per pixel ``p`` of a quad's row or column, the
#: weight of the cell it does not lie in, and the cell it lies in.
QUAD_NEIGHBOUR_WEIGHT = np.array(QUAD_NEIGHBOUR_WEIGHTS, dtype=np.float32)
QUAD_OWN_CELL = np.array(QUAD_OWN_CELLS, dtype=np.int64)


@jit
def quad_pixels(
    cells: np.ndarray,
    classes: int,
    shares: int,
    seen: np.ndarray,
    fine: np.ndarray,
    lead: np.float32,
    nodata: np.uint8,
    qy: np.ndarray,
    qx: np.ndarray,
    class_map: np.ndarray,
    pattern_map: np.ndarray,
    logits_out: np.ndarray,
) -> np.ndarray:
    """Classes and patterns of the 16 pixels of each quad from its 2x2 cells: the stride-4 blender's numpy
    path for undecided quads (``upsample4_quads``, ``stride4_quads.pixel_logits``, ``classes_of``,
    ``patterns_of``), the same float32 operations in the same order, one pixel position at a time over all
    quads (so the loops over quads vectorise).

    ``cells``: ``(2, 2, channels, n)`` from ``Quads.cells`` (``classes`` normalised logits, the weight, the
    coverage, then ``shares`` pattern weights). ``seen``: the pattern codes, in the order of those channels
    (with ``shares`` 0, every covered pixel takes ``seen[0]``, or 0 for an empty ``seen``). ``fine``:
    ``(classes + 1 + shares, 4, 4, n)``, the full-resolution band at the quads' pixels (logit sums, weight,
    pattern weights), or an empty array. Writes quad ``k``'s pixels into ``class_map`` and ``pattern_map``
    (``Quads.pixels`` arrays) from row ``4 qy[k]`` and column ``4 qx[k]``; returns per quad whether a covered
    pixel's leader leads by less than ``lead`` (or is not finite): such quads go through softmax on the numpy
    path, which overwrites them. ``logits_out`` ``(classes, 4, 4, n)`` receives each pixel's final logits
    where it is not empty (tests compare them bit for bit)."""
    n = cells.shape[3]
    reach_channel, weight_channel = classes + 1, classes
    with_fine = fine.shape[0] > 0
    default = seen[0] if seen.shape[0] > 0 else np.uint8(0)
    rows = np.empty((4, 2, cells.shape[2], n), dtype=np.float32)  # the row pass: [p, cell column, channel]
    for p in range(4):
        w = QUAD_NEIGHBOUR_WEIGHT[p]
        keep = np.float32(1.0) - w
        own, other = QUAD_OWN_CELL[p], 1 - QUAD_OWN_CELL[p]
        for j in range(2):
            for ch in range(cells.shape[2]):
                first, second, target = cells[own, j, ch], cells[other, j, ch], rows[p, j, ch]
                for k in range(n):
                    target[k] = first[k] * keep + w * second[k]
    logits = np.empty((classes, n), dtype=np.float32)
    weights = np.empty((max(shares, 1), n), dtype=np.float32)
    divisor = np.empty(n, dtype=np.float32)
    weight = np.empty(n, dtype=np.float32)
    top = np.empty(n, dtype=np.float32)
    count = np.empty(n, dtype=np.uint8)
    index = np.empty(n, dtype=np.uint8)
    covered = np.empty(n, dtype=np.bool_)
    redo = np.zeros(n, dtype=np.bool_)
    for p in range(4):
        for q in range(4):
            w = QUAD_NEIGHBOUR_WEIGHT[q]
            keep = np.float32(1.0) - w
            own, other = QUAD_OWN_CELL[q], 1 - QUAD_OWN_CELL[q]
            first, second = rows[p, own, reach_channel], rows[p, other, reach_channel]
            for k in range(n):
                reach = first[k] * keep + w * second[k]
                divisor[k] = reach if reach > 0 else np.float32(1.0)
            first, second = rows[p, own, weight_channel], rows[p, other, weight_channel]
            for k in range(n):
                weight[k] = (first[k] * keep + w * second[k]) / divisor[k]
            for ch in range(classes):
                first, second, target = rows[p, own, ch], rows[p, other, ch], logits[ch]
                for k in range(n):
                    target[k] = (first[k] * keep + w * second[k]) / divisor[k]
            for s in range(shares):
                channel = classes + 2 + s
                first, second, target = rows[p, own, channel], rows[p, other, channel], weights[s]
                for k in range(n):
                    target[k] = (first[k] * keep + w * second[k]) / divisor[k]
            inside = cells[QUAD_OWN_CELL[p], QUAD_OWN_CELL[q], reach_channel]
            for k in range(n):
                covered[k] = inside[k] > 0
            if with_fine:
                fine_weight = fine[classes, p, q]
                for k in range(n):
                    total = weight[k] + fine_weight[k]
                    divisor[k] = total if total > 0 else np.float32(1.0)
                    covered[k] = covered[k] or fine_weight[k] > 0
                for ch in range(classes):
                    target, extra = logits[ch], fine[ch, p, q]
                    for k in range(n):
                        target[k] = (target[k] * weight[k] + extra[k]) / divisor[k]
                for s in range(shares):
                    target, extra = weights[s], fine[classes + 1 + s, p, q]
                    for k in range(n):
                        target[k] = target[k] + extra[k]
            if logits_out.shape[0] > 0:
                for ch in range(classes):
                    logits_out[ch, p, q] = logits[ch]
            # ``pixels.clear_argmax``: the maximum (NaN wins, as np.max), less ``lead``; the last channel at
            # or above that is the class when it is the only one
            for k in range(n):
                top[k] = logits[0, k]
            for ch in range(1, classes):
                source = logits[ch]
                for k in range(n):
                    value, best = source[k], top[k]
                    top[k] = value if (value > best or value != value) else best
            for k in range(n):
                top[k] = top[k] - lead
                count[k] = 0
                index[k] = 0
            for ch in range(classes):
                source = logits[ch]
                for k in range(n):
                    near = np.uint8(source[k] >= top[k])
                    count[k] += near
                    index[k] = max(index[k], near * np.uint8(ch))
            for k in range(n):
                y, x = 4 * qy[k] + p, 4 * qx[k] + q
                if covered[k]:
                    class_map[y, x] = index[k]
                    if count[k] != 1 or top[k] == np.inf:
                        redo[k] = True
                else:
                    class_map[y, x] = nodata
            # ``pixels.argmax_channels`` of the pattern weights: the first maximum, NaN propagating
            for k in range(n):
                y, x = 4 * qy[k] + p, 4 * qx[k] + q
                if not covered[k]:
                    pattern_map[y, x] = 0
                    continue
                if shares == 0:
                    pattern_map[y, x] = default
                    continue
                best, chosen = weights[0, k], 0
                for s in range(1, shares):
                    value = weights[s, k]
                    if value > best:
                        chosen = s
                    if value != value or best != best:
                        best = np.float32(np.nan)
                    elif value > best:
                        best = value
                pattern_map[y, x] = seen[chosen]
    return redo


@jit
def _nan_max(a: np.float32, b: np.float32) -> np.float32:
    """``np.maximum`` of two values: NaN when either is."""
    if a != a or b != b:
        return np.float32(np.nan)
    return a if a > b else b


@jit
def _nan_min(a: np.float32, b: np.float32) -> np.float32:
    """``np.minimum`` of two values: NaN when either is."""
    if a != a or b != b:
        return np.float32(np.nan)
    return a if a < b else b


@jit
def quad_decisions(
    stacked: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    classes: int,
    seen: np.ndarray,
    lead: np.float32,
    bound: np.float32,
    pattern_lead: np.float32,
    nodata: np.uint8,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``stride4_quads.quad_decisions``' numpy path: per quad of a band (``rows`` / ``cols``: the cells its
    quad rows and columns read, ``Quads``), from its four cells of ``stacked`` (``_cells``: normalised logits,
    weight, coverage, pattern weights): whether it is decided (every cell covered, a clear class within
    ``bound``, the same class and, with pattern weights, the same clear pattern), whether it is empty (no
    covered cell), and its 4x4 pixels' class and pattern code (its top-left cell's; nodata and 0 where
    empty)."""
    channels, cell_rows, cell_cols = stacked.shape
    shares = channels - classes - 2
    fallback = seen[0] if seen.size > 0 else np.uint8(0)
    index = np.zeros((cell_rows, cell_cols), dtype=np.uint8)
    sure = np.zeros((cell_rows, cell_cols), dtype=np.bool_)
    inside = np.zeros((cell_rows, cell_cols), dtype=np.bool_)
    pattern = np.zeros((cell_rows, cell_cols), dtype=np.uint8)
    gap = np.zeros((cell_rows, cell_cols), dtype=np.float32)
    largest = np.zeros((cell_rows, cell_cols), dtype=np.float32)
    for i in range(cell_rows):
        for j in range(cell_cols):
            top = stacked[0, i, j]
            biggest = abs(stacked[0, i, j])
            for ch in range(1, classes):
                value = stacked[ch, i, j]
                size = abs(value)
                if value > top or value != value:
                    top = value
                if size > biggest or size != size:
                    biggest = size
            threshold = np.float32(top - lead)
            count = 0
            chosen = 0
            for ch in range(classes):
                if stacked[ch, i, j] >= threshold:
                    count += 1
                    chosen = ch
            index[i, j] = chosen
            inside[i, j] = stacked[classes + 1, i, j] > 0
            sure[i, j] = inside[i, j] and count == 1 and threshold != np.inf and biggest <= bound
            if shares > 0:
                best = stacked[classes + 2, i, j]
                runner_up = np.float32(-np.inf)
                leader = 0
                for s in range(1, shares):
                    value = stacked[classes + 2 + s, i, j]
                    runner_up = _nan_max(runner_up, _nan_min(best, value))
                    if value > best:
                        leader = s
                    best = _nan_max(best, value)
                pattern[i, j] = leader
                gap[i, j] = np.float32(best - runner_up)
                largest[i, j] = best
    height, width = rows.size - 1, cols.size - 1
    class_map = np.empty((4 * height, 4 * width), dtype=np.uint8)
    pattern_map = np.empty((4 * height, 4 * width), dtype=np.uint8)
    decided = np.empty((height, width), dtype=np.bool_)
    empty = np.empty((height, width), dtype=np.bool_)
    for g in range(height):
        r0, r1 = rows[g], rows[g + 1]
        for f in range(width):
            c0, c1 = cols[f], cols[f + 1]
            held = sure[r0, c0] and sure[r1, c0] and sure[r0, c1] and sure[r1, c1]
            first = index[r0, c0]
            held = held and first == index[r1, c0] and first == index[r0, c1] and first == index[r1, c1]
            if shares > 0:
                least = _nan_min(_nan_min(gap[r0, c0], gap[r1, c0]), _nan_min(gap[r0, c1], gap[r1, c1]))
                most = _nan_max(
                    _nan_max(largest[r0, c0], largest[r1, c0]), _nan_max(largest[r0, c1], largest[r1, c1])
                )
                led = pattern[r0, c0]
                held = held and least >= np.float32(pattern_lead * most)
                held = held and led == pattern[r1, c0] and led == pattern[r0, c1] and led == pattern[r1, c1]
            none = not (inside[r0, c0] or inside[r1, c0] or inside[r0, c1] or inside[r1, c1])
            class_value = nodata if none else index[r0, c0]
            if none:
                pattern_value = np.uint8(0)
            elif shares > 0:
                pattern_value = seen[pattern[r0, c0]]
            else:
                pattern_value = fallback
            decided[g, f] = held
            empty[g, f] = none
            for a in range(4):
                for b in range(4):
                    class_map[4 * g + a, 4 * f + b] = class_value
                    pattern_map[4 * g + a, 4 * f + b] = pattern_value
    return class_map, pattern_map, decided, empty


def warm() -> None:
    """Load (from numba's cache) or compile every kernel for the argument types the runtime passes: float32
    C-contiguous tiles, 2-D boolean masks (an empty one for none), float32 scale/offset (empty for none), a
    blender's gathered quad cells and full-resolution band (an empty one for none).
    ``runtime.kernels`` runs this on a background thread, so no reader thread waits for machine code."""
    tile = np.zeros((2, 8, 8), dtype=np.float32)
    mask, scale = np.ones((8, 8), dtype=np.bool_), np.ones(2, dtype=np.float32)
    cut_normalised(tile, mask, 0, 0, scale, scale, scale, scale, np.empty((2, 4, 4), dtype=np.float32))
    window_valid(tile, mask, scale, scale, 0, 8, 0, 8)
    normalise_in_place(tile, scale, scale)
    crop = np.zeros((2, 10, 10), dtype=np.float32)[:, 1:9, 1:9]  # a dilated read's crop
    for source in (tile, crop):
        normalise_filled(source, scale, scale, mask, mask, np.float32(0.0), np.empty_like(tile))
    finite_pixels(tile)
    codes, where, pixels = (
        np.ones(2, dtype=np.uint8),
        np.arange(4, dtype=np.intp),
        np.zeros((16, 16), np.uint8),
    )
    for shares in (0, 2):
        stacked = np.zeros((4 + shares, 3, 3), dtype=np.float32)  # 2 classes, weight, coverage, shares
        grid = np.arange(3, dtype=np.int64)
        quad_decisions(stacked, grid, grid, 2, codes, *(np.float32(1e-3),) * 3, np.uint8(255))
    for shares, fine in ((0, np.zeros((0, 0, 0, 0), np.float32)), (1, np.zeros((4, 4, 4, 4), np.float32))):
        cells = np.zeros((2, 2, 4 + shares, 4), dtype=np.float32)  # 2 classes, weight, coverage, shares
        quad_pixels(
            cells, 2, shares, codes, fine, np.float32(1e-3), np.uint8(255), where, where, pixels, pixels, fine
        )
