"""SceneTileDataset: normalised multimodal tiles cut from scenes, the training input of every model.

Why a dedicated class: crops, flips and rotations must be applied identically to every modality, the label
and the validity masks, and an item must be reproducible from (seed, epoch, index) alone so that a resumed
or distributed run sees the same tiles. This is the only data module that imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from stars_edge.data.synthetic import Scene
from stars_edge.errors import DataError
from stars_edge.modalities import IGNORE_INDEX, MODALITIES, ModalitySpec


class SceneTileDataset(Dataset):
    """Tiles of ``tile_size`` x ``tile_size`` pixels from a sequence of scenes.

    With ``augment=True`` each item is a random crop (scene drawn in proportion to its area) with a random
    flip and rot90, drawn from ``(seed, epoch, index)``; ``samples_per_epoch`` sets the length (default: as
    many items as grid tiles). With ``augment=False`` the items are the scenes' grid tiles in order (the last
    row/column padded with ignore/invalid pixels), for evaluation.

    Items: ``{modality: float32 (bands, t, t) normalised, zero where invalid, "label": int64 (t, t) with 255 =
    ignore, "valid": {modality: bool (t, t)}}``. By default only the modalities a scene has are present;
    ``modalities=`` forces a fixed set (absent ones become zeros with ``valid`` False) so batches collate even
    when scenes differ.
    """

    def __init__(
        self,
        scenes: Sequence[Scene],
        tile_size: int,
        specs: Mapping[str, ModalitySpec] | None = None,
        augment: bool = True,
        seed: int = 0,
        samples_per_epoch: int | None = None,
        modalities: Sequence[str] | None = None,
    ) -> None:
        if len(scenes) == 0:
            raise DataError("SceneTileDataset needs at least one scene; check the dataset root and split")
        if tile_size < 1:
            raise DataError(f"tile_size must be positive, got {tile_size}")
        self.scenes = scenes
        self.tile_size = int(tile_size)
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        first = scenes[0]
        self.specs: dict[str, ModalitySpec] = dict(specs) if specs is not None else dict(first.specs)
        self.modalities = tuple(m for m in MODALITIES if m in modalities) if modalities is not None else None
        needed = self.modalities if self.modalities is not None else first.modalities
        missing_specs = [m for m in needed if m not in self.specs]
        if missing_specs:
            raise DataError(
                f"no normalisation spec for {', '.join(missing_specs)} (scene {first.name}); pass specs= or "
                "compute them with `stars-edge data stats`"
            )
        # a lazy scene sequence (open_dataset(..., lazy=True)) reports shapes without reading pixels
        shapes_of = getattr(scenes, "shapes", None)
        shapes = list(shapes_of()) if callable(shapes_of) else [scene.shape for scene in scenes]
        self._grid = [(math.ceil(h / self.tile_size), math.ceil(w / self.tile_size)) for h, w in shapes]
        self._grid_offsets = np.cumsum([0] + [r * c for r, c in self._grid])
        areas = np.array([h * w for h, w in shapes], dtype=np.float64)
        self._scene_weights = areas / areas.sum()
        self.samples_per_epoch = (
            int(samples_per_epoch) if samples_per_epoch is not None else int(self._grid_offsets[-1])
        )

    def set_epoch(self, epoch: int) -> None:
        """Draw different random crops in each epoch while staying reproducible."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch if self.augment else int(self._grid_offsets[-1])

    def _locate(self, index: int, rng: np.random.Generator | None) -> tuple[int, int, int]:
        """(scene index, top row, left col) of item ``index``."""
        t = self.tile_size
        if rng is None:
            scene_index = int(np.searchsorted(self._grid_offsets, index, side="right") - 1)
            local = index - int(self._grid_offsets[scene_index])
            _, cols = self._grid[scene_index]
            return scene_index, (local // cols) * t, (local % cols) * t
        scene_index = int(rng.choice(len(self.scenes), p=self._scene_weights))
        height, width = self.scenes[scene_index].shape
        top = int(rng.integers(0, max(height - t, 0) + 1))
        left = int(rng.integers(0, max(width - t, 0) + 1))
        return scene_index, top, left

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(f"tile index {index} out of range for {len(self)} tiles")
        rng = np.random.default_rng([self.seed, self.epoch, index]) if self.augment else None
        scene_index, top, left = self._locate(index, rng)
        scene = self.scenes[scene_index]
        flip, rotations = (bool(rng.integers(2)), int(rng.integers(4))) if rng is not None else (False, 0)

        def transform(array: np.ndarray) -> np.ndarray:
            out = np.flip(array, axis=-1) if flip else array
            return np.ascontiguousarray(np.rot90(out, k=rotations, axes=(-2, -1)))

        item: dict[str, Any] = {}
        valid: dict[str, torch.Tensor] = {}
        wanted = self.modalities if self.modalities is not None else scene.modalities
        for modality in wanted:
            spec = self.specs[modality]
            if getattr(scene, modality, None) is None:
                image = np.zeros((spec.bands, self.tile_size, self.tile_size), dtype=np.float32)
                mask = np.zeros((self.tile_size, self.tile_size), dtype=bool)
            else:
                raw = scene.image(modality)
                if raw.shape[0] != spec.bands:
                    raise DataError(
                        f"scene {scene.name}: {modality} has {raw.shape[0]} bands but the spec expects "
                        f"{spec.bands} ({', '.join(spec.band_names)}); select bands or recompute the stats"
                    )
                image = _crop(raw, top, left, self.tile_size, 0.0)
                mask = _crop(scene.valid[modality], top, left, self.tile_size, False)
                image = spec.normalize(image)
                mask = mask & np.all(np.isfinite(image), axis=0)
                image[:, ~mask] = 0.0
            item[modality] = torch.from_numpy(transform(image))
            valid[modality] = torch.from_numpy(transform(mask))
        label = _crop(scene.label, top, left, self.tile_size, IGNORE_INDEX)
        item["label"] = torch.from_numpy(transform(label).astype(np.int64))
        item["valid"] = valid
        return item


def _crop(array: np.ndarray, top: int, left: int, size: int, fill: float | bool | int) -> np.ndarray:
    """``array[..., top:top+size, left:left+size]``, padded with ``fill`` where it runs past the edge."""
    window = array[..., top : top + size, left : left + size]
    if window.shape[-2:] == (size, size):
        return window.copy()
    out = np.full((*array.shape[:-2], size, size), fill, dtype=array.dtype)
    out[..., : window.shape[-2], : window.shape[-1]] = window
    return out
