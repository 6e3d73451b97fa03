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

from runtime.upsampling import FACTOR, upsample4, upsample4_quads

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
    ``boundary`` lists per engine run the tile box of its boundary pixels, the pattern index, their rows and
    columns in that box and their full-resolution logits ``(classes, n)``."""

    cells: np.ndarray
    cell_index: np.ndarray
    boundary: list[tuple[Box, int, np.ndarray, np.ndarray, np.ndarray]]


def split(tile: PatchedTile, pattern_index: np.ndarray) -> Split:
    """Sort ``tile`` (``pattern_index`` ``(T, T)``: 0 only on padding beyond the raster, whose cells are not
    pure, so pixels next to the raster's edge are boundary pixels when its size is not a multiple of 4)."""
    n = pattern_index.shape[0] // FACTOR
    classes = tile.parts[0][2].shape[0]
    low, high = _per_cell(np.minimum, pattern_index), _per_cell(np.maximum, pattern_index)
    cell_pattern = np.where(low == high, low, 0)
    cells = np.zeros((classes, n, n), dtype=np.float32)
    cell_index = np.zeros((n, n), dtype=np.uint8)
    region = np.zeros((n, n), dtype=np.int32)  # which engine run a pure cell's logits come from (1-based)
    for number, ((y0, y1, x0, x1), index, coarse) in enumerate(tile.parts, start=1):
        window = (slice(y0 // FACTOR, y1 // FACTOR), slice(x0 // FACTOR, x1 // FACTOR))
        ours = cell_pattern[window] == index
        np.copyto(cells[(slice(None), *window)], coarse, where=ours[None])  # 10x a boolean gather + scatter
        cell_index[window][ours] = index
        region[window][ours] = number
    boundary_pixels = (pattern_index > 0) & ~_clean_pixels(region)
    boundary = []
    for (y0, y1, x0, x1), index, coarse in tile.parts:
        mine = boundary_pixels[y0:y1, x0:x1] & (pattern_index[y0:y1, x0:x1] == index)
        if mine.any():
            rows, cols, logits = _upsampled_pixels(coarse, mine)
            top, left = int(rows.min()), int(cols.min())
            box = (y0 + top, y0 + int(rows.max()) + 1, x0 + left, x0 + int(cols.max()) + 1)
            boundary.append((box, index, rows - top, cols - left, logits))
    return Split(cells, cell_index, boundary)


def _per_cell(combine: np.ufunc, array: np.ndarray) -> np.ndarray:
    """``combine`` (a binary ufunc: minimum, maximum, logical_or) over each 4x4 block of ``array``, as 16
    strided slices: several times faster than a reduction over a reshaped array's two inner axes."""
    out = array[::FACTOR, ::FACTOR].copy()
    for a in range(FACTOR):
        for b in range(FACTOR):
            if a or b:
                combine(out, array[a::FACTOR, b::FACTOR], out=out)
    return out


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


def _upsampled_pixels(coarse: np.ndarray, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns and logits ``(classes, n)`` of the ``pixels`` (of a run's box) in ``upsample4(coarse)``:
    the quads holding them, each from its own 2x2 cells (``upsample4_quads``, the same bits); the cost
    follows the boundary's length, not the box's area."""
    classes, height, width = coarse.shape
    half = FACTOR // 2
    padded = np.zeros((FACTOR * (height + 1), FACTOR * (width + 1)), dtype=bool)
    padded[half : half + FACTOR * height, half : half + FACTOR * width] = pixels
    qy, qx = np.nonzero(_per_cell(np.logical_or, padded))
    cells = np.empty((2, 2, classes, qy.size), dtype=np.float32)
    for i in (0, 1):
        for j in (0, 1):
            cells[i, j] = coarse[:, np.clip(qy - 1 + i, 0, height - 1), np.clip(qx - 1 + j, 0, width - 1)]
    up = np.moveaxis(upsample4_quads(cells), 2, -1)  # (4, 4, n, classes): quad pixel (p, q) of each quad
    step = np.arange(FACTOR)
    rows = np.broadcast_to((FACTOR * qy - half)[None, None, :] + step[:, None, None], up.shape[:3])
    cols = np.broadcast_to((FACTOR * qx - half)[None, None, :] + step[None, :, None], up.shape[:3])
    chosen = (rows >= 0) & (rows < FACTOR * height) & (cols >= 0) & (cols < FACTOR * width)
    chosen[chosen] = pixels[rows[chosen], cols[chosen]]
    return rows[chosen], cols[chosen], np.ascontiguousarray(up[chosen].T)
