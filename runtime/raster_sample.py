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
    # per thread: a handle, the modalities it reads (None: all) and its windows, as the readers read tiles
    tasks: list[tuple[RasterSource, tuple[str, ...] | None, range]]
    if groups is not None:  # each file on one thread, on these handles
        tasks = [(source, group, range(len(origins))) for group in groups]
    else:  # the windows split over the reader threads' handles
        handles = source.handles(threads)
        tasks = [(handle, None, range(i, len(origins), len(handles))) for i, handle in enumerate(handles)]

    def read(task: tuple[RasterSource, tuple[str, ...] | None, range]) -> list[RawTile]:
        handle, names, windows = task
        if names is None:
            return [handle.read(*origins[i], size) for i in windows]
        return [handle.read(*origins[i], size, names) for i in windows]

    with ThreadPoolExecutor(len(tasks), thread_name_prefix="stars-edge-sample") as pool:
        results = list(pool.map(read, tasks))
    placed: dict[str, dict[int, RawTile]] = {m: {} for m in source.modalities}  # window index -> tile
    for (_, names, windows), tiles in zip(tasks, results, strict=True):
        for name in names or source.modalities:
            placed[name].update(zip(windows, tiles, strict=True))
    return {  # in the windows' order, whichever thread read them
        m: (
            np.concatenate([t.values[m][:, t.valid[m]] for _, t in sorted(placed[m].items())], axis=1),
            str(source.paths[m]),
        )
        for m in source.modalities
    }


def _block_aligned(position: float, block: int, limit: int) -> int:
    """``position`` snapped down to a multiple of ``block`` (when blocks are smaller than the raster), at
    most ``limit``."""
    snapped = int(position) // block * block if block > 1 else int(position)
    return max(0, min(snapped, limit))
