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

Without probabilities requested, classes and patterns are not upsampled pixel by pixel: the 16 pixels of a
4x4 quad read the same 2x2 cells, and their logits are convex combinations of those cells', so where the
four cells are covered and lead with one class by ``CLEAR_LEAD`` (within ``LOGIT_BOUND``, far from float32
rounding) the quad takes that class by broadcasting, and its pattern likewise (``PATTERN_LEAD``); quads of
uncovered cells are nodata. Only the other quads (class boundaries, near-ties) are interpolated, gathered
(``upsample4_quads``), and the boxes of tiles composed at full resolution upsampled as a block: the same bits
as upsampling everything, which is what the probabilities path still does.

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

from runtime.blending import RowBands, check_probabilities_dtype
from runtime.kernels import compiled
from runtime.pixels import softmax_channels
from runtime.stride4_bands import PixelBand, overridden
from runtime.stride4_mixed import PatchedTile, Split, split
from runtime.stride4_quads import (
    LAG,
    QUAD_BLOCK,
    Band,
    Quads,
    classes_of,
    compiled_quads,
    interpolated_quads,
    patterns_of,
    pixel_logits,
    quad_decisions,
    shift_rows,
)
from runtime.tiling import Chunk, TileGrid, blend_window, plan_chunks
from runtime.upsampling import FACTOR, upsample4
from stars_edge.errors import ConfigError
from stars_edge.modalities import ALL_PATTERNS, Pattern

__all__ = ["CHUNK_HALO", "Stride4Blender", "check_stride4"]

#: Pixels beyond a column chunk's edges whose tiles the chunk also runs: bilinear reads the next cell.
CHUNK_HALO = 2 * FACTOR
#: Quads read their class from their cells only where the cells' normalised logits stay within this: float32
#: interpolation (and a mixed band's ``x * w / w``) then moves a lead by under 2e-4, well inside the
#: ``CLEAR_LEAD`` of every cell. Larger logits take the exact path.
LOGIT_BOUND = 256.0
#: Rows upsampled at once where probabilities are written: a 4096 px chunk's whole band of full-resolution
#: float32 channels and their temporaries put a 4096 px scene's peak RSS at 681 MiB, against 472 in 64-row
#: parts and 454 at stride 1 (``benchmarks/runtime_memory.py``); the bytes are the same.
DENSE_ROWS = 64
#: Quads read their pattern from their cells where the leading weight leads by this share of the largest
#: (float32 interpolation errs by under 8 * 2**-24 of it).
PATTERN_LEAD = 2.0**-16


def check_stride4(tile: int, overlap: int) -> None:
    """Refuse tilings the stride-4 grid cannot carry (see the module docstring)."""
    if tile % FACTOR or overlap % FACTOR:
        raise ConfigError(
            f"engines built with --logits-stride 4 need --tile and --overlap that are multiples of 4, got "
            f"--tile {tile} --overlap {overlap} (or rebuild them with --logits-stride 1)"
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
    full resolution (``tile_inference.infer_tiles`` does that for tiles with several patterns).
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
        band_shape = (channels, t + LAG, width)
        #: Tiles composed at full resolution (nodata inside): their weighted logits join the coarse sums.
        self._fine = PixelBand(band_shape, self._x0, grid.stride)
        #: Boundary pixels of tiles with several patterns: their weighted logits replace the coarse value.
        self._boundary = PixelBand(band_shape, self._x0, grid.stride)
        self._cell_extent = (-(-grid.height // FACTOR), -(-grid.width // FACTOR))
        self._row = -1

    def start_row(self, row: int, fresh: bool = False) -> None:
        """Begin tile row ``row``; ``fresh`` drops the carry (the first row, or a resume's warm-up row)."""
        if fresh:
            self._coarse[...] = 0.0
        else:
            shift_rows(self._coarse, self._cell_stride)
        self._fine.start_row(row, fresh)
        self._boundary.start_row(row, fresh)
        self._row = row

    def add(self, col: int, logits: np.ndarray | PatchedTile | None, pattern_index: np.ndarray) -> None:
        """Blend tile ``col`` of the current row (``logits`` None: a tile with no valid pixel)."""
        if logits is None:
            return
        grid, t = self.grid, self.grid.tile
        y, x = grid.origin(self._row, col)
        inside = pattern_index[: grid.height - y, : grid.width - x]
        low = int(inside.min())
        x0 = x - self._x0
        if isinstance(logits, PatchedTile):
            if low > 0:  # no nodata inside: pure cells coarse, boundary pixels at full resolution
                self._add_split(y, x, split(logits, pattern_index))
                return
            logits = logits.composed(pattern_index)
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

    def _add_split(self, y: int, x: int, parts: Split) -> None:
        """A tile with several patterns: its pure cells' logits and weights on the coarse grid (each with its
        own pattern), its boundary pixels' weighted logits in the boundary band."""
        c, size = self.classes, self._cell_tile
        cell_x = (x - self._x0) // FACTOR
        window = self._coarse_window * (parts.cell_index > 0)
        target = self._coarse[:, 1 : 1 + size, cell_x : cell_x + size]
        target[:c] += parts.cells * window
        target[c] += window
        for index in np.unique(parts.cell_index):
            if index:
                self._seen.add(int(index))
                target[self._channel[int(index)]] += np.where(parts.cell_index == index, window, 0.0)
        for (y0, y1, x0, x1), index, rows, cols, logits in parts.boundary:
            self._seen.add(index)
            weights = self._window[y0 + rows, x0 + cols]
            values = [*enumerate(logits * weights), (c, weights), (self._channel[index], weights)]
            self._boundary.add((y + y0, y + y1, x + x0, x + x1), rows, cols, values)

    def _add_fine(self, x0: int, logits: np.ndarray, pattern_index: np.ndarray) -> None:
        """Logits composed per pixel at full resolution: weighted where the pixel has a pattern."""
        c, t = self.classes, self.grid.tile
        y = self._row * self.grid.stride
        weights = self._window * (pattern_index > 0)
        target = self._fine.target((y, y + t, self._x0 + x0, self._x0 + x0 + t))
        target[:c] += logits * weights
        target[c] += weights
        for index in np.unique(pattern_index):
            if index:
                self._seen.add(int(index))
                target[self._channel[int(index)]] += np.where(pattern_index == index, weights, 0.0)

    def finish_row(self) -> RowBands:
        """The rows this tile row completes (``LAG`` rows behind ``final_rows``), chunk's final columns."""
        grid, row = self.grid, self._row
        y0 = 0 if row == 0 else row * grid.stride - LAG
        y1 = grid.height if row == grid.rows - 1 else min(grid.height, (row + 1) * grid.stride - LAG)
        band = Band(y0, y1, self.chunk.x_start, self.chunk.x_stop)
        if self.probabilities is None:
            return self._finish_quads(band)
        return self._finish_upsampled(band)

    def _shares(self) -> tuple[list[int], list[int]]:
        """The patterns seen so far and their weight channels (none while a single pattern was seen)."""
        seen = sorted(self._seen)
        return seen, [self._channel[i] for i in seen] if len(seen) > 1 else []

    def _finish_upsampled(self, band: Band) -> RowBands:
        """Every pixel's logits upsampled, then classes, patterns and probabilities; ``DENSE_ROWS`` rows at a
        time, so the full-resolution float channels of a whole band never exist at once."""
        parts = []
        for y in range(band.y0, max(band.y1, band.y0 + 1), DENSE_ROWS):
            logits, covered, classes, patterns = self._dense(
                Band(y, min(y + DENSE_ROWS, band.y1), band.x0, band.x1)
            )
            parts.append((classes, patterns, self._probabilities(logits, covered)))
        probabilities = [p[2] for p in parts if p[2] is not None]
        return RowBands(
            band.y0,
            np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]),
            np.concatenate(probabilities, axis=1) if probabilities else None,
        )

    def _dense(self, band: Band) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Logits, coverage, classes and patterns of every pixel of ``band`` (any part of the row's band),
        upsampling every channel: the reference the quads of ``_finish_quads`` reproduce."""
        c = self.classes
        seen, shares = self._shares()
        stacked, top, left = self._cells(band, shares)
        crop = (
            slice(band.y0 - FACTOR * top, band.y1 - FACTOR * top),
            slice(band.x0 - FACTOR * left, band.x1 - FACTOR * left),
        )
        up = upsample4(stacked)[(slice(None), *crop)]
        inside = np.repeat(np.repeat(stacked[c + 1] > 0, FACTOR, axis=0), FACTOR, axis=1)[crop]
        logits, covered, pattern_weights = pixel_logits(
            up, inside, self._fine.view(band), shares, self.classes
        )
        boundary = self._boundary.view(band)
        if boundary is not None:
            logits, covered, pattern_weights = overridden(boundary, logits, covered, pattern_weights, shares)
        return (
            logits,
            covered,
            classes_of(logits, covered),
            patterns_of(seen, shares, pattern_weights, covered),
        )

    def _finish_quads(self, band: Band) -> RowBands:
        """Classes and patterns with the bits of ``_dense``, upsampling only the pixels that need it.

        Output pixels come in quads of 4x4 that read the same 2x2 cells (``upsample4_quads``): a pixel's
        logits are a convex combination of its covered cells' normalised logits. Where all four cells are
        covered and lead with one class (by ``CLEAR_LEAD``, within ``LOGIT_BOUND``), that class leads every
        pixel of the quad beyond float32 rounding, so the quad takes it without interpolation; its pattern
        likewise (``PATTERN_LEAD``). Quads without a covered cell are nodata. The other quads are
        interpolated (gathered) and decided pixel by pixel; those of tiles composed at full resolution are
        computed by ``_dense``, box by box."""
        c = self.classes
        seen, shares = self._shares()
        stacked, top, left = self._cells(band, shares)
        quads = Quads.of(band, top, left, stacked.shape[1:])
        kernels = compiled()
        class_map, pattern_map, decided, empty = quad_decisions(
            kernels, stacked, quads, c, seen, LOGIT_BOUND, PATTERN_LEAD
        )
        boundary = self._boundary.view(band)
        if boundary is not None:  # quads of boundary pixels only: their pixels come from the boundary band
            decided |= quads.covering(boundary[c] > 0)
        fine_band = self._fine.view(band)
        boxes = quads.meeting(self._fine.boxes) if fine_band is not None else []
        for rows, cols in boxes:
            decided[rows, cols] = True  # computed by ``_dense`` below
        undecided_y, undecided_x = np.nonzero(~(decided | empty))
        if kernels is not None:  # near-ties come back, to be interpolated by numpy in one go below
            undecided_y, undecided_x = compiled_quads(
                kernels,
                quads,
                stacked,
                fine_band,
                undecided_y,
                undecided_x,
                c,
                seen,
                shares,
                class_map,
                pattern_map,
            )
        for start in range(0, undecided_y.size, QUAD_BLOCK):
            qy, qx = undecided_y[start : start + QUAD_BLOCK], undecided_x[start : start + QUAD_BLOCK]
            interpolated_quads(quads, stacked, fine_band, qy, qx, c, seen, shares, class_map, pattern_map)
        for rows, cols in boxes:
            part = quads.band_of(rows, cols)
            _, _, part_classes, part_patterns = self._dense(part)
            quads.paste(class_map, part, part_classes)
            quads.paste(pattern_map, part, part_patterns)
        class_map, pattern_map = quads.crop(class_map), quads.crop(pattern_map)
        self._paste_boundary(band, class_map, pattern_map, seen, shares)
        return RowBands(band.y0, class_map, pattern_map, None)

    def _paste_boundary(
        self, band: Band, class_map: np.ndarray, pattern_map: np.ndarray, seen: list[int], shares: list[int]
    ) -> None:
        """The boundary band's pixels of ``band`` (their own engines' logits), over the quads' decisions:
        the pixels each tile wrote (a pixel two tiles wrote is decided twice, from the same sums)."""
        if self._boundary.view(band) is None:
            return
        c = self.classes
        for pixels in self._boundary.pixels:
            assert pixels is not None
            rows, cols = pixels
            here = (rows >= band.y0) & (rows < band.y1) & (cols >= band.x0) & (cols < band.x1)
            if not here.any():
                continue
            rows, cols = rows[here], cols[here]
            values = self._boundary.at(rows, cols)
            logits = values[:c] / values[c]
            every = np.ones(rows.shape, dtype=bool)
            class_map[rows - band.y0, cols - band.x0] = classes_of(logits, every)
            pattern_map[rows - band.y0, cols - band.x0] = patterns_of(seen, shares, values[shares], every)

    def _cells(self, band: Band, shares: list[int]) -> tuple[np.ndarray, int, int]:
        """The coarse cells the band's pixels read, stacked as normalised logits, weight, coverage (1 or 0)
        and the ``shares`` channels (pattern weights), with the scene cell of their top-left corner.

        Each cell's logits are normalised (weighted sum / weight) before upsampling, so a tile's logits come
        back unchanged where its window is not 1 (the scene's borders); cells no coarse tile covers are left
        out of the interpolation (normalised convolution: the covered cells' bilinear weights, rescaled)."""
        c = self.classes
        rows, cols = self._cell_extent
        top = max(0, (band.y0 + LAG) // FACTOR - 1)
        bottom = min(rows - 1, (band.y1 - 1 + LAG) // FACTOR)
        left = max(0, (band.x0 + LAG) // FACTOR - 1)
        right = min(cols - 1, (band.x1 - 1 + LAG) // FACTOR)
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
        return stacked, top, left

    def _probabilities(self, logits: np.ndarray, covered: np.ndarray) -> np.ndarray | None:
        """Softmax of the upsampled logits in the requested dtype (0 / NaN where nothing covers a pixel)."""
        if self.probabilities is None:
            return None
        probs = softmax_channels(logits)
        if self.probabilities == "uint8":
            return np.where(covered, np.rint(probs * 255.0), 0).astype(np.uint8)
        return np.where(covered, probs, np.float32(np.nan)).astype(np.float32)
