"""Bilinear x4 upsampling of stride-4 logits (issue 21), the one definition every consumer shares.

Engines built with ``--logits-stride 4`` return logits at a quarter of the input's size; the model's own
final layer was ``F.interpolate(scale_factor=4, mode="bilinear", align_corners=False)``. ``upsample4`` is
that interpolation in numpy (half-pixel centres, source coordinates clamped at the array's edges), so the
runtime, the accuracy gate, accuracy control and the context-margin measurement score stride-4 engines on
the pixels a stride-1 engine would have produced.
"""

from __future__ import annotations

import numpy as np

from stars_edge.errors import ManifestError

#: Output pixel ``4k + j`` interpolates source cells ``k - 1, k`` (j = 0, 1) or ``k, k + 1`` (j = 2, 3):
#: its source coordinate is ``k + (2j - 3) / 8``. The weight each phase gives the neighbouring cell.
NEIGHBOUR_WEIGHTS = (0.375, 0.125, 0.125, 0.375)
FACTOR = 4
#: A 4x4 quad's pixel ``p`` (0-3 along a row or column, ``upsample4_quads``) is phase ``(p + 2) % 4``: it lies
#: in the first of its two cells for p < 2, and gives the other cell this weight.
QUAD_OWN_CELL = (0, 0, 1, 1)
QUAD_NEIGHBOUR_WEIGHTS = tuple(NEIGHBOUR_WEIGHTS[(p + 2) % FACTOR] for p in range(FACTOR))


def upsample4(array: np.ndarray) -> np.ndarray:
    """``(..., h, w) -> float32 (..., 4h, 4w)``, bilinear with ``align_corners=False`` semantics."""
    return _upsample_axis(_upsample_axis(np.asarray(array, dtype=np.float32), -2), -1)


def _upsample_axis(array: np.ndarray, axis: int) -> np.ndarray:
    """One separable pass along ``axis``: each phase is a fixed two-tap blend of a cell and a neighbour."""
    axis %= array.ndim
    size = array.shape[axis]
    index = np.arange(size)
    before = np.take(array, np.maximum(index - 1, 0), axis=axis)
    after = np.take(array, np.minimum(index + 1, size - 1), axis=axis)
    shape = list(array.shape)
    shape[axis] = FACTOR * size
    out = np.empty(shape, dtype=np.float32)
    lead = (slice(None),) * axis
    for phase, weight in enumerate(NEIGHBOUR_WEIGHTS):
        neighbour = before if phase < 2 else after
        np.multiply(array, np.float32(1.0 - weight), out=out[(*lead, slice(phase, None, FACTOR))])
        out[(*lead, slice(phase, None, FACTOR))] += np.float32(weight) * neighbour
    return out


def upsample4_quads(quads: np.ndarray) -> np.ndarray:
    """``(2, 2, ...) -> float32 (4, 4, ...)``: the pixels of ``upsample4`` that read exactly these 2x2 cells,
    the same bits, for cells gathered from anywhere (the stride-4 blender's pixels near class boundaries).

    Pixels ``4g - 2 .. 4g + 1`` of an axis read cells ``g - 1`` and ``g`` (edge-clamped: the first and last
    two pixels read one cell twice), so ``quads[i, j]`` holds cells ``(g - 1 + i, f - 1 + j)`` and the result
    ``[p, q]`` pixel ``(4g - 2 + p, 4f - 2 + q)``; rows first, as ``upsample4``."""
    return _quads_axis(_quads_axis(np.asarray(quads, dtype=np.float32), 0), 1)


def _quads_axis(pairs: np.ndarray, axis: int) -> np.ndarray:
    """``upsample4``'s two-tap blend along ``axis`` (0 or 1, size 2 -> 4): pixel ``p`` is phase
    ``(p + 2) % 4`` of the first cell (p < 2, the second its neighbour after) or of the second."""
    moved = np.moveaxis(pairs, axis, 0)
    out = np.empty((FACTOR, *moved.shape[1:]), dtype=np.float32)
    for p in range(FACTOR):
        weight, cell = QUAD_NEIGHBOUR_WEIGHTS[p], QUAD_OWN_CELL[p]
        own, neighbour = moved[cell], moved[1 - cell]
        np.multiply(own, np.float32(1.0 - weight), out=out[p])
        out[p] += np.float32(weight) * neighbour
    return np.moveaxis(out, 0, axis)


def input_resolution(logits: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``logits (N, C, h, w)`` of an engine that was fed ``size = (H, W)`` inputs, at ``(H, W)``: unchanged
    from a stride-1 engine, upsampled (``upsample4``) from a stride-4 one; any other size is refused."""
    height, width = logits.shape[-2:]
    if (height, width) == tuple(size):
        return logits
    if (FACTOR * height, FACTOR * width) == tuple(size):
        return upsample4(logits)
    raise ManifestError(
        f"an engine returned logits of {height}x{width} for {size[0]}x{size[1]} inputs; expected the input "
        f"size (stride 1) or a quarter of it (--logits-stride 4)"
    )
