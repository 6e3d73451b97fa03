"""The tile grid and the blending window.

Tiles start at multiples of ``stride = tile - overlap`` from the top-left corner; the last row and column
run past the raster (the pixels outside are invalid padding and never reach the output). Because the
stride is uniform, neighbouring tiles always share exactly ``overlap`` pixels, and the cosine ramps of two
neighbours sum to one there: blending is a partition of unity, so a translation-equivariant engine gives
the same result tiled and untiled.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from stars_edge.errors import ConfigError

#: Engines take spatial sizes that are multiples of this (the model's largest stride).
SIZE_MULTIPLE = 32


@dataclass(frozen=True)
class TileGrid:
    """Row-major tiles of ``tile`` pixels with ``overlap`` pixels shared between neighbours."""

    height: int
    width: int
    tile: int
    overlap: int

    def __post_init__(self) -> None:
        check_tiling(self.tile, self.overlap)
        if self.height <= 0 or self.width <= 0:
            raise ConfigError(f"cannot tile an empty raster of {self.height}x{self.width} pixels")

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def rows(self) -> int:
        return _count(self.height, self.tile, self.stride)

    @property
    def cols(self) -> int:
        return _count(self.width, self.tile, self.stride)

    @property
    def padded_width(self) -> int:
        """Width covered by the tiles, padding included."""
        return (self.cols - 1) * self.stride + self.tile

    def origin(self, row: int, col: int) -> tuple[int, int]:
        """Top-left pixel ``(y, x)`` of a tile."""
        return row * self.stride, col * self.stride

    def final_rows(self, row: int) -> tuple[int, int]:
        """Rows ``[start, stop)`` of the raster that are complete once tile row ``row`` is blended."""
        start = row * self.stride
        stop = start + (self.tile if row == self.rows - 1 else self.stride)
        return start, min(stop, self.height)

    def __len__(self) -> int:
        return self.rows * self.cols


@dataclass(frozen=True)
class Chunk:
    """A column chunk: tile columns ``[first_col, last_col]`` make the pixels ``[x_start, x_stop)`` final.

    Chunks are processed one after another, each top to bottom, so the blending carry and the pending
    output rows span a chunk's width, not the scene's. Tiles that reach into two chunks run in both (the
    price of memory that does not grow with the width); the pixels each chunk keeps get every tile's
    contribution in the same order as an unchunked run, so the result is identical.
    """

    index: int
    first_col: int
    last_col: int
    x_start: int
    x_stop: int


def plan_chunks(grid: TileGrid, chunk_width: int | None, halo: int = 0) -> list[Chunk]:
    """Split the scene into column chunks of ``chunk_width`` final pixels (one chunk when None or wider).

    ``halo``: a chunk also runs the tiles within that many pixels of its edges (stride-4 blending reads a
    cell beyond the pixels it finishes: ``blending_stride4.CHUNK_HALO``)."""
    if chunk_width is None or chunk_width >= grid.width:
        return [Chunk(0, 0, grid.cols - 1, 0, grid.width)]
    if chunk_width < grid.tile:
        raise ConfigError(f"chunk width {chunk_width} must be at least the tile size {grid.tile}")
    chunks = []
    for index, x_start in enumerate(range(0, grid.width, chunk_width)):
        x_stop = min(x_start + chunk_width, grid.width)
        first = max(0, (x_start - halo - grid.tile) // grid.stride + 1)
        last = min(grid.cols - 1, (x_stop - 1 + halo) // grid.stride)
        chunks.append(Chunk(index, first, last, x_start, x_stop))
    return chunks


def _count(size: int, tile: int, stride: int) -> int:
    return 1 if size <= tile else math.ceil((size - tile) / stride) + 1


def check_tiling(tile: int, overlap: int) -> None:
    """Refuse tile sizes the engines cannot take and overlaps the blender cannot carry."""
    if tile <= 0 or tile % SIZE_MULTIPLE:
        raise ConfigError(f"--tile must be a positive multiple of {SIZE_MULTIPLE}, got {tile}")
    if overlap < 0 or 2 * overlap > tile:
        raise ConfigError(f"--overlap must be between 0 and half the tile ({tile // 2}), got {overlap}")


def ramp_1d(tile: int, overlap: int) -> np.ndarray:
    """1 in the middle, a raised-cosine ramp over ``overlap`` pixels at each end, never exactly zero.

    The rising ramp ``sin^2`` of one tile and the falling ``cos^2`` of its neighbour sum to one.
    """
    weights = np.ones(tile, dtype=np.float64)
    if overlap > 0:
        position = (np.arange(overlap, dtype=np.float64) + 0.5) / overlap
        rising = np.sin(0.5 * np.pi * position) ** 2
        weights[:overlap] = rising
        weights[tile - overlap :] = rising[::-1]
    return weights


def blend_window(tile: int, overlap: int) -> np.ndarray:
    """The 2-D blending weights ``float32 (tile, tile)``: the outer product of two ramps."""
    ramp = ramp_1d(tile, overlap)
    return np.outer(ramp, ramp).astype(np.float32)
