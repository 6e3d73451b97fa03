"""Overlap blending with a carry band: weighted probabilities accumulate, finished pixels leave at once.

Memory holds ``overlap`` rows of accumulators across one column chunk (the carry into the next tile row,
updated in place), two ``T x overlap`` column carries and one tile of scratch, all allocated once, so it
grows neither with the scene's height nor, once the scene is wider than a chunk, with its width.
Accumulator channels: ``classes`` weighted probabilities, then the blending weight contributed by each
pattern the scene can produce (their sum normalises the probabilities; the pattern map reports the pattern
with the largest share, the one that dominates the pixel's blend).

Tiles arrive as logits (issue 21). Softmax and the weighted accumulation run on a tile's overlap bands
(``overlap`` px along each side), where other tiles contribute, each band accumulated in place where it is
kept (``RowBlender``). The interior ``[overlap, stride)`` in both directions is covered by this tile alone,
with weight 1: there the blended class is the argmax of the tile's probabilities, read from the logits
(``pixels.clear_argmax``; pixels whose two best logits are too close to tell through float32 softmax go
through softmax), and the pattern is the pixel's own. With probabilities requested, the interior is blended
like the bands, as its probabilities are an output. Either way the class and pattern maps are the bits the
full blend of every pixel gives (``tests/test_runtime_interior.py`` keeps that blend, frozen, as the oracle).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from runtime.outputs import CLASS_NODATA
from runtime.pixels import argmax_channels, clear_argmax, softmax_channels
from runtime.stride4_mixed import PatchedTile
from runtime.summary import code_counts
from runtime.tiling import Chunk, TileGrid, blend_window, plan_chunks
from stars_edge.errors import ConfigError
from stars_edge.modalities import ALL_PATTERNS, Pattern

__all__ = ["RowBands", "RowBlender", "argmax_channels", "check_probabilities_dtype", "softmax_channels"]

#: ``(y0, y1, x0, x1)`` in tile coordinates.
Rect = tuple[int, int, int, int]


@dataclass
class RowBands:
    """Finished rows ``[start, start + rows)`` of one tile row, cropped to the raster width."""

    start: int
    classes: np.ndarray
    patterns: np.ndarray
    probabilities: np.ndarray | None


def check_probabilities_dtype(probabilities: str | None) -> None:
    """Refuse a probabilities output dtype the blenders cannot write."""
    if probabilities not in (None, "uint8", "float32"):
        raise ConfigError(f"probabilities dtype must be uint8 or float32, got {probabilities!r}")


class RowBlender:
    """Blends the tiles of one tile row after another, left to right.

    ``patterns`` lists the patterns tiles may carry (default: all 7); fewer means fewer accumulator channels.
    ``chunk`` restricts it to one column chunk (default: the whole width). ``probabilities`` (an output
    dtype, or None) decides whether interiors are blended in full (see the module docstring).

    A tile is cut into five parts, each accumulated in place where it is kept: the top band
    ``[0, overlap)`` in the carry (which holds the row above's share and, at its left end, the previous
    tile's top-right corner); the left and right strips ``[overlap, T) x overlap`` in two column-carry
    buffers that swap roles from tile to tile (the right strip is the next tile's left strip); the bottom
    band's middle ``[stride, T) x [overlap, stride)`` in the carry it is kept in for the next row (the top
    band there is finished by then); the interior ``[overlap, stride)^2``.
    """

    def __init__(
        self,
        grid: TileGrid,
        classes: int,
        probabilities: str | None = None,
        patterns: Sequence[Pattern] = ALL_PATTERNS,
        chunk: Chunk | None = None,
    ) -> None:
        check_probabilities_dtype(probabilities)
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
        t, o, s = grid.tile, grid.overlap, grid.stride
        self._carry = np.zeros((self._channels, o, self._width), dtype=np.float32)
        self._left = np.zeros((self._channels, t, o), dtype=np.float32)  # rows [o, t) used
        self._right = np.zeros((self._channels, t, o), dtype=np.float32)
        self._joined = False  # whether ``_left`` holds the previous tile's right strip
        self._bottom = np.empty((self._channels, o, s - o), dtype=np.float32)  # the last row's bottom band
        self._inner = np.empty((self._channels, s - o, s - o), dtype=np.float32) if probabilities else None
        self._scratch = np.empty((classes, t, t), dtype=np.float32)  # weighted probabilities
        self._weights = np.empty((t, t), dtype=np.float32)
        self._row = -1
        self._classes = np.empty((0, 0), dtype=np.uint8)
        self._patterns = np.empty((0, 0), dtype=np.uint8)
        self._probs: np.ndarray | None = None

    def start_row(self, row: int, fresh: bool = False) -> None:
        """Begin tile row ``row``; ``fresh`` drops the carry (the first row, or a resume's warm-up row)."""
        if fresh:
            self._carry[...] = 0.0
        self._joined = False
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

    def add(self, col: int, logits: np.ndarray | PatchedTile | None, pattern_index: np.ndarray) -> None:
        """Blend tile ``col`` of the current row: ``logits (classes, T, T)`` and the per-pixel pattern index
        (0 where the tile has no prediction); ``logits`` None for a tile with no valid pixel (a
        ``PatchedTile`` comes from stride-4 engines only, which ``Stride4Blender`` blends).

        The carry is read for columns ``[x0, x0 + T)`` and rewritten for ``[x0, x0 + stride)``, which every
        earlier or current tile has already read, so one array serves as carry in and out.
        """
        assert not isinstance(logits, PatchedTile), "stride-4 output given to the stride-1 blender"
        grid, t, o, s = self.grid, self.grid.tile, self.grid.overlap, self.grid.stride
        x0 = col * s - self._x0
        present: tuple[int, ...] = ()
        if logits is not None:
            present = _present(pattern_index)
            for index in present:
                self._add_channel(index)
        tile = _Tile(logits, pattern_index, present)
        last_row = self._row == grid.rows - 1
        rows_final = t if last_row else s
        cols_final = t if col == grid.cols - 1 else s
        top = self._carry[:, :, x0 : x0 + t]
        self._blend(tile, (0, o, 0, t), top, base=True)
        self._finalize(top[:, :, :cols_final], 0, x0)
        left, right = self._left[:, o:], self._right[:, o:]
        self._blend(tile, (o, t, 0, o), left, base=self._joined)
        self._blend(tile, (o, t, s, t), right, base=False)
        self._finalize(left[:, : rows_final - o], o, x0)
        if cols_final == t:
            self._finalize(right[:, : rows_final - o], o, x0 + s)
        bottom = self._bottom if last_row else self._carry[:, :, x0 + o : x0 + s]  # top band final: reuse
        self._blend(tile, (s, t, o, s), bottom, base=False)
        if last_row:
            self._finalize(bottom, s, x0 + o)
        if self._inner is None:
            self._finalize_interior((o, s, o, s), tile, x0)
        else:
            self._blend(tile, (o, s, o, s), self._inner, base=False)
            self._finalize(self._inner, o, x0 + o)
        if not last_row:
            self._carry[:, :, x0 : x0 + o] = self._left[:, s:]
            if cols_final == t:
                self._carry[:, :, x0 + s : x0 + t] = self._right[:, s:]
        self._joined = col != self.chunk.last_col
        if self._joined:  # this tile's right strip is the next one's left strip
            self._left, self._right = self._right, self._left

    def _blend(self, tile: _Tile, region: Rect, target: np.ndarray, base: bool) -> None:
        """Add (``base``) or write the tile's weighted probabilities and pattern weights over ``region`` of
        the tile into ``target``, the accumulator where that part is kept. Writing ``x`` gives the bits
        that adding it to zero does (``x`` is never ``-0``)."""
        y0, y1, xa, xb = region
        if y0 >= y1 or xa >= xb:
            return
        c = self.classes
        if tile.logits is None:
            if not base:
                target[...] = 0.0
            return
        index = tile.pattern_index[y0:y1, xa:xb]
        weights = self._weights[y0:y1, xa:xb]
        np.multiply(self.window[y0:y1, xa:xb], index > 0, out=weights)
        logits = tile.logits[:, y0:y1, xa:xb]
        if base:
            weighted = softmax_channels(logits, out=self._scratch[:, y0:y1, xa:xb])
            weighted *= weights
            target[:c] += weighted
        else:
            softmax_channels(logits, out=target[:c])
            target[:c] *= weights
        for pattern, channel in self._channel_of.items():
            if pattern not in tile.present:
                if not base:
                    target[channel] = 0.0
                continue
            share = weights if len(tile.present) == 1 else np.where(index == pattern, weights, 0.0)
            if base:
                target[channel] += share
            else:
                target[channel] = share

    def _add_channel(self, index: int) -> None:
        """Give pattern ``index`` a weight channel (zero so far) at its place in index order."""
        if index in self._channel_of:
            return
        if index not in self._declared:
            raise ConfigError(f"pattern index {index} was not declared to the blender")
        position = int(np.searchsorted(self._indices, index))
        self._indices = np.insert(self._indices, position, index)
        at = self.classes + position
        self._carry = np.insert(self._carry, at, 0.0, axis=0)
        self._left = np.insert(self._left, at, 0.0, axis=0)
        self._right = np.insert(self._right, at, 0.0, axis=0)
        self._bottom = np.insert(self._bottom, at, 0.0, axis=0)
        if self._inner is not None:
            self._inner = np.insert(self._inner, at, 0.0, axis=0)
        self._channel_of = {int(i): self.classes + k for k, i in enumerate(self._indices)}
        self._channels += 1

    def _finalize(self, block: np.ndarray, y0: int, x0: int) -> None:
        """Classes, patterns (and probabilities) of an accumulated block at rows ``y0:``, columns ``x0:``."""
        c = self.classes
        height, width = block.shape[1:]
        if height == 0 or width == 0:
            return
        rows, cols = slice(y0, y0 + height), slice(x0, x0 + width)
        weight = block[c:].sum(axis=0)  # zeros while no pattern has a channel
        covered = weight > 0
        classes = argmax_channels(block[:c])
        classes[~covered] = CLASS_NODATA
        self._classes[rows, cols] = classes
        if self._channels > c:
            strongest = self._indices[argmax_channels(block[c:])]
            self._patterns[rows, cols] = np.where(covered, strongest, 0)
        else:
            self._patterns[rows, cols] = 0
        if self._probs is not None:
            safe = np.where(covered, weight, 1.0)
            probs = block[:c] / safe
            if self.probabilities == "uint8":
                scaled = np.where(covered, np.rint(probs * 255.0), 0)
                self._probs[:, rows, cols] = scaled.astype(np.uint8)
            else:
                self._probs[:, rows, cols] = np.where(covered, probs, np.nan)

    def _finalize_interior(self, region: Rect, tile: _Tile, x0: int) -> None:
        """Classes and patterns where this tile alone covers the pixels, with weight 1: the argmax of its
        probabilities (read from the logits where that is exact) and the pixel's own pattern."""
        y0, y1, xa, xb = region
        if y0 >= y1 or xa >= xb:
            return
        rows, cols = slice(y0, y1), slice(x0 + xa, x0 + xb)
        index = tile.pattern_index[y0:y1, xa:xb]
        self._patterns[rows, cols] = index
        if tile.logits is None:
            self._classes[rows, cols] = CLASS_NODATA
            return
        part = tile.logits[:, y0:y1, xa:xb]
        classes, unclear = clear_argmax(part)
        covered = index > 0
        unclear &= covered
        if unclear.any():
            classes[unclear] = argmax_channels(softmax_channels(part[:, unclear]))
        classes[~covered] = CLASS_NODATA
        self._classes[rows, cols] = classes

    def finish_row(self) -> RowBands:
        """The finished rows of the current tile row, cropped to the chunk's final columns."""
        rows = self._rows_kept
        cols = slice(self.chunk.x_start - self._x0, self.chunk.x_stop - self._x0)
        probs = None if self._probs is None else self._probs[:, :rows, cols]
        return RowBands(self._start, self._classes[:rows, cols], self._patterns[:rows, cols], probs)


class _Tile(NamedTuple):
    """One tile as the blender sees it: logits (None: no valid pixel), pattern index, patterns present."""

    logits: np.ndarray | None
    pattern_index: np.ndarray
    present: tuple[int, ...]


def _present(pattern_index: np.ndarray) -> tuple[int, ...]:
    """The pattern indices (1..7) a tile holds; one min/max pass when it holds one (most tiles)."""
    counts = code_counts(pattern_index)
    return tuple(int(i) for i in np.flatnonzero(counts[1:]) + 1)
