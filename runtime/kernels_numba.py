"""The compiled kernels themselves (numba, ``nogil``: reader threads run them beside the main thread). Import
this module through ``runtime.kernels.compiled``, which decides whether to use it; importing it imports
numba, and a broken numba install fails here, loudly. Each kernel's docstring names the numpy code whose
bits it reproduces."""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["cut_normalised", "finite_pixels", "normalise_in_place", "warm", "window_valid"]

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


def warm() -> None:
    """Load (from numba's cache) or compile every kernel for the argument types the runtime passes: float32
    C-contiguous tiles, 2-D boolean masks (an empty one for none), float32 scale/offset (empty for none).
    ``runtime.kernels`` runs this on a background thread, so no reader thread waits for machine code."""
    tile = np.zeros((2, 8, 8), dtype=np.float32)
    mask, scale = np.ones((8, 8), dtype=np.bool_), np.ones(2, dtype=np.float32)
    cut_normalised(tile, mask, 0, 0, scale, scale, scale, scale, np.empty((2, 4, 4), dtype=np.float32))
    window_valid(tile, mask, scale, scale, 0, 8, 0, 8)
    normalise_in_place(tile, scale, scale)
    finite_pixels(tile)
