"""The real-data check: one Sen1Floods11 chip (Sentinel-1 + Sentinel-2), left half train, right half test.

Same recipe as the synthetic study (variant, steps, batch, schedule, speed and normalization options); the
question it answers is the paper's SAR-only claim on real data: water IoU with SAR alone, for ``stars``
(trained on optical+sar, scored with optical missing) against a model trained on SAR only. n = 1 chip: a
single-scene check, not a benchmark. Normalisation statistics come from the training half only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.accuracy_runs import StudyData, StudySettings, class_pixels
from benchmarks.common import BenchmarkError

SEN1FLOODS11 = Path(__file__).resolve().parents[2] / "shared" / "data" / "sen1floods11_sample"
MODALITIES = ("optical", "sar")


def halves(root: Path) -> tuple[Any, Any, dict[str, Any]]:
    """The one chip split into a left (train) and a right (test) half; stats from the train half only."""
    from stars_edge.data import open_dataset
    from stars_edge.modalities import ModalitySpec

    (scene,) = open_dataset(root, split="all", format="sen1floods11")
    width = scene.shape[1]
    half = width // 2

    def part(columns: slice, suffix: str) -> Any:
        return dataclasses.replace(
            scene,
            name=f"{scene.name}_{suffix}",
            label=scene.label[:, columns],
            optical=scene.optical[:, :, columns] if scene.optical is not None else None,
            sar=scene.sar[:, :, columns] if scene.sar is not None else None,
            dsm=None,
            valid={m: v[:, columns] for m, v in scene.valid.items() if m != "dsm"},
            cloud_mask=scene.cloud_mask[:, columns] if scene.cloud_mask is not None else None,
        )

    train, test = part(slice(0, half), "left"), part(slice(half, width), "right")
    specs = {}
    for modality in MODALITIES:
        image = getattr(train, modality).astype(np.float64)
        values = image[:, train.valid[modality]]
        std = np.maximum(values.std(axis=1), 1e-3)
        specs[modality] = ModalitySpec(
            modality,
            scene.specs[modality].band_names,
            tuple(float(v) for v in values.mean(axis=1)),
            tuple(float(v) for v in std),
            scene.specs[modality].units,
        )
    train = dataclasses.replace(train, specs=specs)
    test = dataclasses.replace(test, specs=specs)
    info = {
        "chip": scene.name,
        "train": f"columns 0..{half - 1}",
        "test": f"columns {half}..{width - 1}",
        "water_fraction_train": float((train.label == 1).sum() / max((train.label != 255).sum(), 1)),
        "water_fraction_test": float((test.label == 1).sum() / max((test.label != 255).sum(), 1)),
        "test_class_pixels": class_pixels([test]),
    }
    return train, test, info


def sen1floods11_data(settings: StudySettings, seed: int, root: Path = SEN1FLOODS11) -> StudyData:
    """Training tiles from the left half, the right half as one test tile set; no validation split."""
    from stars_edge.data import SceneTileDataset
    from stars_edge.modalities import Pattern
    from training.data import TrainingData

    if not root.is_dir():
        raise BenchmarkError(
            f"Sen1Floods11 sample not found at {root}; pass --sen1floods11 DIR or leave out the part"
        )
    train_scene, test_scene, info = halves(root)
    train_tiles = SceneTileDataset(
        [train_scene],
        tile_size=settings.tile_size,
        specs=train_scene.specs,
        augment=True,
        seed=seed,
        samples_per_epoch=64,
        modalities=MODALITIES,
    )
    test_tiles = SceneTileDataset(
        [test_scene], tile_size=256, specs=train_scene.specs, augment=False, seed=0, modalities=MODALITIES
    )
    data = TrainingData(
        train_tiles, None, dict(train_scene.specs), tuple(train_scene.class_names), "sen1floods11 (left half)"
    )
    patterns = [Pattern.parse("optical+sar"), Pattern.parse("sar")]
    return StudyData(data, test_tiles, patterns, info)


def render(rows: list[Mapping[str, Any]], info: Mapping[str, Any], header: list[str]) -> str:
    """Markdown: mIoU and water IoU per run and pattern."""
    lines = [
        "# Sen1Floods11 single-scene check (real Sentinel-1 + Sentinel-2)",
        "",
        f"**A single-scene check, not a benchmark** (n = 1 chip, {info.get('chip')}): trained on the left "
        f"half ({info.get('train')}), scored on the right half ({info.get('test')}); binary water / "
        f"not-water. Water fraction: train {info.get('water_fraction_train', 0):.1%}, test "
        f"{info.get('water_fraction_test', 0):.1%}. Normalisation statistics come from the training half "
        "only.",
        "",
        *header,
        "",
        "| model | trained on | pattern scored | mIoU | water IoU |",
        "| --- | --- | --- | ---: | ---: |",
    ]
    for r in rows:
        water = r["per_class_iou"].get("water")
        lines.append(
            f"| {r['method']} | {r['trained_modalities']} | {r['pattern']} | {r['miou']:.2f} | "
            f"{'n/a' if water is None else f'{water:.2f}'} |"
        )
    sar = {r["method"]: r["per_class_iou"].get("water") for r in rows if r["pattern"] == "sar"}
    if sar.get("stars") is not None and sar.get("single_modality") is not None:
        diff = sar["stars"] - sar["single_modality"]
        lines += [
            "",
            f"SAR-only water IoU: `stars` (optical missing) {sar['stars']:.2f} against the SAR-only model "
            f"{sar['single_modality']:.2f} ({diff:+.2f}).",
        ]
    return "\n".join(lines) + "\n"
