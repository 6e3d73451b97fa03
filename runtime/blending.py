"""Overlap blending with a carry band: weighted probabilities accumulate, finished pixels leave at once.

Memory holds ``overlap`` rows of accumulators across one column chunk (the carry into the next tile row,
updated in place) and one tile of working space, so it grows neither with the scene's height nor, once the
scene is wider than a chunk, with its width. Accumulator channels: ``classes`` weighted probabilities,
then the blending weight contributed by each pattern the scene can produce (their sum normalises the
probabilities; the pattern map reports the pattern with the largest share, the one that dominates the
pixel's blend).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from runtime.outputs import CLASS_NODATA
from runtime.tiling import Chunk, TileGrid, blend_window, plan_chunks
from stars_edge.errors import ConfigError
from stars_edge.modalities import ALL_PATTERNS, Pattern


def argmax_channels(stack: np.ndarray) -> np.ndarray:
    """``argmax`` over the first axis of ``(channels, H, W)`` as ``uint8``, first maximum on ties.

    One vectorised comparison per channel: several times faster than ``np.argmax(axis=0)``, which
    reduces across the slowest-varying axis.
    """
    best = stack[0].copy()
    index = np.zeros(stack.shape[1:], dtype=np.uint8)
    for channel in range(1, stack.shape[0]):
        better = stack[channel] > best
        index[better] = channel
        np.maximum(best, stack[channel], out=best)
    return index


@dataclass
class RowBands:
    """Finished rows ``[start, start + rows)`` of one tile row, cropped to the raster width."""

    start: int
    classes: np.ndarray
    patterns: np.ndarray
    probabilities: np.ndarray | None


class RowBlender:
    """Blends the tiles of one tile row after another, left to right.

    ``patterns`` lists the patterns tiles may carry (default: all 7); fewer means fewer accumulator channels.
    ``chunk`` restricts it to one column chunk (default: the whole width).
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
        self.grid = grid
        self.classes = classes
        self.probabilities = probabilities
        self.window = blend_window(grid.tile, grid.overlap)
        self._declared = {p.index for p in patterns}
        # Pattern channels are added when a pattern first appears (in index order, so ties resolve as if
        # all were there): a scene with one or two patterns blends 1-2 weight channels, not 7.
        self._indices = np.zeros(0, dtype=np.uint8)
        self._channel_of: dict[int, int] = {}
        self._channels = classes
        self.chunk = chunk or plan_chunks(grid, None)[0]
        self._x0 = self.chunk.first_col * grid.stride
        self._width = (self.chunk.last_col - self.chunk.first_col) * grid.stride + grid.tile
        self._carry = np.zeros((self._channels, grid.overlap, self._width), dtype=np.float32)
        self._col_carry: np.ndarray | None = None
        self._row = -1
        self._classes = np.empty((0, 0), dtype=np.uint8)
        self._patterns = np.empty((0, 0), dtype=np.uint8)
        self._probs: np.ndarray | None = None

    def start_row(self, row: int, fresh: bool = False) -> None:
        """Begin tile row ``row``; ``fresh`` drops the carry (the first row, or a resume's warm-up row)."""
        if fresh:
            self._carry[...] = 0.0
        self._col_carry = None
        self._row = row
        start, stop = self.grid.final_rows(row)
        rows = self.grid.tile if row == self.grid.rows - 1 else self.grid.stride
        width = self._width
        self._start = start
        self._rows_kept = stop - start
        if self._classes.shape[0] != rows:  # row arrays are reused: allocated for stride rows, then tile rows
            self._classes = np.empty((rows, width), dtype=np.uint8)
            self._patterns = np.empty((rows, width), dtype=np.uint8)
            if self.probabilities is not None:
                self._probs = np.empty((self.classes, rows, width), dtype=self.probabilities)
        self._classes.fill(CLASS_NODATA)
        self._patterns.fill(0)
        if self._probs is not None:
            self._probs.fill(0)

    def add(self, col: int, probabilities: np.ndarray | None, pattern_index: np.ndarray) -> None:
        """Blend tile ``col`` of the current row: ``probabilities (classes, T, T)`` and the per-pixel pattern
        index (0 where the tile has no prediction); ``probabilities`` None for a tile with no valid pixel.

        The carry is read for columns ``[x0 (+overlap), x0 + T)`` and rewritten for ``[x0, x0 + stride)``,
        which every earlier or current tile has already read, so one array serves as carry in and out.
        """
        grid, t, o, s = self.grid, self.grid.tile, self.grid.overlap, self.grid.stride
        c = self.classes
        x0 = col * s - self._x0
        present = np.zeros(0, dtype=np.intp)
        if probabilities is not None:
            present = np.flatnonzero(np.bincount(pattern_index.ravel(), minlength=8)[1:]) + 1
            for index in present:
                self._add_channel(int(index))
        local = np.zeros((self._channels, t, t), dtype=np.float32)
        first = 0 if col == self.chunk.first_col else o
        local[:, :o, first:] = self._carry[:, :, x0 + first : x0 + t]
        if self._col_carry is not None:
            local[:, :, :o] = self._col_carry
        if probabilities is not None:
            weights = self.window * (pattern_index > 0)
            local[:c] += probabilities * weights
            for index in present:
                channel = self._channel_of[int(index)]
                if len(present) == 1:
                    local[channel] += weights
                else:
                    local[channel] += np.where(pattern_index == index, weights, 0.0)
        last_row = self._row == grid.rows - 1
        last_col = col == self.chunk.last_col
        rows_final = t if last_row else s
        cols_final = t if col == grid.cols - 1 else s
        self._finalize(local[:, :rows_final, :cols_final], x0)
        if not last_row:
            self._carry[:, :, x0 : x0 + cols_final] = local[:, s:t, :cols_final]
        self._col_carry = None if last_col else local[:, :, s:t].copy()

    def _add_channel(self, index: int) -> None:
        """Give pattern ``index`` a weight channel (zero so far) at its place in index order."""
        if index in self._channel_of:
            return
        if index not in self._declared:
            raise ConfigError(f"pattern index {index} was not declared to the blender")
        position = int(np.searchsorted(self._indices, index))
        self._indices = np.insert(self._indices, position, index)
        self._carry = np.insert(self._carry, self.classes + position, 0.0, axis=0)
        if self._col_carry is not None:
            self._col_carry = np.insert(self._col_carry, self.classes + position, 0.0, axis=0)
        self._channel_of = {int(i): self.classes + k for k, i in enumerate(self._indices)}
        self._channels += 1

    def _finalize(self, block: np.ndarray, x0: int) -> None:
        c = self.classes
        width = block.shape[-1]
        weight = block[c:].sum(axis=0)  # zeros while no pattern has a channel
        covered = weight > 0
        classes = argmax_channels(block[:c])
        classes[~covered] = CLASS_NODATA
        self._classes[:, x0 : x0 + width] = classes
        if self._channels > c:
            strongest = self._indices[argmax_channels(block[c:])]
            self._patterns[:, x0 : x0 + width] = np.where(covered, strongest, 0)
        else:
            self._patterns[:, x0 : x0 + width] = 0
        if self._probs is not None:
            safe = np.where(covered, weight, 1.0)
            probs = block[:c] / safe
            if self.probabilities == "uint8":
                scaled = np.where(covered, np.rint(probs * 255.0), 0)
                self._probs[:, :, x0 : x0 + width] = scaled.astype(np.uint8)
            else:
                self._probs[:, :, x0 : x0 + width] = np.where(covered, probs, np.nan)

    def finish_row(self) -> RowBands:
        """The finished rows of the current tile row, cropped to the chunk's final columns."""
        rows = self._rows_kept
        cols = slice(self.chunk.x_start - self._x0, self.chunk.x_stop - self._x0)
        probs = None if self._probs is None else self._probs[:, :rows, cols]
        return RowBands(self._start, self._classes[:rows, cols], self._patterns[:rows, cols], probs)
