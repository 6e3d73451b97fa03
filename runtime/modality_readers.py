"""Two reader threads split by modality instead of by columns, where that decodes every block once (issue 21).

Reader threads split by columns each need their own GDAL handles (a dataset is not to be shared between
threads), so each caches its own blocks; tile windows overlap, so the block column under the seam between
two readers' columns is decoded by both: 9 block columns of 8 on a 4096 px scene with 512 px blocks (+0.18
reader CPU-s of 1.4 on the clean Sentinel-2-like scene, docs/RUNTIME.md). A source whose files each have a
dataset of their own (``RasterSource.reads_modalities_apart``) can instead give one reader the optical file
and the other the SAR and DSM files: every block is decoded once, by the one thread that reads its file.
Each reader prepares its modalities of every tile (``scheduling.prepare_part``); the main thread decides the
tile's patterns over both parts (``scheduling.combine_parts``). The same inputs and patterns, so the same
maps (``tests/test_runtime_readers.py``).

The split is taken only where the two readers' shares are near even (``MOST_SHARE``, by bands, about what
decoding costs per band here: optical 0.17, SAR 0.20, DSM 0.21 CPU-s per band of a 4096 px scene): optical
(4 bands) against SAR and DSM (3); an uneven pair such as optical and SAR alone keeps the column split.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from itertools import combinations
from typing import Any

import numpy as np

from runtime.tile_source import RawTile, TileSource
from stars_edge.modalities import ModalitySpec

__all__ = ["MOST_SHARE", "ModalityView", "modality_groups"]

#: The largest share of the bands one of two modality readers may get for the split to be taken.
MOST_SHARE = 0.6


def modality_groups(source: TileSource, readers: int) -> list[tuple[str, ...]] | None:
    """Two groups of ``source``'s modalities for two reader threads, the most even by bands, or None where
    the split does not apply (another reader count, one modality, a source that cannot read its modalities
    apart, or no pair of groups within ``MOST_SHARE``)."""
    if readers != 2 or not getattr(source, "reads_modalities_apart", False) or len(source.modalities) < 2:
        return None
    counts: Mapping[str, int] = source.band_counts()  # type: ignore[attr-defined]
    total = sum(counts.values())
    best: tuple[float, tuple[str, ...]] | None = None
    names = source.modalities
    for size in range(1, len(names)):
        for group in combinations(names, size):
            share = max(sum(counts[m] for m in group), total - sum(counts[m] for m in group)) / total
            if best is None or share < best[0]:
                best = (share, group)
    assert best is not None
    if best[0] > MOST_SHARE:
        return None
    first = best[1]
    return [first, tuple(m for m in names if m not in first)]


class ModalityView:
    """``modalities`` of a source that reads its modalities apart: what one modality reader reads."""

    def __init__(self, source: Any, modalities: Sequence[str]) -> None:
        self._source = source
        self.modalities = tuple(modalities)
        self.height, self.width = source.height, source.width

    def read(self, y: int, x: int, size: int) -> RawTile:
        return self._source.read(y, x, size, self.modalities)

    def read_normalised(
        self,
        y: int,
        x: int,
        size: int,
        dilation: Mapping[str, int],
        specs: Mapping[str, ModalitySpec],
        out: Mapping[str, np.ndarray] | None = None,
    ) -> dict[str, np.ndarray] | None:
        return self._source.read_normalised(y, x, size, dilation, specs, self.modalities, out)

    def close(self) -> None:
        """The source is closed by its owner."""
