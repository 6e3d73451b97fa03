"""Data: synthetic scenes, real-data loaders and the tile dataset.

Torch-free by design: ``import stars_edge.data`` and ``stars_edge.data.synthetic`` never import torch, so the
runtime and benchmarks can use them. ``SceneTileDataset`` (the only torch class) loads on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from stars_edge.data.dataset import SceneTileDataset
    from stars_edge.data.loaders import DATASET_FORMATS, open_dataset
    from stars_edge.data.synthetic import CLASS_NAMES, Scene, SyntheticConfig, generate_scene, write_scene

__all__ = [
    "CLASS_NAMES",
    "DATASET_FORMATS",
    "Scene",
    "SceneTileDataset",
    "SyntheticConfig",
    "generate_scene",
    "open_dataset",
    "write_scene",
]

_LAZY = {
    "SceneTileDataset": "stars_edge.data.dataset",
    "open_dataset": "stars_edge.data.loaders",
    "DATASET_FORMATS": "stars_edge.data.loaders",
    "CLASS_NAMES": "stars_edge.data.synthetic",
    "Scene": "stars_edge.data.synthetic",
    "SyntheticConfig": "stars_edge.data.synthetic",
    "generate_scene": "stars_edge.data.synthetic",
    "write_scene": "stars_edge.data.synthetic",
}


def __getattr__(name: str) -> Any:
    """Import on first use, so that importing the package (or its torch-free modules) stays light."""
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'stars_edge.data' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module_name), name)
