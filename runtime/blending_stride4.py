"""Blending at stride 4 (issue 21, opt-in): engines built with ``--logits-stride 4`` return logits at a
quarter of the tile's size, and the scene is blended on that coarse grid and upsampled once per output pixel.

What is blended is the logit field: per coarse cell, the weighted sum of the tiles' logits and of their
weights (the cosine window sampled at the cell centres, which is the full-resolution window there). An
output pixel's logits are ``upsample4(sum of weighted logits) / upsample4(sum of weights)``: bilinear with
half-pixel centres, edge-clamped at the scene's coarse extent, the model's own final ``F.interpolate``. Where
one tile alone covers the pixels (weight 1, a tile's interior) that is exactly what a stride-1 engine gives
(softmax of the upsampled logits); where tiles overlap it averages their logits instead of their
probabilities (identical for a translation-equivariant engine). Classes are the argmax of those logits
(``pixels.clear_argmax``; near-ties through softmax, so they agree with the probabilities output).

Tiles whose inside pixels all have one pattern (nearly all) are blended on the coarse grid. A tile with
several patterns (a cloud hole: a second engine runs on windows) or with nodata pixels is composed at full
resolution from the full-resolution validity, each engine's output upsampled over the window it ran on (what
a stride-1 engine's in-graph upsampling computes), and accumulated in a full-resolution band (allocated at
the first such tile of a chunk) that joins the coarse sums before the division. A pixel is covered when a
coarse tile covers its cell or a full-resolution contribution has weight there; nodata stays nodata.

Bilinear interpolation reads one coarse cell beyond the pixels it fills, so each tile row's output lags two
pixel rows behind ``TileGrid.final_rows`` (those rows wait for the next tile row's overlap), the coarse carry
keeps the cell row above the tile row, and column chunks take the tiles within ``CHUNK_HALO`` px of their
edges (``tiling.plan_chunks``). Tile and overlap must be multiples of 4 with ``tile - 2 * overlap >= 4``
(``check_stride4``), so the lagging rows depend on the previous tile row only and a resume's warm-up row
rebuilds them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from runtime.blending import RowBands
from runtime.outputs import CLASS_NODATA
from runtime.pixels import argmax_channels, clear_argmax, softmax_channels
from runtime.tiling import Chunk, TileGrid, blend_window, plan_chunks
from runtime.upsampling import FACTOR, upsample4
from stars_edge.errors import ConfigError
from stars_edge.modalities import ALL_PATTERNS, Pattern

__all__ = ["CHUNK_HALO", "Stride4Blender", "check_stride4"]

#: Pixels beyond a column chunk's edges whose tiles the chunk also runs: bilinear reads the next cell.
CHUNK_HALO = 2 * FACTOR
#: Pixel rows each tile row's output lags behind ``TileGrid.final_rows`` (half a cell: bilinear's reach).
LAG = FACTOR // 2


def check_stride4(tile: int, overlap: int) -> None:
    """Refuse tilings the stride-4 grid cannot carry (see the module docstring)."""
    if tile % FACTOR or overlap % FACTOR:
        raise ConfigError(
            f"engines built with --logits-stride 4 need --tile and --overlap that are multiples of 4, got "
            f"--tile {tile} --overlap {overlap}"
        )
    if tile - 2 * overlap < FACTOR:
        raise ConfigError(
            f"engines built with --logits-stride 4 need --overlap below half the tile (tile - 2 * overlap "
            f">= 4), got --tile {tile} --overlap {overlap}"
        )


class Stride4Blender:
    """Blends the tiles of one tile row after another, left to right, from stride-4 logits (``RowBlender``'s
    interface: ``start_row``, ``add``, ``finish_row``).

    ``add`` takes ``(classes, T/4, T/4)`` coarse logits, or ``(classes, T, T)`` logits already composed at
    full resolution (``scheduling.infer_tiles`` does that for tiles with several patterns).
    """

    def __init__(
        self,
        grid: TileGrid,
        classes: int,
        probabilities: str | None = None,
        patterns: Sequence[Pattern] = ALL_PATTERNS,
        chunk: Chunk | None = None,
    ) -> None:
        if probabilities not in (None, "uint8", "float32"):
            raise ConfigError(f"probabilities dtype must be uint8 or float32, got {probabilities!r}")
        check_stride4(grid.tile, grid.overlap)
        self.grid = grid
        self.classes = classes
        self.probabilities = probabilities
        self.chunk = chunk or plan_chunks(grid, None)[0]
        t = grid.tile
        self._cell_tile, self._cell_stride = t // FACTOR, grid.stride // FACTOR
        self._coarse_window = blend_window(self._cell_tile, grid.overlap // FACTOR)
        self._window = blend_window(t, grid.overlap)
        # channels: classes weighted logits, the total weight, one weight per declared pattern (index order)
        self._indices = sorted(p.index for p in patterns)
        self._channel = {index: classes + 1 + k for k, index in enumerate(self._indices)}
        self._seen: set[int] = set()
        self._x0 = self.chunk.first_col * grid.stride
        width = (self.chunk.last_col - self.chunk.first_col) * grid.stride + t
        channels = classes + 1 + len(self._indices)
        #: Coarse rows ``[row * stride/4 - 1, row * stride/4 + T/4)`` of the chunk: a cell row of carry above.
        self._coarse = np.zeros((channels, self._cell_tile + 1, width // FACTOR), dtype=np.float32)
        #: Pixel rows ``[row * stride - LAG, row * stride + T)``, for tiles composed at full resolution.
        self._fine: np.ndarray | None = None
        self._fine_shape = (channels, t + LAG, width)
        self._mixed = (False, False)  # whether the previous / current tile row put anything in ``_fine``
        self._cells = (-(-grid.height // FACTOR), -(-grid.width // FACTOR))
        self._row = -1

    def start_row(self, row: int, fresh: bool = False) -> None:
        """Begin tile row ``row``; ``fresh`` drops the carry (the first row, or a resume's warm-up row)."""
        if fresh:
            self._coarse[...] = 0.0
            if self._fine is not None:
                self._fine[...] = 0.0
            self._mixed = (False, False)
        else:
            _shift(self._coarse, self._cell_stride)
            if self._fine is not None and any(self._mixed):
                _shift(self._fine, self.grid.stride)
            self._mixed = (self._mixed[1], False)
        self._row = row

    def add(self, col: int, logits: np.ndarray | None, pattern_index: np.ndarray) -> None:
        """Blend tile ``col`` of the current row (``logits`` None: a tile with no valid pixel)."""
        if logits is None:
            return
        grid, t = self.grid, self.grid.tile
        y, x = grid.origin(self._row, col)
        inside = pattern_index[: grid.height - y, : grid.width - x]
        low = int(inside.min())
        x0 = x - self._x0
        if logits.shape[-1] == self._cell_tile and low == int(inside.max()):
            self._add_coarse(x0 // FACTOR, logits, low)
        else:
            full = logits if logits.shape[-1] == t else upsample4(logits)
            self._add_fine(x0, full, pattern_index)

    def _add_coarse(self, cell_x: int, logits: np.ndarray, index: int) -> None:
        """One pattern on every inside pixel: weighted logits and weights on the tile's cells."""
        self._seen.add(index)
        c, size = self.classes, self._cell_tile
        window = self._coarse_window
        target = self._coarse[:, 1 : 1 + size, cell_x : cell_x + size]
        target[:c] += logits * window
        target[c] += window
        target[self._channel[index]] += window

    def _add_fine(self, x0: int, logits: np.ndarray, pattern_index: np.ndarray) -> None:
        """Logits composed per pixel at full resolution: weighted where the pixel has a pattern."""
        if self._fine is None:
            self._fine = np.zeros(self._fine_shape, dtype=np.float32)
        self._mixed = (self._mixed[0], True)
        c, t = self.classes, self.grid.tile
        weights = self._window * (pattern_index > 0)
        target = self._fine[:, LAG : LAG + t, x0 : x0 + t]
        target[:c] += logits * weights
        target[c] += weights
        for index in np.unique(pattern_index):
            if index:
                self._seen.add(int(index))
                target[self._channel[int(index)]] += np.where(pattern_index == index, weights, 0.0)

    def finish_row(self) -> RowBands:
        """The rows this tile row completes (``LAG`` rows behind ``final_rows``), chunk's final columns."""
        grid, row, c = self.grid, self._row, self.classes
        y0 = 0 if row == 0 else row * grid.stride - LAG
        y1 = grid.height if row == grid.rows - 1 else min(grid.height, (row + 1) * grid.stride - LAG)
        x_start, x_stop = self.chunk.x_start, self.chunk.x_stop
        seen = sorted(self._seen)
        shares = [self._channel[i] for i in seen] if len(seen) > 1 else []
        logits, weight, pattern_weights, covered = self._upsampled(y0, y1, x_start, x_stop, shares)
        if self._fine is not None and any(self._mixed):
            base = row * grid.stride - LAG
            fine = self._fine[:, y0 - base : y1 - base, x_start - self._x0 : x_stop - self._x0]
            total = weight + fine[c]
            logits = (logits * weight + fine[:c]) / np.where(total > 0, total, 1.0)
            pattern_weights = pattern_weights + fine[shares]
            covered = covered | (fine[c] > 0)
        classes = _classes(logits, covered)
        if shares:
            patterns = np.asarray(seen, dtype=np.uint8)[argmax_channels(pattern_weights)]
        else:
            patterns = np.full(covered.shape, seen[0] if seen else 0, dtype=np.uint8)
        patterns[~covered] = 0
        return RowBands(y0, classes, patterns, self._probabilities(logits, covered))

    def _upsampled(
        self, y0: int, y1: int, x0: int, x1: int, shares: list[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Over pixels ``[y0, y1) x [x0, x1)``: the coarse tiles' logits, their weight and the ``shares``
        channels (pattern weights) upsampled, and whether a coarse tile covers each pixel's cell.

        Each cell's logits are normalised (weighted sum / weight) before upsampling, so a tile's logits come
        back unchanged where its window is not 1 (the scene's borders); cells no coarse tile covers are left
        out of the interpolation (normalised convolution: the covered cells' bilinear weights, rescaled)."""
        c = self.classes
        rows, cols = self._cells
        top = max(0, (y0 + LAG) // FACTOR - 1)
        bottom = min(rows - 1, (y1 - 1 + LAG) // FACTOR)
        left = max(0, (x0 + LAG) // FACTOR - 1)
        right = min(cols - 1, (x1 - 1 + LAG) // FACTOR)
        base_row = self._row * self._cell_stride - 1
        base_col = self._x0 // FACTOR
        block = self._coarse[
            :, top - base_row : bottom - base_row + 1, left - base_col : right - base_col + 1
        ]
        weight = block[c]
        inside = weight > 0
        stacked = np.concatenate(
            [block[:c] / np.where(inside, weight, 1.0), block[c : c + 1], inside[None], block[shares]]
        )
        crop = (slice(y0 - FACTOR * top, y1 - FACTOR * top), slice(x0 - FACTOR * left, x1 - FACTOR * left))
        up = upsample4(stacked)[(slice(None), *crop)]
        reach = up[c + 1]
        up /= np.where(reach > 0, reach, 1.0)
        cells = np.repeat(np.repeat(inside, FACTOR, axis=0), FACTOR, axis=1)[crop]
        return up[:c], up[c], up[c + 2 :], cells

    def _probabilities(self, logits: np.ndarray, covered: np.ndarray) -> np.ndarray | None:
        """Softmax of the upsampled logits in the requested dtype (0 / NaN where nothing covers a pixel)."""
        if self.probabilities is None:
            return None
        probs = softmax_channels(logits)
        if self.probabilities == "uint8":
            return np.where(covered, np.rint(probs * 255.0), 0).astype(np.uint8)
        return np.where(covered, probs, np.float32(np.nan)).astype(np.float32)


def _classes(logits: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """The argmax of each covered pixel's probabilities, read from its logits where that is exact."""
    classes, unclear = clear_argmax(logits)
    unclear &= covered
    if unclear.any():
        classes[unclear] = argmax_channels(softmax_channels(logits[:, unclear]))
    classes[~covered] = CLASS_NODATA
    return classes


def _shift(carry: np.ndarray, rows: int) -> None:
    """Move ``carry``'s rows up by ``rows`` (the next tile row's start) and clear the rows that open."""
    kept = carry.shape[1] - rows
    carry[:, :kept] = carry[:, rows:]
    carry[:, kept:] = 0.0
