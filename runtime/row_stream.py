"""Streaming rows (issue 21): a push-broom sensor hands over blocks of rows, not a whole scene in memory.

``Predictor.predict_arrays`` needs every row before it starts and returns whole maps. ``stream_rows`` pulls
``RowBlock``s from an iterator only when a tile needs their rows, drops the rows no later tile can read, and
yields each band of output rows as soon as the blender has finished it: memory is bounded by the tile, not
by the scene's height. Input rows held at once: at most ``tile + 2 * halo + block - 1`` (``halo``: the
largest mask dilation, which ``scheduling.read_dilated`` reads above and below a tile; ``block``: the
largest block's rows), recorded in ``RowStreamSource.peak_rows``: each block is written once into one
store per modality, which reclaims rows no read needs before it grows, so no transient second buffer or
sensor block outlives its rows. Per tile it reads what ``ArraySource`` reads from the same rows
concatenated (same padding, validity, cloud masking), and there is one column chunk spanning the width
(rows are consumed once, in order), so the maps are the bits ``predict_arrays`` gives.
"""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from runtime.array_source import ArraySource, clean_inputs, cut_tile
from runtime.blending import RowBands
from runtime.run_options import check_run_options, default_batch
from runtime.scheduling import EngineUse, Timer
from runtime.tile_source import RawTile, check_band_counts, clip_tile
from runtime.tiling import TileGrid
from runtime.writing import stream_chunk
from stars_edge.errors import DataError
from stars_edge.modalities import DEFAULT_MIN_VALID, MODALITIES, ModalitySpec, all_patterns

if TYPE_CHECKING:
    from runtime.predictor import Predictor

__all__ = ["RowBlock", "RowResult", "RowStream", "RowStreamSource", "stream_rows"]


@dataclass(frozen=True)
class RowBlock:
    """The next rows of a scene, as ``predict_arrays`` takes a whole one: ``values`` maps a modality to
    physical ``(bands, rows, width)`` values (NaN/inf invalid), ``valid`` a modality to a bool ``(rows,
    width)`` mask (False invalid), ``cloud_mask`` (True = cloud) masks optical. Copied when pulled, so the
    sensor may reuse its buffers."""

    values: Mapping[str, np.ndarray]
    valid: Mapping[str, np.ndarray] | None = None
    cloud_mask: np.ndarray | None = None


@dataclass(frozen=True)
class RowResult:
    """Finished output rows ``[start, start + rows)``: classes ``uint8`` (255 = nodata) and the pattern map
    ``uint8`` (0 = none), each ``(rows, width)`` and the caller's to keep."""

    start: int
    classes: np.ndarray
    patterns: np.ndarray


class RowStreamSource:
    """A ``TileSource`` over rows pulled lazily from an iterator of ``RowBlock``s.

    Reads must come in order (one reader thread, row-major, ``y`` never decreasing, as ``Prefetcher`` reads
    one column chunk): a read at ``y`` drops every held row above ``y`` and pulls blocks until the tile's
    rows are held. ``peak_rows`` is the most input rows held at once. Every block is checked when pulled
    (``DataError`` naming its index); ``specs`` are the engines' modalities, for the band counts.
    """

    def __init__(
        self, blocks: Iterable[RowBlock], height: int, width: int, specs: Mapping[str, ModalitySpec]
    ) -> None:
        self.height, self.width = int(height), int(width)
        self.modalities: tuple[str, ...] = ()
        self.blocks_taken = 0
        self.rows_delivered = 0
        self.start = 0  # the first row a later read may need; rows [start, rows_delivered) are held
        self.peak_rows = 0
        self._blocks = iter(blocks)
        self._specs = specs
        # one store per modality: scene row ``stored + i`` at row ``i``; each block is written into it once
        # (converted to float32 on the way), rows before ``start`` are reclaimed when a block needs the room
        self._stored = 0
        self._values: dict[str, np.ndarray] = {}  # float32 (bands, capacity, width)
        self._valid: dict[str, np.ndarray] = {}  # bool (capacity, width), cloud mask folded into optical

    def sample_values(self, rows: int) -> dict[str, tuple[np.ndarray, str]]:
        """Pull until ``min(rows, height)`` rows are held and sample the held rows for the input contract
        (``ArraySource.sample_values``' grid and format): only the stream's first rows are checked."""
        self._fill_to(min(rows, self.height))
        held = f"rows {self.start}-{self.rows_delivered - 1}"
        first, stop = self.start - self._stored, self.rows_delivered - self._stored
        values = {m: a[:, first:stop] for m, a in self._values.items()}
        valid = {m: a[first:stop] for m, a in self._valid.items()}
        samples = ArraySource(values, valid).sample_values()
        return {m: (data, f"streamed input {m!r} ({held})") for m, (data, _) in samples.items()}

    def read(self, y: int, x: int, size: int) -> RawTile:
        h, w = clip_tile(y, x, size, self.height, self.width)
        self._hold(y, y + h)
        return cut_tile(self._values, self._valid, y - self._stored, x, h, w, size)

    def read_normalised(
        self,
        y: int,
        x: int,
        size: int,
        dilation: Mapping[str, int],
        specs: Mapping[str, ModalitySpec],
        out: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray] | None:
        """Normalised engine inputs of a clean tile straight from the stored rows
        (``array_source.clean_inputs``), or None for the numpy path. Holds the rows the numpy path's read of
        this tile would hold (its dilated window, ``scheduling.read_dilated``), so the stream's memory does
        not depend on the path taken."""
        halo = max((d for m, d in dilation.items() if m in self.modalities), default=0)
        top = max(0, y - halo)
        self._hold(top, min(self.height, top + size + 2 * halo))
        return clean_inputs(
            self._values,
            self._valid,
            y,
            x,
            size,
            dilation,
            specs,
            self.height,
            self.width,
            self._stored,
            self.rows_delivered,
            out,
        )

    def _hold(self, top: int, stop: int) -> None:
        """Hold scene rows ``[top, stop)``: pull blocks until ``stop``, let the rows above ``top`` go."""
        if top < self.start:
            raise RuntimeError(f"row {top} read after it was dropped (first held row {self.start})")
        self.start = min(top, self.rows_delivered)
        self._fill_to(stop)
        self.start = top  # rows a gap in the reads skipped (none when reads overlap, as tiles do)

    def finish(self) -> None:
        """Refuse a stream that goes on past ``height`` rows (asks the iterator for one more block)."""
        while self._pull():
            pass

    def close(self) -> None:
        """Drop the held rows."""
        self._values, self._valid = {}, {}

    def _fill_to(self, stop: int) -> None:
        while self.rows_delivered < stop:
            if not self._pull():
                raise DataError(
                    f"the stream ended after {self.rows_delivered} of {self.height} rows (row block "
                    f"{self.blocks_taken} never came); hand over all {self.height} rows, or pass the "
                    "height the sensor delivers"
                )

    def _pull(self) -> bool:
        """Write the next block into the store; False when the iterator has ended."""
        try:
            block = next(self._blocks)
        except StopIteration:
            return False
        index, self.blocks_taken = self.blocks_taken, self.blocks_taken + 1
        values, valid, rows = self._checked(block, index)
        if self.rows_delivered + rows > self.height:
            raise DataError(
                f"row block {index} brings the stream to {self.rows_delivered + rows} rows, more than the "
                f"scene's {self.height}; pass the height the sensor delivers or stop after {self.height} rows"
            )
        if rows:
            at = self._room(rows)
            for name in self.modalities:
                self._values[name][:, at : at + rows] = values[name]  # the one copy, to float32
                self._valid[name][at : at + rows] = valid[name]
            self.rows_delivered += rows
            self.peak_rows = max(self.peak_rows, self.rows_delivered - self._stored)
        return True

    def _room(self, rows: int) -> int:
        """Store row where ``rows`` new rows go: rows before ``start`` are dropped (the held ones move to
        the top) when the store is full, and it grows to exactly what is held when that is not enough."""
        held = self.rows_delivered - self.start
        capacity = next(iter(self._valid.values())).shape[0] if self._valid else 0
        if self.rows_delivered - self._stored + rows <= capacity:
            return self.rows_delivered - self._stored
        first = self.start - self._stored
        for name in self.modalities:
            old_values, old_valid = self._values.get(name), self._valid.get(name)
            if held + rows > capacity:
                bands = int(self._specs[name].bands)
                self._values[name] = np.empty((bands, held + rows, self.width), dtype=np.float32)
                self._valid[name] = np.empty((held + rows, self.width), dtype=bool)
            if held and old_values is not None and old_valid is not None:
                move_rows(old_values, self._values[name], first, held, axis=1)
                move_rows(old_valid, self._valid[name], first, held, axis=0)
        self._stored = self.start
        return held

    def _checked(self, block: object, index: int) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
        """One block's float32 values and bool validity (cloud mask folded in) and its row count."""
        where = f"row block {index}"
        if not isinstance(block, RowBlock):
            raise DataError(f"{where} is a {type(block).__name__}; hand over runtime.RowBlock objects")
        unknown = [m for m in block.values if m not in MODALITIES]
        if unknown:
            raise DataError(f"{where}: unknown modality {unknown[0]!r}; valid: {', '.join(MODALITIES)}")
        names = tuple(m for m in MODALITIES if m in block.values)
        if not self.modalities:
            if not names:
                raise DataError(f"{where}: no input modality given; pass at least one of optical, sar, dsm")
            self.modalities = names
        elif names != self.modalities:
            raise DataError(
                f"{where} carries {', '.join(names) or 'no modality'}, the first block "
                f"{', '.join(self.modalities)}; every block must carry the same modalities (mark missing "
                "pixels with NaN or valid=False)"
            )
        raw = {m: np.asarray(block.values[m]) for m in names}
        for name, array in raw.items():
            if array.ndim != 3:
                raise DataError(f"{where}: {name}: expected a (bands, rows, width) array, got {array.shape}")
        check_band_counts(
            {m: int(a.shape[0]) for m, a in raw.items()},
            self._specs,
            {m: f"{where}: input array {m!r}" for m in names},
        )
        masks = {f"{m} valid": np.array(v, dtype=bool) for m, v in (block.valid or {}).items() if m in raw}
        if block.cloud_mask is not None:
            masks["cloud_mask"] = np.asarray(block.cloud_mask).astype(bool)
        for label, mask in masks.items():
            if mask.ndim != 2:
                raise DataError(f"{where}: {label}: expected a (rows, width) mask, got shape {mask.shape}")
        widths = {f"{m} values": a.shape[2] for m, a in raw.items()} | {
            k: a.shape[1] for k, a in masks.items()
        }
        for label, got in widths.items():
            if got != self.width:
                raise DataError(
                    f"{where}: {label} is {got} px wide but the scene is {self.width}; hand over whole rows"
                )
        counts = {f"{m} values": a.shape[1] for m, a in raw.items()} | {
            k: a.shape[0] for k, a in masks.items()
        }
        if len(set(counts.values())) != 1:
            detail = ", ".join(f"{k} {v}" for k, v in counts.items())
            raise DataError(
                f"{where}: its arrays disagree on the number of rows ({detail}); values, valid and "
                "cloud_mask of one block must cover the same rows"
            )
        rows = int(next(iter(counts.values())))
        valid = {m: masks.get(f"{m} valid", np.ones((rows, self.width), dtype=bool)) for m in names}
        if "cloud_mask" in masks and "optical" in valid:
            valid["optical"] = valid["optical"] & ~masks["cloud_mask"]
        return raw, valid, rows


def move_rows(source: np.ndarray, target: np.ndarray, first: int, held: int, axis: int) -> None:
    """Rows ``[first, first + held)`` of ``source`` into rows ``[0, held)`` of ``target``, rows along
    ``axis`` 0 (validity, ``(rows, width)``) or 1 (values, ``(bands, rows, width)``).

    Within one array (the store reclaiming rows without growing), numpy copies an overlapping assignment
    through a temporary as large as the rows moved: twice the bytes and a fresh buffer. Here each band's rows
    move in pieces of at most ``first`` rows, top first: a piece's rows and the rows it reads are disjoint
    byte ranges, so numpy copies straight (2.6 ms against 8.2 ms to move 528 of 784 rows of a 7-band
    4096 px store, quiet), and no piece reads rows an earlier one wrote."""
    in_place = source is target
    if held <= 0 or (in_place and first == 0):
        return  # nothing to move, or already in place
    step = first if in_place else held
    planes = [(source, target)] if axis == 0 else list(zip(source, target, strict=True))
    for rows_from, rows_to in planes:
        for start in range(0, held, step):
            stop = min(held, start + step)
            rows_to[start:stop] = rows_from[first + start : first + stop]


class RowStream(Iterator[RowResult]):
    """The ``RowResult``s of a stream, top to bottom; ``source`` (``peak_rows``) shows the memory held.

    After the last rows it checks that the block iterator has ended (a stream longer than ``height`` is a
    ``DataError``); ``close()`` (or leaving a ``for`` loop early and dropping it) stops the reader thread.
    """

    def __init__(self, source: RowStreamSource, bands: Generator[tuple[int, RowBands], None, None]) -> None:
        self.source = source
        self._results = self._run(bands)

    def _run(self, bands: Generator[tuple[int, RowBands], None, None]) -> Generator[RowResult, None, None]:
        try:
            with contextlib.closing(bands):  # stops the reader thread however the stream ends
                for _, band in bands:  # views into the blender's reused rows: copied
                    if band.classes.shape[0]:
                        yield RowResult(band.start, band.classes.copy(), band.patterns.copy())
            self.source.finish()
        finally:
            self.source.close()

    def __next__(self) -> RowResult:
        return next(self._results)

    def __iter__(self) -> RowStream:
        return self

    def close(self) -> None:
        """Stop early: the reader thread ends and the held rows are dropped."""
        self._results.close()

    @property
    def peak_rows(self) -> int:
        """The most input rows held at once so far."""
        return self.source.peak_rows


def stream_rows(
    predictor: Predictor,
    blocks: Iterable[RowBlock],
    height: int,
    width: int,
    *,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int | None = None,
    min_valid: float = DEFAULT_MIN_VALID,
    allow_out_of_range: bool = False,
) -> RowStream:
    """``predict_arrays`` over a scene of ``height x width`` px that arrives as ``RowBlock``s (top to bottom),
    pulled as tiles need them; each band of finished rows is yielded as a ``RowResult``, so memory is bounded
    by the tile, not the height (``Predictor.predict_rows`` is this function).

    The call checks the options, pulls the first ``min(height, tile)`` rows (or more, to the end of their
    block) and tests them against the input contract (only those rows: later rows are not sampled), then
    loads the engines, all before any engine call; the returned iterator yields finished rows as the blocks
    arrive. A stream that ends early raises ``DataError`` once the rows before the missing ones are yielded;
    one with more than ``height`` rows raises after the last rows.
    """
    tile, overlap = predictor._tiling(tile, overlap)
    check_run_options(tile, overlap, 1 if batch is None else batch, min_valid)
    grid = TileGrid(height, width, tile, overlap)
    source = RowStreamSource(blocks, height, width, predictor.manifest.modalities)
    predictor._check_contract(source.sample_values(tile), allow_out_of_range)
    patterns = all_patterns(source.modalities)
    engines = predictor._engine_set(patterns, tile)
    batch = default_batch(engines.backend) if batch is None else batch
    (chunk,) = predictor._chunks(grid, None)
    settings = predictor._settings(min_valid)
    args = (engines, settings, Timer(), batch, 0, predictor.classes, None, patterns, EngineUse())
    return RowStream(source, stream_chunk(source, grid, chunk, *args))
