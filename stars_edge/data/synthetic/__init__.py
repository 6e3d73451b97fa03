"""Physically plausible synthetic optical / SAR / DSM scenes with a land-cover label (numpy/scipy only).

Why it exists: the demo, most tests and the accuracy benchmark need multimodal data with known ground truth,
realistic shapes and a class imbalance, without downloading anything. Every scene is built from structured
random fields and objects (terrain, lakes and a river, a rotated street grid with building lots, main roads,
forests and single trees, parked and moving cars), then rendered per sensor:

- optical: class spectra x within-class texture x illumination (hillshade + cast shadows from the DSM),
  sensor noise, optional clouds (a cloud mask is produced) and cloud shadows;
- SAR: class backscatter (VV, VH) with terrain slope effects, double bounce at building walls facing the
  sensor, radar shadow, multiplicative gamma speckle, converted to dB; optional missing swath;
- DSM: terrain + object heights (buildings with flat or pitched roofs, tree crowns, cars), optional voids.

Each modality is informative but ambiguous in its own way: optical confuses dark roofs with asphalt and red
roofs with bare soil, SAR confuses vegetation types and bare soil with low vegetation, the DSM cannot tell
roads from bare soil. ``docs/DATA.md`` measures this with a per-pixel classifier.

Modules, in dependency order: ``tables`` (classes, spectra, backscatter, statistics), ``config``
(``SyntheticConfig``), ``fields`` (random fields, hashing, shadows), ``layout`` (land cover and heights),
``masks`` (clouds, SAR swath gap, DSM voids), ``optical`` / ``sar`` / ``dsm`` (one renderer per sensor),
``scene`` (``Scene``, ``generate_scene``, ``write_scene``), ``dataset`` (dataset folders and mosaics).
Import from this package; the module split is an implementation detail.

This package never imports torch, so the runtime and the benchmarks can use it.
"""

from __future__ import annotations

from stars_edge.data.synthetic.config import SyntheticConfig
from stars_edge.data.synthetic.dataset import (
    class_fractions,
    generate_dataset,
    iter_mosaic_blocks,
    scene_seed,
    split_counts,
    write_mosaic_scene,
)
from stars_edge.data.synthetic.scene import Scene, ScenePaths, generate_scene, label_tags, write_scene
from stars_edge.data.synthetic.tables import (
    BACKGROUND,
    BUILDING,
    CAR,
    CLASS_NAMES,
    LOW_VEGETATION,
    OPTICAL_BAND_CATALOGUE,
    ROAD,
    TREE,
    WATER,
    synthetic_specs,
)

__all__ = [
    "BACKGROUND",
    "BUILDING",
    "CAR",
    "CLASS_NAMES",
    "LOW_VEGETATION",
    "OPTICAL_BAND_CATALOGUE",
    "ROAD",
    "TREE",
    "WATER",
    "Scene",
    "ScenePaths",
    "SyntheticConfig",
    "class_fractions",
    "generate_dataset",
    "generate_scene",
    "iter_mosaic_blocks",
    "label_tags",
    "scene_seed",
    "split_counts",
    "synthetic_specs",
    "write_mosaic_scene",
    "write_scene",
]
