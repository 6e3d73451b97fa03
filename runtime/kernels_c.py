"""The runtime's C kernels (``runtime/_kernels_c.c``, built at install) behind ``kernels_numba``'s functions:
the same signatures, the same results, the same bits. Import this module through
``runtime.kernels.compiled``, which decides whether to use it; importing it loads the library (about a
millisecond, against numba's second) and fails loudly where it is missing or built from other sources.

Calls go through ctypes, which releases the GIL for each. The C code reads arrays whose last axis is
contiguous; other layouts and source types it has no loop for go to ``clean_numpy`` (the same rule and
bits), so a caller never has to know."""

from __future__ import annotations

import ctypes
import importlib.util
from typing import Any

import numpy as np

from runtime import clean_numpy
from runtime.kernels import rows_contiguous
from runtime.upsampling import QUAD_NEIGHBOUR_WEIGHTS, QUAD_OWN_CELL

__all__ = [
    "cut_normalised",
    "finite_pixels",
    "library_path",
    "normalise_filled",
    "normalise_in_place",
    "quad_decisions",
    "quad_pixels",
    "window_valid",
]

#: The C sources' ``KERNELS_ABI``: a library built from other sources is refused, not called.
ABI = 4
#: Source types the C code has loops for (``SOURCE_KERNELS`` in ``_kernels_c.c``).
SOURCE_TYPES = ("float32", "float64", "uint8", "int8", "uint16", "int16", "uint32", "int32")

_POINTER, _INT, _FLOAT = ctypes.c_void_p, ctypes.c_int64, ctypes.c_float
#: What both source kernels take first: the array, its band and row strides, the mask and its row stride,
#: scale and offset (``_source_arguments``).
_SOURCE = (_POINTER, _INT, _INT, _POINTER, _INT, _POINTER, _POINTER)


def _address(array: np.ndarray) -> int:
    return int(array.__array_interface__["data"][0])


def library_path() -> str | None:
    """Where the install put the compiled library (``runtime._kernels_c``), or None where it was not built."""
    spec = importlib.util.find_spec("runtime._kernels_c")
    return None if spec is None or spec.origin is None else spec.origin


def _load() -> tuple[ctypes.CDLL, dict[str, Any], dict[str, Any]]:
    """The library, its ``cut_normalised`` and ``window_valid`` functions per source type (looked up once,
    not per call on the readers' hot path), after the ABI and rounding checks."""
    path = library_path()
    if path is None:
        raise ImportError("runtime._kernels_c was not built (no C compiler at install)")
    library = ctypes.CDLL(path)
    library.kernels_abi.restype = _INT
    if library.kernels_abi() != ABI:
        raise ImportError(f"{path} was built from other sources (ABI {library.kernels_abi()}, want {ABI})")
    cuts, valids = {}, {}
    for name in SOURCE_TYPES:
        cut = cuts[name] = getattr(library, f"cut_normalised_{name}")
        cut.argtypes = [*_SOURCE, _INT, _INT, _POINTER, _POINTER, _POINTER, _INT, _INT, _INT]
        cut.restype = ctypes.c_int
        valid = valids[name] = getattr(library, f"window_valid_{name}")
        valid.argtypes = [*_SOURCE, _INT, _INT, _INT, _INT, _INT]
        valid.restype = ctypes.c_int
    library.normalise_in_place.argtypes = [_POINTER, _INT, _INT, _POINTER, _POINTER]
    library.normalise_in_place.restype = None
    library.normalise_filled.argtypes = [
        *(_POINTER, _INT, _INT, _INT, _INT, _INT, _POINTER, _POINTER, _POINTER, _POINTER, _FLOAT, _POINTER)
    ]
    library.normalise_filled.restype = None
    library.finite_pixels.argtypes = [_POINTER, _INT, _INT, _POINTER]
    library.finite_pixels.restype = None
    library.quad_pixels.argtypes = [
        *(_POINTER, _INT, _INT, _INT, _INT, _POINTER, _INT, _POINTER, _FLOAT, ctypes.c_uint8),
        *(_POINTER, _POINTER, _POINTER, _INT, _POINTER, _INT, _POINTER, _POINTER, _POINTER, _POINTER),
    ]
    library.quad_pixels.restype = ctypes.c_int
    library.quad_decisions.argtypes = [
        *(_POINTER, _INT, _INT, _INT, _INT, _POINTER, _INT, _POINTER, _INT, _POINTER, _INT),
        *(_FLOAT, _FLOAT, _FLOAT, ctypes.c_uint8, _POINTER, _POINTER, _POINTER, _POINTER),
    ]
    library.quad_decisions.restype = ctypes.c_int
    if not _rounds_like_numpy(library):
        raise ImportError(
            f"{path} rounds differently from numpy (compiled with fused multiply-add? setup.py builds it "
            "with -ffp-contract=off); rebuild it with that flag"
        )
    return library, cuts, valids


def _rounds_like_numpy(library: ctypes.CDLL) -> bool:
    """Whether the library's scale/offset multiply-add gives numpy's bits on values where a fused
    multiply-add would not (about half of these): a library built with other flags is refused, not
    trusted."""
    stored = np.random.default_rng(21).integers(1, 65535, size=(1, 1, 256)).astype(np.uint16)
    scale, offset = np.array([1e-4], np.float32), np.array([-0.1], np.float32)
    mean, std = np.array([0.0], np.float32), np.array([1.0], np.float32)
    out = np.empty((1, 1, 256), dtype=np.float32)
    library.cut_normalised_uint16(
        _address(stored),
        256,
        256,
        None,
        0,
        _address(scale),
        _address(offset),
        0,
        0,
        *map(_address, (mean, std, out)),
        1,
        1,
        256,
    )
    want = stored.astype(np.float32) * scale[0]
    want += offset[0]
    return out.tobytes() == want.tobytes()


_LIBRARY, _CUT, _VALID = _load()
_NEIGHBOUR_WEIGHT = np.array(QUAD_NEIGHBOUR_WEIGHTS, dtype=np.float32)
_OWN_CELL = np.array(QUAD_OWN_CELL, dtype=np.int64)


def _source_arguments(
    array: np.ndarray, mask: np.ndarray, scale: np.ndarray, offset: np.ndarray
) -> tuple[list[Any], list[np.ndarray]] | None:
    """The source kernels' first arguments (``_SOURCE``) and the arrays that must live through the call, or
    None where the C loops do not read these arrays (a source type without a loop, columns not contiguous,
    a mask that is not booleans with contiguous rows): the caller then takes ``clean_numpy``."""
    if array.dtype.name not in SOURCE_TYPES or not rows_contiguous(array):
        return None
    held = [np.ascontiguousarray(scale, np.float32), np.ascontiguousarray(offset, np.float32)]
    scales: list[Any] = [_address(held[0]), _address(held[1])] if scale.shape[0] else [None, None]
    item = array.itemsize
    arguments: list[Any] = [_address(array), array.strides[0] // item, array.strides[1] // item]
    if mask.shape[0] == 0:
        return [*arguments, None, 0, *scales], held
    if mask.dtype != np.bool_ or not rows_contiguous(mask):
        return None
    return [*arguments, _address(mask), mask.strides[0], *scales], held


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
    """``kernels_numba.cut_normalised``."""
    source = _source_arguments(array, mask, scale, offset)
    if source is None or out.dtype != np.float32 or not out.flags.c_contiguous:
        return clean_numpy.cut_normalised(array, mask, top, left, scale, offset, mean, std, out)
    stats = (np.ascontiguousarray(mean, np.float32), np.ascontiguousarray(std, np.float32))
    targets = (_address(stats[0]), _address(stats[1]), _address(out))
    return bool(_CUT[array.dtype.name](*source[0], top, left, *targets, *out.shape))


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
    """``kernels_numba.window_valid``."""
    source = _source_arguments(array, mask, scale, offset)
    if source is None:
        return clean_numpy.window_valid(array, mask, scale, offset, y0, y1, x0, x1)
    return bool(_VALID[array.dtype.name](*source[0], array.shape[0], y0, y1, x0, x1))


def normalise_in_place(data: np.ndarray, mean: np.ndarray, std: np.ndarray) -> None:
    """``kernels_numba.normalise_in_place`` (``data``: C-contiguous float32 ``(bands, H, W)``)."""
    if data.dtype != np.float32 or not data.flags.c_contiguous:
        raise ValueError("normalise_in_place takes a C-contiguous float32 array")
    stats = (np.ascontiguousarray(mean, np.float32), np.ascontiguousarray(std, np.float32))
    plane = data[0].size if data.shape[0] else 0
    _LIBRARY.normalise_in_place(_address(data), data.shape[0], plane, _address(stats[0]), _address(stats[1]))


def normalise_filled(
    data: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    holes: np.ndarray,
    inside: np.ndarray,
    fill: np.float32,
    out: np.ndarray,
) -> None:
    """``kernels_numba.normalise_filled`` (``data``: float32 ``(bands, H, W)`` with contiguous rows; ``out``:
    C-contiguous float32 of its shape; ``holes`` / ``inside``: C-contiguous bool ``(H, W)`` or empty)."""
    if data.dtype != np.float32 or data.ndim != 3 or not rows_contiguous(data):
        raise ValueError("normalise_filled takes float32 (bands, H, W) data with contiguous rows")
    if out.dtype != np.float32 or out.shape != data.shape or not out.flags.c_contiguous:
        raise ValueError("normalise_filled writes a C-contiguous float32 array of the data's shape")
    masks = []
    for mask in (holes, inside):
        shaped = mask.dtype == np.bool_ and mask.shape == data.shape[1:] and mask.flags.c_contiguous
        if mask.size and not shaped:
            raise ValueError("normalise_filled takes C-contiguous boolean (H, W) masks (or empty ones)")
        masks.append(_address(mask) if mask.size else None)
    stats = (np.ascontiguousarray(mean, np.float32), np.ascontiguousarray(std, np.float32))
    _LIBRARY.normalise_filled(
        _address(data),
        *data.shape,
        data.strides[0] // 4,
        data.strides[1] // 4,
        *map(_address, stats),
        *masks,
        float(fill),
        _address(out),
    )


def finite_pixels(values: np.ndarray) -> np.ndarray:
    """``kernels_numba.finite_pixels`` (``values``: C-contiguous float32 ``(bands, H, W)``)."""
    if values.dtype != np.float32 or not values.flags.c_contiguous:
        raise ValueError("finite_pixels takes a C-contiguous float32 array")
    out = np.empty(values.shape[1:], dtype=np.bool_)
    _LIBRARY.finite_pixels(_address(values), values.shape[0], out.size, _address(out))
    return out


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
    """``kernels_numba.quad_pixels``: the same arguments, the same writes, the same bits."""
    for name, array in (("class_map", class_map), ("pattern_map", pattern_map)):
        if array.dtype != np.uint8 or not rows_contiguous(array):
            raise ValueError(f"quad_pixels writes into a uint8 {name} with contiguous rows")
    if logits_out.shape[0] > 0 and (logits_out.dtype != np.float32 or not logits_out.flags.c_contiguous):
        raise ValueError("quad_pixels writes logits into a C-contiguous float32 array")
    cells_c, seen_c, fine_c = (
        np.ascontiguousarray(a, t) for a, t in ((cells, np.float32), (seen, np.uint8), (fine, np.float32))
    )
    qy_c, qx_c = np.ascontiguousarray(qy, np.int64), np.ascontiguousarray(qx, np.int64)
    n = cells_c.shape[3]
    redo = np.empty(n, dtype=np.bool_)
    status = _LIBRARY.quad_pixels(
        _address(cells_c),
        cells_c.shape[2],
        n,
        classes,
        shares,
        _address(seen_c),
        seen_c.shape[0],
        _address(fine_c) if fine_c.shape[0] > 0 else None,
        float(lead),
        int(nodata),
        _address(qy_c),
        _address(qx_c),
        _address(class_map),
        class_map.strides[0],
        _address(pattern_map),
        pattern_map.strides[0],
        _address(logits_out) if logits_out.shape[0] > 0 else None,
        _address(_NEIGHBOUR_WEIGHT),
        _address(_OWN_CELL),
        _address(redo),
    )
    if status != 0:
        raise MemoryError(f"quad_pixels: no memory for {n} quads' work arrays")
    return redo


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
    """``kernels_numba.quad_decisions``: the same arguments, the same results."""
    if stacked.dtype != np.float32 or stacked.ndim != 3 or not stacked.flags.c_contiguous:
        raise ValueError("quad_decisions takes a C-contiguous float32 (channels, rows, cols) array")
    rows_c, cols_c = np.ascontiguousarray(rows, np.int64), np.ascontiguousarray(cols, np.int64)
    seen_c = np.ascontiguousarray(seen, np.uint8)
    height, width = rows_c.size - 1, cols_c.size - 1
    class_map = np.empty((4 * height, 4 * width), dtype=np.uint8)
    pattern_map = np.empty((4 * height, 4 * width), dtype=np.uint8)
    decided = np.empty((height, width), dtype=np.bool_)
    empty = np.empty((height, width), dtype=np.bool_)
    status = _LIBRARY.quad_decisions(
        _address(stacked),
        *stacked.shape,
        classes,
        _address(rows_c),
        height,
        _address(cols_c),
        width,
        _address(seen_c) if seen_c.size else None,
        seen_c.size,
        float(lead),
        float(bound),
        float(pattern_lead),
        int(nodata),
        *map(_address, (class_map, pattern_map, decided, empty)),
    )
    if status != 0:
        raise MemoryError(f"quad_decisions: no memory for {stacked.shape[1] * stacked.shape[2]} cells' flags")
    return class_map, pattern_map, decided, empty
