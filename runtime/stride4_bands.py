"""Full-resolution pixel bands beside the stride-4 blender's coarse grid (``runtime/blending_stride4.py``).

The coarse grid carries the cells of every tile (``runtime/stride4_mixed.py`` says which cells of a tile with
several patterns). Two kinds of per-pixel contribution need pixel rows instead, each in a ``PixelBand``: the
tiles composed at full resolution (nodata inside), whose weighted logits *join* the coarse sums, and the
boundary pixels of tiles with several patterns, whose weighted logits *replace* the coarse value there
(``overridden``). A band holds pixel rows ``[row * stride - LAG, row * stride + T)`` of one column chunk and
the scene boxes written into it (its only nonzero pixels), and moves up a tile row at each ``start_row``.
"""

from __future__ import annotations

import numpy as np

from runtime.stride4_mixed import Box
from runtime.stride4_quads import LAG, Band, shift_rows

__all__ = ["PixelBand", "overridden"]


class PixelBand:
    """Pixel rows of one column chunk for one kind of full-resolution contribution, allocated at the first
    contribution (most chunks never need one)."""

    def __init__(self, shape: tuple[int, int, int], x0: int, stride: int) -> None:
        self._shape = shape  # (channels, tile + LAG, chunk width)
        self._x0 = x0
        self._stride = stride
        self._array: np.ndarray | None = None
        self._written = (False, False)  # whether the previous / current tile row wrote anything
        self.boxes: list[Box] = []
        self._row = 0

    def start_row(self, row: int, fresh: bool) -> None:
        """Move to tile row ``row``: keep the rows it shares with the previous one (``fresh``: none)."""
        if fresh:
            if self._array is not None:
                self._array[...] = 0.0
            self._written = (False, False)
            self.boxes = []
        else:
            if self._array is not None and any(self._written):
                columns = [(box[2] - self._x0, box[3] - self._x0) for box in self.boxes]
                shift_rows(self._array, self._stride, columns)
            self._written = (self._written[1], False)
            top = row * self._stride - LAG  # the first row the band keeps
            self.boxes = [box for box in self.boxes if box[1] > top]
        self._row = row

    def target(self, box: Box) -> np.ndarray:
        """The band's pixels of scene ``box`` (in the current tile row), to accumulate into."""
        if self._array is None:
            self._array = np.zeros(self._shape, dtype=np.float32)
        self._written = (self._written[0], True)
        self.boxes.append(box)
        base = self._row * self._stride - LAG
        return self._array[:, box[0] - base : box[1] - base, box[2] - self._x0 : box[3] - self._x0]

    def view(self, band: Band) -> np.ndarray | None:
        """The band's pixels of ``band``, or None when neither this tile row nor the previous wrote any."""
        if self._array is None or not any(self._written):
            return None
        base = self._row * self._stride - LAG
        return self._array[:, band.y0 - base : band.y1 - base, band.x0 - self._x0 : band.x1 - self._x0]


def overridden(
    override: np.ndarray,
    logits: np.ndarray,
    covered: np.ndarray,
    pattern_weights: np.ndarray,
    shares: list[int],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels' logits, coverage and pattern weights where ``override`` (a ``PixelBand`` view over the same
    pixels) has weight: the weighted mean of its logits and its own pattern weights, nothing of the coarse
    value."""
    classes = logits.shape[0]
    weight = override[classes]
    replaced = weight > 0
    if not replaced.any():
        return logits, covered, pattern_weights
    mean = override[:classes] / np.where(replaced, weight, 1.0)
    logits = np.where(replaced, mean, logits)
    if shares:
        pattern_weights = np.where(replaced, override[shares], pattern_weights)
    return logits, covered | replaced, pattern_weights
