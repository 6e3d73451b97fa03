"""Output geometry of the stride-4 blender: 4x4 pixel blocks ("quads") that read the same 2x2 coarse cells,
and the per-pixel class and pattern decisions (``runtime/blending_stride4.py`` holds the blender).

A quad whose four cells agree on a clearly leading class takes that class without interpolation: bilinear
interpolation is a convex combination of the four cells, so a class leading at all four leads everywhere
between them. The rest are gathered and interpolated exactly (``upsampling.upsample4_quads``).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import NamedTuple

import numpy as np

from runtime.outputs import CLASS_NODATA
from runtime.pixels import CLEAR_LEAD, argmax_channels, clear_argmax, softmax_channels
from runtime.upsampling import FACTOR, QUAD_OWN_CELL, upsample4_quads

__all__ = [
    "LAG",
    "Band",
    "Quads",
    "classes_of",
    "compiled_quads",
    "gathered",
    "interpolated_quads",
    "merged_spans",
    "pattern_leads",
    "patterns_of",
    "pixel_logits",
    "quad_decisions",
    "shift_rows",
]

#: Four ``True`` bytes read as one uint32 (any byte order).
ALL_FOUR = 0x01010101
#: Pixel rows each tile row's output lags behind ``TileGrid.final_rows`` (half a cell: bilinear's reach).
LAG = FACTOR // 2
#: Undecided quads are interpolated this many at a time: their pixels' channels stay in the CPU's caches
#: (all at once, a 4096 px row of quads moved ~190 MB through memory per channel pass).
QUAD_BLOCK = 2048
#: The compiled kernel's empty array (no full-resolution band, no logits wanted); ``CLEAR_LEAD`` in float32.
NO_FINE = np.zeros((0, 0, 0, 0), dtype=np.float32)
LEAD = np.float32(CLEAR_LEAD)


def classes_of(logits: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """The argmax of each covered pixel's probabilities, read from its logits where that is exact."""
    classes, unclear = clear_argmax(logits)
    unclear &= covered
    if unclear.any():
        classes[unclear] = argmax_channels(softmax_channels(logits[:, unclear]))
    classes[~covered] = CLASS_NODATA
    return classes


def pixel_logits(
    up: np.ndarray, inside: np.ndarray, fine: np.ndarray | None, shares: list[int], classes: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Logits, coverage and pattern weights of pixels from their upsampled ``_cells`` channels ``up``
    (divided in place by the covered cells' share), their own cell's coverage ``inside`` and the
    full-resolution band ``fine`` there (None: none)."""
    c = classes
    reach = up[c + 1]
    up /= np.where(reach > 0, reach, 1.0)
    logits, weight, pattern_weights, covered = up[:c], up[c], up[c + 2 :], inside
    if fine is not None:
        total = weight + fine[c]
        logits = (logits * weight + fine[:c]) / np.where(total > 0, total, 1.0)
        pattern_weights = pattern_weights + fine[shares]
        covered = covered | (fine[c] > 0)
    return logits, covered, pattern_weights


def gathered(
    quads: Quads, stacked: np.ndarray, fine_band: np.ndarray | None, qy: np.ndarray, qx: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None]:
    """The cells quads ``(qy, qx)`` read, and the full-resolution band at their pixels (None: none)."""
    fine = None
    if fine_band is not None:
        ys, xs = quads.positions(qy, qx)
        fine = fine_band[:, ys[:, None, :], xs[None, :, :]]
    return quads.cells(stacked, qy, qx), fine


def interpolated_quads(
    quads: Quads,
    stacked: np.ndarray,
    fine_band: np.ndarray | None,
    qy: np.ndarray,
    qx: np.ndarray,
    classes: int,
    seen: list[int],
    shares: list[int],
    class_map: np.ndarray,
    pattern_map: np.ndarray,
) -> None:
    """Classes and patterns of quads ``(qy, qx)`` interpolated pixel by pixel from their cells of
    ``stacked`` (and ``fine_band`` at their pixels): what the full upsample gives there."""
    cells, fine = gathered(quads, stacked, fine_band, qy, qx)
    own = list(QUAD_OWN_CELL)  # the cell each pixel of a quad lies in (rows, then columns)
    inside = cells[:, :, classes + 1][own][:, own] > 0
    up = np.moveaxis(upsample4_quads(cells), 2, 0)
    logits, covered, pattern_weights = pixel_logits(up, inside, fine, shares, classes)
    classes_here = classes_of(logits, covered)
    patterns_here = patterns_of(seen, shares, pattern_weights, covered)
    quads.assign(qy, qx, (class_map, classes_here), (pattern_map, patterns_here))


def quad_decisions(
    kernels: ModuleType | None,
    stacked: np.ndarray,
    quads: Quads,
    classes: int,
    seen: list[int],
    bound: float,
    pattern_lead: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per quad of a band: its pixels' class and pattern code (its top-left cell's: right for the decided
    quads, replaced for the rest; nodata and 0 where empty) as ``(4 h, 4 w)`` maps, whether it is decided
    (every cell covered and leading with one class by ``CLEAR_LEAD`` within ``bound``; with pattern weights
    in ``stacked``, one pattern by ``pattern_lead`` of the largest weight too) and whether it is empty (no
    covered cell). The compiled kernels (one pass over cells, one over quads) where loaded and ``stacked`` is
    the C-contiguous float32 block ``_cells`` builds, else numpy: the same results."""
    codes = np.asarray(seen, dtype=np.uint8)
    if kernels is not None and stacked.dtype == np.float32 and stacked.flags.c_contiguous:
        return kernels.quad_decisions(
            stacked,
            quads.rows,
            quads.cols,
            classes,
            codes,
            LEAD,
            np.float32(bound),
            np.float32(pattern_lead),
            np.uint8(CLASS_NODATA),
        )
    c = classes
    inside = stacked[c + 1] > 0
    index, unclear = clear_argmax(stacked[:c])
    sure = inside & ~unclear & (np.abs(stacked[:c]).max(axis=0) <= bound)
    decided = quads.reduce(np.logical_and, sure) & quads.same(index)
    shared = stacked.shape[0] > c + 2
    if shared:
        pattern, lead, largest = pattern_leads(stacked[c + 2 :])
        clear = quads.reduce(np.minimum, lead) >= pattern_lead * quads.reduce(np.maximum, largest)
        decided &= clear & quads.same(pattern)
    empty = ~quads.reduce(np.logical_or, inside)
    corner = quads.corner()
    class_values = np.where(empty, np.uint8(CLASS_NODATA), index[corner]).astype(np.uint8)
    if shared:
        pattern_values = codes[pattern[corner]]
    else:
        pattern_values = np.full(class_values.shape, codes[0] if codes.size else 0, dtype=np.uint8)
    pattern_values[empty] = 0
    return quads.pixels(class_values), quads.pixels(pattern_values), decided, empty


def compiled_quads(
    kernels: ModuleType,
    quads: Quads,
    stacked: np.ndarray,
    fine_band: np.ndarray | None,
    undecided_y: np.ndarray,
    undecided_x: np.ndarray,
    classes: int,
    seen: list[int],
    shares: list[int],
    class_map: np.ndarray,
    pattern_map: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """``interpolated_quads`` by the compiled kernel (``kernels_numba.quad_pixels``: the same bits), block by
    block; returns the quads it hands back, whose covered pixels include a near-tie: those go through
    softmax on the numpy path (``interpolated_quads``), all of a band's at once."""
    codes = np.asarray(seen, dtype=np.uint8)
    channels = [*range(classes + 1), *shares]  # the band's logit sums, weight and pattern weights
    back = np.zeros(undecided_y.size, dtype=bool)
    for start in range(0, undecided_y.size, QUAD_BLOCK):
        qy, qx = undecided_y[start : start + QUAD_BLOCK], undecided_x[start : start + QUAD_BLOCK]
        cells, fine = gathered(quads, stacked, fine_band, qy, qx)
        band = fine[channels] if fine is not None else NO_FINE
        maps = (qy, qx, class_map, pattern_map)  # the kernel writes each quad's pixels in place
        back[start : start + QUAD_BLOCK] = kernels.quad_pixels(
            cells, classes, len(shares), codes, band, LEAD, CLASS_NODATA, *maps, NO_FINE
        )
    return undecided_y[back], undecided_x[back]


class Band(NamedTuple):
    """Output pixels ``[y0, y1) x [x0, x1)`` of the scene."""

    y0: int
    y1: int
    x0: int
    x1: int


@dataclass(frozen=True)
class Quads:
    """The 4x4 pixel quads over a band, each reading 2x2 cells of a ``_cells`` block: quad ``(g, f)`` holds
    block pixels ``4g - 2 .. 4g + 1`` by ``4f - 2 .. 4f + 1`` and reads block cells ``g - 1, g`` by
    ``f - 1, f``, clamped to the block (the scene's edges; ``upsample4_quads``)."""

    band: Band
    origin: tuple[int, int]  # the scene pixel of the first quad's top-left (quads counted from it)
    rows: (
        np.ndarray
    )  # the block cell rows the quad rows read: the first quad's g - 1 .. the last's g, clamped
    cols: np.ndarray

    @classmethod
    def of(cls, band: Band, top: int, left: int, cells: tuple[int, ...]) -> Quads:
        """The quads meeting ``band``, for a block whose top-left cell is scene cell ``(top, left)``."""
        oy, ox = FACTOR * top - LAG, FACTOR * left - LAG
        g0, g1 = (band.y0 - oy) // FACTOR, -(-(band.y1 - oy) // FACTOR)
        f0, f1 = (band.x0 - ox) // FACTOR, -(-(band.x1 - ox) // FACTOR)
        rows = np.clip(np.arange(g0 - 1, g1), 0, cells[0] - 1)
        cols = np.clip(np.arange(f0 - 1, f1), 0, cells[1] - 1)
        return cls(band, (oy + FACTOR * g0, ox + FACTOR * f0), rows, cols)

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows.size - 1, self.cols.size - 1

    def corner(self) -> tuple[np.ndarray, np.ndarray]:
        """Index of each quad's top-left cell in the block."""
        return self.rows[:-1, None], self.cols[None, :-1]

    def _four(self, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The four cells each quad reads, as four quad-shaped arrays."""
        block = cells[np.ix_(self.rows, self.cols)]
        return block[:-1, :-1], block[1:, :-1], block[:-1, 1:], block[1:, 1:]

    def covering(self, pixels: np.ndarray) -> np.ndarray:
        """Per quad: whether ``pixels`` (booleans over the band) holds at all its pixels in the band."""
        h, w = self.shape
        (oy, ox), band = self.origin, self.band
        full = np.ones((FACTOR * h, FACTOR * w), dtype=bool)
        full[band.y0 - oy : band.y1 - oy, band.x0 - ox : band.x1 - ox] = pixels
        # a quad's four pixels in one row are four bytes (True is 1): one uint32, 0x01010101 when all hold;
        # 75x faster than ``all`` over the 4x4 axes of a strided view
        words = full.reshape(h, FACTOR, FACTOR * w).view(np.uint32)
        return np.asarray((words[:, 0] & words[:, 1] & words[:, 2] & words[:, 3]) == ALL_FOUR)

    def reduce(self, reduce: np.ufunc, cells: np.ndarray) -> np.ndarray:
        """``reduce`` (a binary ufunc) over the four cells of each quad."""
        a, b, c, d = self._four(cells)
        return reduce(reduce(a, b), reduce(c, d))

    def same(self, cells: np.ndarray) -> np.ndarray:
        """Whether the four cells of each quad hold the same value."""
        a, b, c, d = self._four(cells)
        return (a == b) & (a == c) & (a == d)

    def meeting(self, boxes: list[tuple[int, int, int, int]]) -> list[tuple[slice, slice]]:
        """The quads whose pixels meet the scene pixel ``boxes`` ``(y0, y1, x0, x1)``, as rectangles (boxes
        of one tile row side by side merged)."""
        h, w = self.shape
        oy, ox = self.origin
        spans: dict[tuple[int, int], list[list[int]]] = {}
        for y0, y1, x0, x1 in sorted(boxes, key=lambda box: (box[0], box[2])):
            rows = (max(0, (y0 - oy) // FACTOR), min(h, -(-(y1 - oy) // FACTOR)))
            cols = [max(0, (x0 - ox) // FACTOR), min(w, -(-(x1 - ox) // FACTOR))]
            if rows[0] >= rows[1] or cols[0] >= cols[1]:
                continue
            row_spans = spans.setdefault(rows, [])
            if row_spans and cols[0] <= row_spans[-1][1]:
                row_spans[-1][1] = max(row_spans[-1][1], cols[1])
            else:
                row_spans.append(cols)
        return [(slice(*rows), slice(*cols)) for rows, col_spans in spans.items() for cols in col_spans]

    def band_of(self, rows: slice, cols: slice) -> Band:
        """The band's pixels in quads ``rows`` x ``cols``."""
        (oy, ox), band = self.origin, self.band
        return Band(
            max(band.y0, oy + FACTOR * rows.start),
            min(band.y1, oy + FACTOR * rows.stop),
            max(band.x0, ox + FACTOR * cols.start),
            min(band.x1, ox + FACTOR * cols.stop),
        )

    def cells(self, stacked: np.ndarray, qy: np.ndarray, qx: np.ndarray) -> np.ndarray:
        """``(2, 2, channels, n)``: the cells quads ``(qy, qx)`` read."""
        channels, _, width = stacked.shape
        flat = stacked.reshape(channels, -1)  # gathering by flat index: 4x faster than two index arrays
        cells = np.empty((2, 2, channels, qy.size), dtype=np.float32)
        for i in (0, 1):
            row_starts = self.rows[qy + i] * width
            for j in (0, 1):
                np.take(flat, row_starts + self.cols[qx + j], axis=1, out=cells[i, j])
        return cells

    def positions(self, qy: np.ndarray, qx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(4, n)`` band rows and columns of the pixels of quads ``(qy, qx)``, clamped into the band (the
        pixels outside it are cropped later)."""
        (oy, ox), band, step = self.origin, self.band, np.arange(FACTOR)[:, None]
        ys = np.clip(oy + FACTOR * qy + step, band.y0, band.y1 - 1) - band.y0
        xs = np.clip(ox + FACTOR * qx + step, band.x0, band.x1 - 1) - band.x0
        return ys, xs

    def pixels(self, values: np.ndarray) -> np.ndarray:
        """Per-quad ``values`` broadcast to a writable pixel array (4x4 per quad): each row of quads widened
        once, then copied to its four pixel rows (10x faster than copying one 4-D broadcast)."""
        h, w = self.shape
        pixels = np.empty((h, FACTOR, FACTOR * w), dtype=values.dtype)
        pixels[...] = np.repeat(values, FACTOR, axis=1)[:, None, :]
        return pixels.reshape(FACTOR * h, FACTOR * w)

    def assign(self, qy: np.ndarray, qx: np.ndarray, *writes: tuple[np.ndarray, np.ndarray]) -> None:
        """Write ``(4, 4, n)`` quad ``values`` into the quads ``(qy, qx)`` of each ``(pixels, values)`` pair's
        ``pixels`` array (the flat index computed once for all of them)."""
        width = FACTOR * self.shape[1]
        step = np.arange(FACTOR)
        rows = (FACTOR * qy)[None, None, :] + step[:, None, None]
        cols = (FACTOR * qx)[None, None, :] + step[None, :, None]
        flat = rows * width + cols  # by flat index: faster than a 4-D fancy assignment
        for pixels, values in writes:
            if not pixels.flags.c_contiguous:  # a flat copy would take the values and drop them
                raise ValueError("Quads.assign writes into a contiguous array (one from Quads.pixels)")
            pixels.reshape(-1)[flat] = values

    def paste(self, pixels: np.ndarray, part: Band, values: np.ndarray) -> None:
        """Write ``values`` of the band's pixels ``part`` into a ``pixels`` array."""
        oy, ox = self.origin
        pixels[part.y0 - oy : part.y1 - oy, part.x0 - ox : part.x1 - ox] = values

    def crop(self, pixels: np.ndarray) -> np.ndarray:
        """A ``pixels`` array cut to the band."""
        (oy, ox), band = self.origin, self.band
        return np.ascontiguousarray(pixels[band.y0 - oy : band.y1 - oy, band.x0 - ox : band.x1 - ox])


def patterns_of(seen: list[int], shares: list[int], weights: np.ndarray, covered: np.ndarray) -> np.ndarray:
    """Each covered pixel's pattern: the one with the most weight (the only one seen without ``shares``)."""
    if shares:
        patterns = np.asarray(seen, dtype=np.uint8)[argmax_channels(weights)]
    else:
        patterns = np.full(covered.shape, seen[0] if seen else 0, dtype=np.uint8)
    patterns[~covered] = 0
    return patterns


def pattern_leads(weights: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per cell: the leading pattern channel (first on ties), its lead over the runner-up and its weight.

    A running largest and runner-up over the channels: the same values as sorting them (max and min are
    exact), 17x faster than ``np.sort`` along the channel axis."""
    largest = weights[0].copy()
    runner_up = np.full_like(largest, -np.inf)
    for channel in weights[1:]:
        np.maximum(runner_up, np.minimum(largest, channel), out=runner_up)
        np.maximum(largest, channel, out=largest)
    return argmax_channels(weights), largest - runner_up, largest


def shift_rows(carry: np.ndarray, rows: int) -> None:
    """Move ``carry``'s rows up by ``rows`` (the next tile row's start) and clear the rows that open."""
    kept = carry.shape[1] - rows
    carry[:, :kept] = carry[:, rows:]
    carry[:, kept:] = 0.0


def merged_spans(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``(start, stop)`` spans with the overlapping or touching ones merged, in order."""
    merged: list[list[int]] = []
    for start, stop in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return [(start, stop) for start, stop in merged]
