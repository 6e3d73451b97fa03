"""Per-pattern evaluation: mIoU, mF1 and per-class IoU of a model on every modality-availability pattern.

Used by validation during training, by ``stars-edge eval`` and by the accuracy benchmark, so every number in
the project comes from the same code (``stars_edge.metrics`` confusion matrices).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from stars_edge.checkpoint import CheckpointMeta, load_checkpoint
from stars_edge.errors import DataError
from stars_edge.metrics import SegmentationScores, confusion_matrix, scores_from_confusion
from stars_edge.modalities import Pattern, parse_patterns
from stars_edge.models import STARSModel
from training.data import TileDataset, collate


@torch.no_grad()
def evaluate_model(
    model: STARSModel,
    dataset: TileDataset,
    patterns: Sequence[Pattern] | str = "all",
    batch_size: int = 8,
    ignore_index: int = 255,
    progress: bool = False,
    device: torch.device | None = None,
) -> dict[str, SegmentationScores]:
    """Scores per pattern name; each pattern sees the same tiles with only its modalities as input."""
    if isinstance(patterns, str):
        patterns = parse_patterns(patterns, model.modalities)
    if len(dataset) == 0:
        raise DataError("evaluation dataset is empty; check the split and tile size")
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    confusions = {p.name: np.zeros((model.classes, model.classes), dtype=np.int64) for p in patterns}
    keys = [*model.modalities, "label"]
    starts = range(0, len(dataset), batch_size)
    for start in tqdm(starts, desc="evaluate", unit="batch", disable=not progress, leave=False):
        batch = collate([dataset[i] for i in range(start, min(start + batch_size, len(dataset)))], keys)
        labels = batch["label"].numpy()
        for pattern in patterns:
            inputs = {m: batch[m].to(device) for m in pattern}
            prediction = model(inputs).argmax(dim=1).cpu().numpy()
            confusions[pattern.name] += confusion_matrix(prediction, labels, model.classes, ignore_index)
    model.train(was_training)
    return {name: scores_from_confusion(c) for name, c in confusions.items()}


@dataclass
class EvaluationReport:
    """Scores per pattern for one checkpoint on one dataset split."""

    checkpoint: str
    data: str
    split: str
    meta: CheckpointMeta
    scores: dict[str, SegmentationScores]

    def rows(self) -> list[dict[str, Any]]:
        """JSON-ready rows: pattern, mIoU, mF1, pixel accuracy, per-class IoU (percent)."""
        return [
            {"pattern": name, **scores.as_dict(self.meta.class_names)} for name, scores in self.scores.items()
        ]

    def format(self) -> str:
        """A plain-text table, one line per pattern, then per-class IoU."""
        names = list(self.meta.class_names)
        header = f"{'pattern':<18} {'mIoU':>6} {'mF1':>6}  " + " ".join(f"{n[:10]:>10}" for n in names)
        lines = [
            f"checkpoint {self.checkpoint} ({self.meta.variant}, {self.meta.method}) "
            f"on {self.data} [{self.split}]",
            header,
        ]
        for name, scores in self.scores.items():
            per_class = " ".join("       n/a" if np.isnan(v) else f"{v:10.2f}" for v in scores.per_class_iou)
            lines.append(f"{name:<18} {scores.miou:6.2f} {scores.mf1:6.2f}  {per_class}")
        return "\n".join(lines)


def evaluate_checkpoint(
    checkpoint: str | os.PathLike[str],
    data: str | os.PathLike[str],
    split: str = "test",
    patterns: str = "all",
    batch_size: int = 8,
    dataset_format: str = "auto",
    progress: bool = True,
) -> EvaluationReport:
    """Load a checkpoint and score it on a dataset folder's split for every requested pattern."""
    from stars_edge.data import SceneTileDataset, open_dataset

    model, meta = load_checkpoint(checkpoint)
    root = Path(data)
    if not root.exists():
        raise DataError(
            f"dataset folder {root} does not exist; pass a folder written by stars-edge data synth"
        )
    kwargs: dict[str, Any] = {} if dataset_format == "auto" else {"format": dataset_format}
    scenes = list(open_dataset(root, split=split, **kwargs))
    if not scenes:
        raise DataError(f"{root}: split {split!r} has no scenes; pick another --split")
    for modality, bands in meta.in_channels.items():
        spec = scenes[0].specs.get(modality)
        if spec is None:
            raise DataError(f"{root} has no {modality} data, which checkpoint {checkpoint} needs")
        if spec.bands != bands:
            raise DataError(
                f"{root}: {modality} has {spec.bands} bands, checkpoint {checkpoint} expects {bands}; "
                "use data with the checkpoint's band layout"
            )
    dataset = SceneTileDataset(scenes, tile_size=meta.tile_size, specs=meta.specs, augment=False, seed=0)
    selected = parse_patterns(patterns, model.modalities)
    scores = evaluate_model(model, dataset, selected, batch_size, meta.ignore_index, progress=progress)
    return EvaluationReport(str(checkpoint), str(root), split, meta, scores)
