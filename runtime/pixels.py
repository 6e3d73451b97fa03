"""Per-pixel kernels over ``(channels, ...)`` stacks: softmax, first-maximum argmax, and the argmax of logits
that is taken instead of the argmax of probabilities where float32 rounding cannot tell them apart.

Every kernel is a function of each pixel's own channel values, computed the same way whatever else the
array holds (a whole tile, an overlap band or a gathered list of pixels), so the blender can apply them to
parts of a tile and get the bits a whole-tile computation gives.
"""

from __future__ import annotations

import numpy as np

#: A pixel's class is read from its logits only where the largest logit leads every other one by at least
#: this much (and is finite). Then softmax cannot round the leader's probability down to a tie with another
#: class's (that needs a lead below ~1e-6: exp's and the division's rounding error), so the argmax of the
#: logits is the argmax of the probabilities. Closer or non-finite pixels go through softmax.
CLEAR_LEAD = 1e-3


def argmax_channels(stack: np.ndarray) -> np.ndarray:
    """``argmax`` over the first axis of ``(channels, ...)`` as ``uint8``, first maximum on ties.

    One vectorised comparison per channel: several times faster than ``np.argmax(axis=0)``, which
    reduces across the slowest-varying axis. The index moves with ``max(index, channel * better)``
    (channels come in increasing order): uint8 arithmetic, ~30x faster than a masked assignment.
    """
    best = stack[0].copy()
    shape = stack.shape[1:]
    index = np.zeros(shape, dtype=np.uint8)
    better = np.empty(shape, dtype=bool)
    step = np.empty(shape, dtype=np.uint8)
    for channel in range(1, stack.shape[0]):
        np.greater(stack[channel], best, out=better)
        np.multiply(better.view(np.uint8), np.uint8(channel), out=step)
        np.maximum(index, step, out=index)
        np.maximum(best, stack[channel], out=best)
    return index


def softmax_channels(logits: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Numerically stable float32 softmax over the first axis of ``(channels, ...)``, into ``out`` (which
    may be ``logits`` itself, or a view of a reused buffer).

    The channel sum is accumulated channel by channel in order, as ``np.sum`` does along a leading axis of a
    3-D or 4-D array (a tile), but not of a 2-D one (gathered pixels are summed pairwise there): so a
    pixel's probabilities are the same bits whichever array it is computed in.
    """
    if out is None:
        out = np.empty(logits.shape, dtype=np.float32)
    top = logits.max(axis=0)
    np.subtract(logits, top, out=out)
    np.exp(out, out=out)
    total = top  # reused: the maxima are no longer needed
    np.copyto(total, out[0])
    for channel in range(1, out.shape[0]):
        total += out[channel]
    out /= total
    return out


def clear_argmax(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(index, unclear)`` for ``(channels, ...)`` logits: ``index`` is the class whose logit leads all
    others by at least ``CLEAR_LEAD`` (uint8), valid where ``unclear`` is False; ``unclear`` marks pixels
    with a closer runner-up, a tie, NaN or an infinite maximum (their index is meaningless)."""
    threshold = logits.max(axis=0)
    np.subtract(threshold, np.float32(CLEAR_LEAD), out=threshold)
    shape = threshold.shape
    count = np.zeros(shape, dtype=np.uint8)
    index = np.zeros(shape, dtype=np.uint8)
    near = np.empty(shape, dtype=bool)
    step = np.empty(shape, dtype=np.uint8)
    for channel in range(logits.shape[0]):
        np.greater_equal(logits[channel], threshold, out=near)  # False everywhere for a NaN maximum
        np.add(count, near.view(np.uint8), out=count)
        np.multiply(near.view(np.uint8), np.uint8(channel), out=step)
        np.maximum(index, step, out=index)  # the last near channel: the only one where count is 1
    unclear = count != 1
    unclear |= threshold == np.inf
    return index, unclear
