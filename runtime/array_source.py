"""Tiles cut from in-memory ``(bands, H, W)`` arrays (tests, the demo, benchmarks)."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from runtime import clean_numpy
from runtime.kernels import compiled
from runtime.tile_source import (
    NO_MASK,
    NO_SCALE,
    RANGE_SAMPLE_PX,
    RANGE_SAMPLES,
    RawTile,
    clean_window,
    clip_tile,
    finite_valid,
    ring,
)
from stars_edge.errors import DataError
from stars_edge.modalities import MODALITIES, ModalitySpec


class ArraySource:
    """Tiles cut from in-memory ``(bands, H, W)`` arrays (tests, the demo, benchmarks)."""

    def __init__(
        self,
        inputs: Mapping[str, np.ndarray],
        valid: Mapping[str, np.ndarray] | None = None,
        cloud_mask: np.ndarray | None = None,
    ) -> None:
        unknown = [m for m in inputs if m not in MODALITIES]
        if unknown:
            raise DataError(f"unknown modality {unknown[0]!r}; valid: {', '.join(MODALITIES)}")
        if not inputs:
            raise DataError("no input modality given; pass at least one of optical, sar, dsm")
        self.modalities = tuple(m for m in MODALITIES if m in inputs)
        self._values = {m: np.asarray(inputs[m]) for m in self.modalities}
        shapes = {m: a.shape[-2:] for m, a in self._values.items()}
        for name, array in self._values.items():
            if array.ndim != 3:
                raise DataError(f"{name}: expected a (bands, H, W) array, got shape {array.shape}")
        if len(set(shapes.values())) != 1:
            raise DataError(f"input arrays must share one grid, got shapes {shapes}")
        self.height, self.width = (int(v) for v in next(iter(shapes.values())))
        self._valid = {m: np.asarray(v, dtype=bool) for m, v in (valid or {}).items() if m in self._values}
        for name, mask in self._valid.items():
            if mask.shape != (self.height, self.width):
                raise DataError(
                    f"{name}: valid mask shape {mask.shape} differs from {self.height}x{self.width}"
                )
        if cloud_mask is not None:
            clouds = np.asarray(cloud_mask).astype(bool)
            if "optical" in self._valid:
                self._valid["optical"] = self._valid["optical"] & ~clouds
            elif "optical" in self._values:
                self._valid["optical"] = ~clouds

    def band_counts(self) -> dict[str, int]:
        return {m: int(a.shape[0]) for m, a in self._values.items()}

    def sample_values(self) -> dict[str, tuple[np.ndarray, str]]:
        """Valid values ``(bands, N)`` of each modality on a regular grid of about ``RANGE_SAMPLES**2 x
        RANGE_SAMPLE_PX**2`` pixels (the same budget as a file's sample), for the input contract."""
        step = max(1, int(np.sqrt(self.height * self.width / (RANGE_SAMPLES * RANGE_SAMPLE_PX) ** 2)))
        samples: dict[str, tuple[np.ndarray, str]] = {}
        for name, array in self._values.items():
            grid = array[:, ::step, ::step].astype(np.float32)
            ok = finite_valid(grid)
            if name in self._valid:
                ok &= self._valid[name][::step, ::step]
            samples[name] = (grid[:, ok], f"input array {name!r}")
        return samples

    def handles(self, count: int) -> list[ArraySource]:
        """This source ``count`` times: ``read`` only cuts copies out of the arrays, so reader threads can
        share it."""
        return [self] * count

    def read(self, y: int, x: int, size: int) -> RawTile:
        h, w = clip_tile(y, x, size, self.height, self.width)
        return cut_tile(self._values, self._valid, y, x, h, w, size)

    def read_normalised(
        self,
        y: int,
        x: int,
        size: int,
        dilation: Mapping[str, int],
        specs: Mapping[str, ModalitySpec],
        out: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray] | None:
        """Normalised engine inputs of a clean tile ``(y, x)`` straight from the arrays (``clean_inputs``),
        or None: the caller then takes the numpy path (``scheduling.prepare``). Into ``out``'s arrays (per
        modality, ``GroupBuffers`` slots) where given."""
        return clean_inputs(
            self._values, self._valid, y, x, size, dilation, specs, self.height, self.width, out=out
        )

    def close(self) -> None:
        """Nothing to release."""


def clean_inputs(
    values: Mapping[str, np.ndarray],
    valid: Mapping[str, np.ndarray],
    y: int,
    x: int,
    size: int,
    dilation: Mapping[str, int],
    specs: Mapping[str, ModalitySpec],
    height: int,
    width: int,
    first_row: int = 0,
    stop_row: int | None = None,
    out: Mapping[str, np.ndarray] | None = None,
) -> dict[str, np.ndarray] | None:
    """Normalised engine inputs of the ``size`` px tile at scene pixel ``(y, x)`` of in-memory arrays
    holding scene rows ``[first_row, stop_row)`` (a row stream's store; default: all of them), normalised
    straight from the arrays, when the tile lies inside the ``height`` x ``width`` scene and every pixel of
    every modality is valid, and so is every pixel within its ``dilation`` around the tile (no hole can grow
    into it): one compiled pass per modality (``runtime/kernels.py``), or without the compiled kernels
    three numpy passes instead of the numpy path's five (``runtime/clean_numpy.py``). None otherwise: the
    numpy path (``cut_tile``, then ``scheduling.prepare``) gives the same bits there."""
    kernels = compiled() or clean_numpy
    if min(y, x) < 0 or y + size > height or x + size > width:
        return None
    inputs: dict[str, np.ndarray] = {}
    for name, array in values.items():
        spec = specs.get(name)
        if spec is None or spec.bands != array.shape[0]:
            return None  # the numpy path names the problem
        mask = valid.get(name, NO_MASK)
        radius = dilation.get(name, 0)
        strips = ring(y, x, size, radius, height, width) if radius > 0 else []
        # the kernels do not check bounds (a check per pixel would stop them vectorising): check here
        rows = (min([y] + [s[0] for s in strips]), max([y + size] + [s[1] for s in strips]))
        held = first_row + array.shape[1] if stop_row is None else min(stop_row, first_row + array.shape[1])
        if rows[0] < first_row or rows[1] > held or width > array.shape[2]:
            raise RuntimeError(f"rows {rows[0]}..{rows[1]} of {name} are not held ({first_row}..{held})")
        if mask.size and mask.shape != array.shape[1:]:
            raise RuntimeError(f"{name}: validity {mask.shape} does not match the values {array.shape[1:]}")
        local = [(y0 - first_row, y1 - first_row, x0, x1) for y0, y1, x0, x1 in strips]
        slot = None if out is None else out.get(name)
        ready = clean_window(
            kernels, array, mask, NO_SCALE, NO_SCALE, y - first_row, x, size, spec, local, slot
        )
        if ready is None:
            return None
        inputs[name] = ready
    return inputs


def cut_tile(
    values: Mapping[str, np.ndarray],
    valid: Mapping[str, np.ndarray],
    top: int,
    x: int,
    h: int,
    w: int,
    size: int,
) -> RawTile:
    """A ``size`` px tile of in-memory arrays: rows ``top:top + h``, columns ``x:x + w`` (the part inside the
    raster), padded beyond it; NaN/inf and ``valid == False`` (where a modality has a mask) are invalid.
    The arrays are new (the caller normalises them in place); an inside tile is copied once, unpadded."""
    inside = np.zeros((size, size), dtype=bool)
    inside[:h, :w] = True
    tiles: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    for name, array in values.items():
        if h == size and w == size:  # inside the raster (nearly every tile): one copy, no padding
            tile = np.array(array[:, top : top + h, x : x + w], dtype=np.float32)
            mask = finite_valid(tile)
        else:
            tile = np.zeros((array.shape[0], size, size), dtype=np.float32)
            tile[:, :h, :w] = array[:, top : top + h, x : x + w]
            mask = np.zeros((size, size), dtype=bool)
            mask[:h, :w] = finite_valid(tile[:, :h, :w])
        if name in valid:
            mask[:h, :w] &= valid[name][top : top + h, x : x + w]
        tiles[name], masks[name] = tile, mask
    return RawTile(tiles, masks, inside)
