"""What the ISPRS 2D labelling benchmarks (Potsdam, Vaihingen) share: classes, label colours, splits."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

ISPRS_CLASSES = ("impervious_surface", "building", "low_vegetation", "tree", "car", "clutter")
ISPRS_COLOURS = ((255, 255, 255), (0, 0, 255), (0, 255, 255), (0, 255, 0), (255, 255, 0), (255, 0, 0))


def isprs_split(key: str, splits: Mapping[str, Sequence[Any]]) -> str:
    for split, keys in splits.items():
        if key in {str(k) for k in keys}:
            return split
    return "extra"
