"""Tiles with several patterns at stride 4 (a cloud's window engine inside a tile), split between the coarse
grid and full-resolution pixels (``runtime/blending_stride4.py`` blends them).

A stride-1 engine gives each pixel its own pattern's logits, upsampled in the graph from that engine's
stride-4 cells over the tile or window it ran on. Bilinear upsampling reads a pixel's own cell and its
nearer neighbours (``upsampling.upsample4``), so where a pixel's 2x2 cells all hold one engine run's output
for the pixel's own pattern, interpolating the coarse grid gives it exactly; only the pixels near a pattern
boundary (or a window's edge) need their value computed per pixel. ``split`` sorts a tile's cells and pixels:

- **pure cells** (every pixel inside the raster of one pattern, inside that pattern's engine run) go to the
  coarse grid with that engine's logits;
- **mixed cells** (several patterns) go nowhere: their engines' values there are not clean for every pixel
  of the cell, and a neighbouring tile's pixels would otherwise read them through the blend;
- **boundary pixels** (a pixel whose 2x2 cells are not all pure cells of its own pattern's run) get their
  own engine's logits upsampled at full resolution, which replace the coarse value there.

So no pixel takes logits from an engine of another pattern, and fills put into invalid pixels reach no pixel
beyond the context margin (``tests/test_runtime_stride4.py``), at a cost that follows the boundary's length
instead of the tile's area.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from runtime.upsampling import FACTOR, upsample4

__all__ = ["Box", "PatchedTile", "Split", "split"]

#: A pixel box ``(y0, y1, x0, x1)`` (of the scene, or of a tile where said).
Box = tuple[int, int, int, int]


@dataclass(frozen=True)
class PatchedTile:
    """A tile with several patterns from stride-4 engines: per engine run on it, the tile box it ran on (the
    whole tile or a window, on the 4-px grid), the pattern index and the coarse logits ``(classes, h/4,
    w/4)``. Every pixel of a pattern lies inside one of that pattern's boxes."""

    parts: list[tuple[Box, int, np.ndarray]]

    def composed(self, pattern_index: np.ndarray) -> np.ndarray:
        """Full-resolution logits ``(classes, T, T)``, each pixel from its pattern's engine run upsampled over
        the box it ran on (0 where no pattern: nodata)."""
        classes = self.parts[0][2].shape[0]
        full = np.zeros((classes, *pattern_index.shape), dtype=np.float32)
        for (y0, y1, x0, x1), index, coarse in self.parts:
            where = (pattern_index[y0:y1, x0:x1] == index)[None]
            np.copyto(full[:, y0:y1, x0:x1], upsample4(coarse), where=where)
        return full


@dataclass(frozen=True)
class Split:
    """A patched tile sorted for the stride-4 blender: ``cells`` ``(classes, T/4, T/4)`` holds the engine
    logits of the pure cells, whose pattern index ``cell_index`` gives (0: the cell goes nowhere);
    ``boundary`` lists per engine run the tile box of its boundary pixels, the pattern index, their
    full-resolution logits ``(classes, h, w)`` and which of the box's pixels they are."""

    cells: np.ndarray
    cell_index: np.ndarray
    boundary: list[tuple[Box, int, np.ndarray, np.ndarray]]


def split(tile: PatchedTile, pattern_index: np.ndarray, inside: tuple[int, int]) -> Split:
    """Sort ``tile`` (``pattern_index`` ``(T, T)``, its first ``inside`` rows and columns in the raster)."""
    size = pattern_index.shape[0]
    n = size // FACTOR
    classes = tile.parts[0][2].shape[0]
    in_raster = np.zeros(pattern_index.shape, dtype=bool)
    in_raster[: inside[0], : inside[1]] = True
    by_cell = (n, FACTOR, n, FACTOR)
    low = np.where(in_raster, pattern_index, 255).reshape(by_cell).min(axis=(1, 3))
    high = np.where(in_raster, pattern_index, 0).reshape(by_cell).max(axis=(1, 3))
    cell_pattern = np.where(low == high, low, 0)  # cells wholly outside the raster: 255 > 0, not pure
    cells = np.zeros((classes, n, n), dtype=np.float32)
    cell_index = np.zeros((n, n), dtype=np.uint8)
    region = np.zeros((n, n), dtype=np.int32)  # which engine run a pure cell's logits come from (1-based)
    for number, ((y0, y1, x0, x1), index, coarse) in enumerate(tile.parts, start=1):
        window = (slice(y0 // FACTOR, y1 // FACTOR), slice(x0 // FACTOR, x1 // FACTOR))
        ours = cell_pattern[window] == index
        cells[(slice(None), *window)][:, ours] = coarse[:, ours]
        cell_index[window][ours] = index
        region[window][ours] = number
    boundary_pixels = (pattern_index > 0) & in_raster & ~_clean_pixels(region)
    boundary = []
    for (y0, y1, x0, x1), index, coarse in tile.parts:
        mine = boundary_pixels[y0:y1, x0:x1] & (pattern_index[y0:y1, x0:x1] == index)
        rows, cols = np.flatnonzero(mine.any(axis=1)), np.flatnonzero(mine.any(axis=0))
        if not rows.size:
            continue
        top, bottom = rows[0] // FACTOR, rows[-1] // FACTOR + 1  # the box's cells holding them
        left, right = cols[0] // FACTOR, cols[-1] // FACTOR + 1
        logits = _upsampled_cells(coarse, top, bottom, left, right)
        box = (y0 + FACTOR * top, y0 + FACTOR * bottom, x0 + FACTOR * left, x0 + FACTOR * right)
        part = mine[FACTOR * top : FACTOR * bottom, FACTOR * left : FACTOR * right]
        boundary.append((box, index, logits, part))
    return Split(cells, cell_index, boundary)


def _clean_pixels(region: np.ndarray) -> np.ndarray:
    """``(T, T)``: pixels whose 2x2 cells (own, and the nearer neighbours within the tile) are pure cells of
    one engine run. A pixel in the first half of its cell reads the cell before, in the second the one
    after, per axis; neighbours beyond the tile do not count (the neighbouring tile covers them)."""
    n = region.shape[0]
    padded = np.pad(region, 1, mode="edge")
    own = padded[1:-1, 1:-1]
    quarters = np.empty((n, 2, n, 2), dtype=bool)
    for a, dy in enumerate((-1, 1)):
        for b, dx in enumerate((-1, 1)):
            row = padded[1 + dy : 1 + dy + n, 1 : 1 + n]
            col = padded[1 : 1 + n, 1 + dx : 1 + dx + n]
            diagonal = padded[1 + dy : 1 + dy + n, 1 + dx : 1 + dx + n]
            quarters[:, a, :, b] = (own > 0) & (row == own) & (col == own) & (diagonal == own)
    half = FACTOR // 2
    return np.repeat(np.repeat(quarters, half, axis=1), half, axis=3).reshape(n * FACTOR, n * FACTOR)


def _upsampled_cells(coarse: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """``upsample4(coarse)`` over cells ``[top, bottom) x [left, right)``, computed from those cells and one
    more on each side (the same bits: each pixel reads its own cell and a neighbour, clamped at the run's
    edges)."""
    height, width = coarse.shape[1:]
    y0, y1 = max(0, top - 1), min(height, bottom + 1)
    x0, x1 = max(0, left - 1), min(width, right + 1)
    up = upsample4(coarse[:, y0:y1, x0:x1])
    return up[:, FACTOR * (top - y0) : FACTOR * (bottom - y0), FACTOR * (left - x0) : FACTOR * (right - x0)]
