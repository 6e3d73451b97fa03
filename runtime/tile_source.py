"""What a tile source is: the ``RawTile`` it hands out, the ``TileSource`` protocol, and what every source
shares (clipping a tile to the raster, the finite check, the band-count check, the contract's sample size).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

import numpy as np

from runtime import clean_numpy
from runtime.kernels import compiled
from stars_edge.errors import DataError
from stars_edge.modalities import ModalitySpec


@dataclass
class RawTile:
    """One tile before normalisation: physical values, validity, and which pixels lie inside the raster."""

    values: dict[str, np.ndarray]
    valid: dict[str, np.ndarray]
    inside: np.ndarray


class TileSource(Protocol):
    """Anything that can hand out tiles of a scene on one grid."""

    modalities: tuple[str, ...]
    height: int
    width: int

    def read(self, y: int, x: int, size: int) -> RawTile:
        """Tile ``(y, x)`` of ``size`` px, padded beyond the raster; its arrays are new and the caller's to
        change (normalisation works in place)."""
        ...

    def close(self) -> None: ...


#: Windows (per side) and their size sampled to check each modality against the input contract before a
#: run: 9 windows of 128 px (147 k pixels) spread over the scene, each starting on a block of the reference
#: (decoding is the cost, not the pixels: 25 unaligned 64 px windows decoded all 16 blocks of a 2048 px
#: scene with 512 px blocks, 0.33 s; 9 aligned ones decode 9).
RANGE_SAMPLES = 3
RANGE_SAMPLE_PX = 128
#: What the compiled kernels (``runtime/kernels.py``) take for "no validity mask" and "no scale/offset"
#: (numba wants arrays of one type either way).
NO_MASK = np.zeros((0, 0), dtype=bool)
NO_SCALE = np.zeros(0, dtype=np.float32)


def check_band_counts(
    counts: Mapping[str, int], specs: Mapping[str, ModalitySpec], where: Mapping[str, str]
) -> None:
    """Refuse inputs whose band count differs from what the engines were built for."""
    for name, count in counts.items():
        spec = specs.get(name)
        if spec is None:
            raise DataError(
                f"{where[name]}: the engines take no {name} input (they know {', '.join(specs) or 'none'}); "
                f"drop --{name}"
            )
        if count != spec.bands:
            raise DataError(
                f"{where[name]} has {count} band(s) but the engines expect {spec.bands} {name} band(s) "
                f"({', '.join(spec.band_names)}); pass data with those bands"
            )


def clip_tile(y: int, x: int, size: int, height: int, width: int) -> tuple[int, int]:
    """Height and width of the part of a ``size`` tile at ``(y, x)`` that lies inside the raster."""
    return max(0, min(size, height - y)), max(0, min(size, width - x))


def finite_valid(values: np.ndarray) -> np.ndarray:
    """Pixels whose every band is finite (no NaN, no inf)."""
    contiguous = values.dtype == np.float32 and values.ndim == 3 and values.flags.c_contiguous
    kernels = compiled() if contiguous else None  # on a view numba cannot vectorise
    if kernels is not None:
        return np.asarray(kernels.finite_pixels(values))
    return np.isfinite(values).all(axis=0)


def ring(y: int, x: int, size: int, radius: int, height: int, width: int) -> list[tuple[int, int, int, int]]:
    """``(y0, y1, x0, x1)`` strips of the pixels within ``radius`` around tile ``(y, x)``, inside the
    raster: where a hole would grow into the tile when its modality is dilated by ``radius``."""
    y0, y1 = max(0, y - radius), min(height, y + size + radius)
    x0, x1 = max(0, x - radius), min(width, x + size + radius)
    return [
        (y0, y, x0, x1),
        (y + size, y1, x0, x1),
        (y, y + size, x0, x),
        (y, y + size, x + size, x1),
    ]


def clean_window(
    kernels: ModuleType,
    array: np.ndarray,
    mask: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    top: int,
    left: int,
    size: int,
    spec: ModalitySpec,
    strips: list[tuple[int, int, int, int]],
    out: np.ndarray | None = None,
) -> np.ndarray | None:
    """One modality of a clean tile through ``kernels`` (``kernels_numba``, or ``clean_numpy`` for in-memory
    arrays without them): ``spec``-normalised float32 inputs of the
    ``size`` px window at ``(top, left)`` of ``array`` (array coordinates), or None as soon as a pixel of
    the window or of the ``strips`` around it (``ring``, array coordinates) is invalid. Into ``out`` (a
    ``GroupBuffers`` slot) where given."""
    if not array.dtype.isnative:  # numba cannot type the other byte order; numpy reads it right
        kernels = clean_numpy
    if not all(kernels.window_valid(array, mask, scale, offset, *strip) for strip in strips):
        return None
    if out is None or out.shape != (spec.bands, size, size):
        out = np.empty((spec.bands, size, size), dtype=np.float32)
    mean, std = (np.asarray(v, dtype=np.float32) for v in (spec.mean, spec.std))
    if not kernels.cut_normalised(array, mask, top, left, scale, offset, mean, std, out):
        return None
    return out
