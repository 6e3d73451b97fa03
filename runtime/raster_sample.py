"""The input contract's sample of a GeoTIFF scene: a few windows spread over it, read as the reader threads
will read its tiles (``RasterSource.sample_values``)."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from runtime.modality_readers import modality_groups
from runtime.tile_source import RANGE_SAMPLE_PX, RANGE_SAMPLES, RawTile

if TYPE_CHECKING:
    from runtime.raster_source import RasterSource

__all__ = ["SAMPLE_READERS", "sample_values"]

#: Handles (threads) reading the input contract's sample windows at once: the default reader threads'.
SAMPLE_READERS = 2


def sample_values(source: RasterSource, readers: int = SAMPLE_READERS) -> dict[str, tuple[np.ndarray, str]]:
    """Valid values ``(bands, N)`` of each modality from a few windows spread over the scene (a quick look
    at the value range, read with the same validity rules as the tiles). Windows start on the reference's
    block grid, so each decodes one block per band rather than up to four; they are read on up to
    ``SAMPLE_READERS`` threads at once, no more than the run's ``readers``, as the reader threads will read
    the tiles: files split by modality on the source's handles (``modality_readers.modality_groups``), else
    the windows split over the reader threads' handles (opened here for them). Decoding is the cost, and it
    ran alone on one core before any tile (0.14-0.19 s on a 4096 px scene)."""
    size = min(RANGE_SAMPLE_PX, source.height, source.width)
    block_rows, block_cols = source.reference_block_shape
    origins = [
        (
            _block_aligned(fy * (source.height - size), block_rows, source.height - size),
            _block_aligned(fx * (source.width - size), block_cols, source.width - size),
        )
        for fy in np.linspace(0, 1, RANGE_SAMPLES)
        for fx in np.linspace(0, 1, RANGE_SAMPLES)
    ]
    threads = max(1, min(readers, SAMPLE_READERS))
    groups = modality_groups(source, threads)
    tiles_of: dict[str, list[RawTile]]
    if groups is not None:  # as the reader threads will read them: each file on one thread, these handles

        def read_group(group: tuple[str, ...]) -> list[RawTile]:
            return [source.read(y, x, size, group) for y, x in origins]

        with ThreadPoolExecutor(len(groups), thread_name_prefix="stars-edge-sample") as pool:
            parts = list(pool.map(read_group, groups))
        tiles_of = {m: part for part, group in zip(parts, groups, strict=True) for m in group}
    else:
        handles = source.handles(threads)
        shares = [origins[i :: len(handles)] for i in range(len(handles))]

        def read_share(handle: RasterSource, share: list[tuple[int, int]]) -> list[RawTile]:
            return [handle.read(y, x, size) for y, x in share]

        with ThreadPoolExecutor(len(handles), thread_name_prefix="stars-edge-sample") as pool:
            read = list(pool.map(read_share, handles, shares))
        tiles = [read[i % len(handles)][i // len(handles)] for i in range(len(origins))]
        tiles_of = dict.fromkeys(source.modalities, tiles)
    return {
        m: (np.concatenate([t.values[m][:, t.valid[m]] for t in tiles_of[m]], axis=1), str(source.paths[m]))
        for m in source.modalities
    }


def _block_aligned(position: float, block: int, limit: int) -> int:
    """``position`` snapped down to a multiple of ``block`` (when blocks are smaller than the raster), at
    most ``limit``."""
    snapped = int(position) // block * block if block > 1 else int(position)
    return max(0, min(snapped, limit))
