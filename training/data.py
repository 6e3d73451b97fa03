"""Training data: the datasets, their band layout, and deterministic per-step batches.

Batches are a pure function of ``(seed, step, rank)``: a seeded permutation per epoch, and the tile dataset's
own crops, flips and rotations drawn from ``(seed, epoch, index)`` (``SceneTileDataset.set_epoch``), so a
resumed run sees exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor

from stars_edge.errors import ConfigError, DataError
from stars_edge.modalities import ModalitySpec
from training.config import TrainConfig

#: Seeds of synthetic validation scenes start here, far from the training seeds (disjoint scenes).
VAL_SEED_OFFSET = 100_000


class TileDataset(Protocol):
    """What the trainer needs from a dataset: ``len`` and ``ds[i] -> {modality: (C,H,W), "label": (H,W)}``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> Mapping[str, Tensor]: ...


@dataclass
class TrainingData:
    """Train / validation tiles with the band layout (specs) and class names they come with."""

    train: TileDataset
    val: TileDataset | None
    specs: dict[str, ModalitySpec]
    class_names: tuple[str, ...]
    source: str = "in-memory"
    ignore_index: int = 255
    extra: dict[str, Any] = field(default_factory=dict)
    #: Tiles of training scenes without labels (``synthetic_unlabelled_scenes``): only a label-free loss
    #: (the translation loss) sees them.
    unlabelled: TileDataset | None = None

    def in_channels(self, modalities: Sequence[str]) -> dict[str, int]:
        """Band counts of ``modalities`` (``DataError`` when the data lacks one)."""
        missing = [m for m in modalities if m not in self.specs]
        if missing:
            raise DataError(
                f"{self.source} has no {', '.join(missing)} data (it has {', '.join(self.specs)}); "
                "set modalities to what the data holds"
            )
        return {m: self.specs[m].bands for m in modalities}


def synthetic_scenes(
    count: int, size: int, base_seed: int, optical_bands: int = 4, holes: Mapping[str, float] | None = None
) -> list[Any]:
    """``count`` seeded synthetic scenes (seeds ``base_seed .. base_seed + count - 1``).

    ``holes`` sets ``SyntheticConfig``'s ``cloud_cover`` / ``sar_gap`` / ``dsm_voids`` (their defaults are
    0, so zero holes give exactly the scenes generated without them).
    """
    from stars_edge.data.synthetic import SyntheticConfig, generate_scene

    extra: dict[str, Any] = dict(holes or {})
    return [
        generate_scene(SyntheticConfig(size=size, seed=base_seed + i, optical_bands=optical_bands, **extra))
        for i in range(count)
    ]


def build_training_data(config: TrainConfig) -> TrainingData:
    """Datasets for ``config.data``: ``"synthetic"`` (generated in memory) or a dataset folder path."""
    from stars_edge.data import SceneTileDataset

    if config.data == "synthetic":
        holes = config.synthetic_train_holes()
        train_scenes = synthetic_scenes(
            config.synthetic_train_scenes,
            config.synthetic_size,
            config.synthetic_seed,
            config.synthetic_optical_bands,
            holes,
        )
        val_scenes = synthetic_scenes(
            config.synthetic_val_scenes,
            config.synthetic_size,
            config.synthetic_seed + VAL_SEED_OFFSET,
            config.synthetic_optical_bands,
        )
        unlabelled_scenes = synthetic_scenes(
            config.synthetic_unlabelled_scenes,
            config.synthetic_size,
            config.synthetic_seed + config.synthetic_train_scenes,
            config.synthetic_optical_bands,
            holes,
        )
        source = "synthetic data"
    else:
        from stars_edge.data import open_dataset

        root = Path(config.data)
        if not root.exists():
            raise DataError(f"dataset folder {root} does not exist; pass data: synthetic or a dataset folder")
        kwargs: dict[str, Any] = {} if config.dataset_format == "auto" else {"format": config.dataset_format}
        train_scenes = list(open_dataset(root, split=config.train_split, **kwargs))
        try:
            val_scenes = list(open_dataset(root, split=config.val_split, **kwargs))
        except DataError:
            val_scenes = []
        unlabelled_scenes = []
        source = str(root)
    if not train_scenes:
        raise DataError(f"{source}: split {config.train_split!r} has no scenes; check the dataset folder")
    first = train_scenes[0]
    specs = {m: first.specs[m] for m in first.specs if m in config.modalities}
    _check_bands(specs, config, source)
    train = SceneTileDataset(
        train_scenes,
        tile_size=config.tile_size,
        specs=specs,
        augment=config.augment,
        seed=config.seed,
        modalities=config.modalities,
    )
    val = (
        SceneTileDataset(
            val_scenes,
            tile_size=config.tile_size,
            specs=specs,
            augment=False,
            seed=config.seed,
            modalities=config.modalities,
        )
        if val_scenes
        else None
    )
    unlabelled = (
        SceneTileDataset(
            unlabelled_scenes,
            tile_size=config.tile_size,
            specs=specs,
            augment=config.augment,
            seed=config.seed + 1,
            modalities=config.modalities,
        )
        if unlabelled_scenes
        else None
    )
    return TrainingData(
        train, val, specs, tuple(first.class_names), source, int(first.ignore_index), unlabelled=unlabelled
    )


def _check_bands(specs: Mapping[str, ModalitySpec], config: TrainConfig, source: str) -> None:
    for modality, wanted in config.expected_bands().items():
        if modality in specs and specs[modality].bands != wanted:
            raise DataError(
                f"{source}: {modality} has {specs[modality].bands} bands but the config says "
                f"{modality}_bands: "
                f"{wanted}; fix the config or the data"
            )


def step_generator(seed: int, step: int, stream: int, rank: int = 0) -> torch.Generator:
    """A CPU generator determined by (seed, step, stream, rank): per-step randomness that survives resume."""
    generator = torch.Generator()
    generator.manual_seed(((seed * 1_000_003 + step) * 97 + stream) * 131 + rank)
    return generator


def batch_indices(
    length: int, batch_size: int, step: int, seed: int, rank: int = 0, world: int = 1, stream: int = 1
) -> tuple[int, list[int]]:
    """``(epoch, indices)`` of ``rank``'s batch at ``step``: seeded permutation per epoch, disjoint shards.

    ``stream`` separates independent batch sequences of one run (the unlabelled tiles use their own).
    """
    per_step = batch_size * world
    if length < per_step:
        raise DataError(
            f"the training set has {length} tiles, fewer than one step needs ({batch_size} x {world} ranks); "
            "lower batch_size or add scenes"
        )
    steps_per_epoch = length // per_step
    epoch, position = divmod(step, steps_per_epoch)
    order = torch.randperm(length, generator=step_generator(seed, epoch, stream=stream))
    start = position * per_step + rank * batch_size
    return epoch, order[start : start + batch_size].tolist()


def draw_batch(
    dataset: TileDataset,
    keys: Sequence[str],
    step: int,
    batch_size: int,
    seed: int,
    rank: int = 0,
    world: int = 1,
    stream: int = 1,
    masks: bool = False,
) -> dict[str, Tensor]:
    """``rank``'s collated batch at ``step`` of the batch sequence ``stream`` (``batch_indices``), with the
    dataset's augmentation epoch set first, on the CPU (``masks``: as in ``collate``)."""
    epoch, indices = batch_indices(len(dataset), batch_size, step, seed, rank, world, stream)
    set_epoch = getattr(dataset, "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)
    return collate([dataset[i] for i in indices], keys, masks)


#: Batch key prefix of a modality's validity mask: ``batch["valid/optical"]`` is bool ``(N, H, W)``.
VALID_PREFIX = "valid/"


def collate(
    samples: Sequence[Mapping[str, Any]], keys: Sequence[str], masks: bool = False
) -> dict[str, Tensor]:
    """Stack samples into a batch, keeping only ``keys`` (modalities and, when listed, ``label``).

    ``masks=True`` also keeps each listed modality's validity mask (``SceneTileDataset``'s ``"valid"``) as
    ``valid/<modality>``: training on scenes with holes (``TrainConfig.trains_on_holes``) needs them; off,
    the batch is what it always was.
    """
    batch: dict[str, Tensor] = {}
    for key in keys:
        if key not in samples[0]:
            raise DataError(f"dataset samples have no {key!r} entry (they have {', '.join(samples[0])})")
        batch[key] = torch.stack([torch.as_tensor(s[key]) for s in samples])
    if "label" in batch:
        batch["label"] = batch["label"].long()
    if masks:
        valid = samples[0].get("valid")
        if not isinstance(valid, Mapping):
            raise DataError(
                "dataset samples carry no 'valid' masks, which training on scenes with holes needs"
            )
        for key in keys:
            if key in valid:
                batch[VALID_PREFIX + key] = torch.stack([torch.as_tensor(s["valid"][key]) for s in samples])
    return batch


def validity_masks(batch: Mapping[str, Tensor], modalities: Sequence[str]) -> dict[str, Tensor]:
    """``{modality: bool (N, H, W)}`` of a collated batch (``DataError`` when a mask did not come along)."""
    missing = [m for m in modalities if VALID_PREFIX + m not in batch]
    if missing:
        raise DataError(
            f"the batch has no validity mask of {', '.join(missing)}: training on scenes with holes needs "
            "batches drawn with masks=True from a dataset whose samples carry them (SceneTileDataset)"
        )
    return {m: batch[VALID_PREFIX + m].bool() for m in modalities}


def check_batch(batch: Mapping[str, Tensor], in_channels: Mapping[str, int], source: str) -> None:
    """Fail early and clearly when tiles do not match the model's band layout or size rules."""
    for modality, bands in in_channels.items():
        x = batch[modality]
        if x.ndim != 4 or x.shape[1] != bands:
            raise DataError(
                f"{source}: {modality} tiles have shape {tuple(x.shape[1:])}, the model expects {bands} "
                "bands; "
                "the data's band layout does not match the config/checkpoint"
            )
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ConfigError(
                f"{source}: tile size {tuple(x.shape[-2:])} is not a multiple of 32; fix tile_size"
            )
