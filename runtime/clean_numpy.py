"""A clean in-memory tile straight into engine inputs with numpy: ``kernels_numba``'s two window functions
(the same signatures and results) for processes without the compiled kernels (issue 21).

The numpy path for an in-memory tile copies it out of the scene, checks it is finite, then normalises the
copy in place: five passes over the tile. A tile whose every pixel is valid (nearly all of a clean scene)
needs no copy to fill holes in, so here the normalisation reads the scene's array and writes the engine
input directly, band by band while the band is in cache, and the finite check reads the normalised band
there: three passes. The float32 operations are the numpy path's, in the same order, so the inputs are the
same bits (``tests/test_runtime_clean_numpy.py``). A window this declines goes the numpy path as before.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cut_normalised", "window_valid"]


def _finite(values: np.ndarray) -> bool:
    """Whether ``values`` holds no NaN or infinity (``isfinite().all()`` on a band in cache: faster than a
    sum, ``min``/``max`` or a dot product)."""
    return bool(np.isfinite(values).all())


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
    if mask.shape[0] > 0 and not mask[y0:y1, x0:x1].all():
        return False
    window = array[:, y0:y1, x0:x1]
    if window.size == 0:
        return True
    values = window.astype(np.float32)
    if scale.shape[0] > 0:
        np.multiply(values, scale[:, None, None], out=values)
        np.add(values, offset[:, None, None], out=values)
    return _finite(values)


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
    """Engine inputs of the ``out``-sized window at ``(top, left)`` of ``array``: ``v = float32(stored)``,
    where ``scale`` is not empty ``v = v * scale + offset``, then ``(v - mean) / std``, the float32
    operations of ``stored_values.apply_scale_offset`` and ``validity.normalize_owned``. False (``out``
    partly written) where ``mask`` (``(H, W)`` booleans, or ``(0, 0)`` for none) is False in the window or
    a value is not finite after scaling (then its normalised value is not finite either). A finite value
    whose normalisation overflows is declined too: the numpy path then decides, so that costs time, never
    bits."""
    bands, rows, cols = out.shape
    if mask.shape[0] > 0 and not mask[top : top + rows, left : left + cols].all():
        return False
    window = array[:, top : top + rows, left : left + cols]
    scaled = scale.shape[0] > 0
    for band in range(bands):
        target = out[band]
        source = window[band]
        if scaled or source.dtype != np.float32:
            np.copyto(target, source, casting="unsafe")  # float32(stored), as ``astype`` rounds it
            if scaled:
                np.multiply(target, scale[band], out=target)
                np.add(target, offset[band], out=target)
            source = target
        with np.errstate(over="ignore"):  # an overflow declines the tile: the numpy path then warns
            np.subtract(source, mean[band], out=target)
            np.divide(target, std[band], out=target)
        if not _finite(target):
            return False
    return True
