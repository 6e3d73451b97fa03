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
