"""The accuracy study's runs: the data and one run (settings and plan: ``accuracy_plan.py``).

Every method gets the same settings (variant, steps, batch, tile, lr, schedule, training scenes, speed
options and ``train_options``, the hook where issue 10's per-pattern normalization is switched on for every
method alike). A run trains, records the validation curve the trainer logs every ``val_every`` steps, counts
FLOPs per training step (forward + backward, ``torch.utils.flop_counter``), and scores the final model on
every pattern of held-out test scenes whose seeds are disjoint from the training and validation scenes.
This file is part of the code fingerprint (``benchmarks/accuracy_store.py``): changing it re-runs the study.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.accuracy_plan import (  # re-exported: one import path for the study's names
    DATA_OPTIONS,
    FIDELITY_OPTIONS,
    LOW_LABEL_SCENES,
    MAIN_METHODS,
    PARTS,
    SHASPEC_GRID,
    STUDY_TRAIN_OPTIONS,
    SWEEP_METHODS,
    TEST_SEED_OFFSET,
    RunSpec,
    StudySettings,
    choose_shaspec,
    low_label_runs,
    options_tag,
    plan,
    run_options,
    shaspec_options,
    shaspec_tuning_runs,
)

__all__ = [
    "DATA_OPTIONS",
    "FIDELITY_OPTIONS",
    "LOW_LABEL_SCENES",
    "MAIN_METHODS",
    "PARTS",
    "SHASPEC_GRID",
    "STUDY_TRAIN_OPTIONS",
    "SWEEP_METHODS",
    "TEST_SEED_OFFSET",
    "RunSpec",
    "StudyData",
    "StudySettings",
    "choose_shaspec",
    "class_pixels",
    "execute",
    "flops_per_step",
    "low_label_runs",
    "options_tag",
    "plan",
    "run_options",
    "score_rows",
    "shaspec_options",
    "shaspec_tuning_runs",
    "synthetic_data",
    "train_config",
    "validation_curve",
]


@dataclass
class StudyData:
    """Training data (with its validation split), test tiles, the patterns to score, and dataset facts."""

    train: Any
    test: Any
    patterns: list[Any]
    info: dict[str, Any]


def class_pixels(scenes: Sequence[Any]) -> dict[str, int]:
    """Labelled pixels per class over ``scenes`` (ignore index excluded)."""
    names = list(scenes[0].class_names)
    counts = np.zeros(len(names), dtype=np.int64)
    for scene in scenes:
        label = np.asarray(scene.label).reshape(-1)
        counts += np.bincount(label[label < len(names)], minlength=len(names))[: len(names)]
    return {name: int(c) for name, c in zip(names, counts, strict=True)}


def synthetic_data(
    settings: StudySettings, seed: int, data_options: Mapping[str, Any] | None = None
) -> StudyData:
    """Train/validation data as the trainer builds it, and test scenes from ``TEST_SEED_OFFSET``.

    ``data_options`` (``RunSpec.data_options``) change the training scenes: fewer labelled ones, extra
    unlabelled ones.
    """
    from stars_edge.data import SceneTileDataset
    from stars_edge.modalities import ALL_PATTERNS
    from training.config import TrainConfig
    from training.data import VAL_SEED_OFFSET, build_training_data, synthetic_scenes

    values: dict[str, Any] = dict(
        variant=settings.variant,
        tile_size=settings.tile_size,
        synthetic_size=settings.train_scene_size,
        synthetic_train_scenes=settings.train_scenes,
        synthetic_val_scenes=settings.val_scenes,
        seed=seed,
    )
    config = TrainConfig(**{**values, **settings.train_options, **(data_options or {})})
    data = build_training_data(config)
    if settings.val_scenes == 0:
        data = dataclasses.replace(data, val=None)
    scenes = synthetic_scenes(settings.test_scenes, settings.scene_size, TEST_SEED_OFFSET)
    test = SceneTileDataset(scenes, tile_size=settings.scene_size, specs=data.specs, augment=False, seed=0)
    info = {
        "test_seeds": [TEST_SEED_OFFSET, TEST_SEED_OFFSET + settings.test_scenes - 1],
        "val_seeds": [VAL_SEED_OFFSET, VAL_SEED_OFFSET + settings.val_scenes - 1],
        "train_seeds": [0, config.synthetic_train_scenes - 1],
        "unlabelled_seeds": [
            config.synthetic_train_scenes,
            config.synthetic_train_scenes + config.synthetic_unlabelled_scenes - 1,
        ]
        if config.synthetic_unlabelled_scenes
        else [],
        "test_class_pixels": class_pixels(scenes),
    }
    return StudyData(data, test, list(ALL_PATTERNS), info)


def train_config(settings: StudySettings, run: RunSpec, work: Path, **changes: Any) -> Any:
    """The TrainConfig every method shares, with the run's method, seed, lambda_tr and modalities."""
    from training.config import TrainConfig

    values: dict[str, Any] = dict(
        variant=settings.variant,
        steps=settings.steps,
        batch_size=settings.batch_size,
        tile_size=settings.tile_size,
        lr=settings.lr,
        schedule=settings.schedule,
        warmup_steps=settings.warmup_steps,
        seed=run.seed,
        threads=settings.threads,
        method=run.method,
        modalities=run.modalities,
        lambda_tr=run.lambda_tr,
        channels_last=settings.channels_last,
        autocast=settings.autocast,
        log_every=max(settings.steps // 60, 1),
        val_every=settings.val_every,
        checkpoint_every=10**9,
        output_dir=work / run.name,
        device=settings.device,
    )
    values.update(settings.train_options)
    values.update(dict(run.options))
    values.update(changes)
    return TrainConfig(**values)


def flops_per_step(config: Any, data: Any, steps: int) -> float | None:
    """FLOPs (forward + backward; 2 per multiply-add) of one training step of ``config``.

    (FLOPs of a (1 + ``steps``)-step run - those of a 1-step run) / ``steps``: what a run does once (set-up,
    end-of-training statistics re-estimation) cancels out. Counted by ``torch.utils.flop_counter``.
    """
    if steps <= 0:
        return None
    from torch.utils.flop_counter import FlopCounterMode

    from training.loop import train

    def count(n: int) -> int:
        probe = dataclasses.replace(
            config,
            steps=n,
            diagnostics=False,
            val_every=10**9,
            output_dir=Path(config.output_dir) / "flop_probe",
        )
        with FlopCounterMode(display=False) as counter:
            train(probe, progress=False, data=dataclasses.replace(data, val=None))
        return int(counter.get_total_flops())

    return float(count(1 + steps) - count(1)) / steps


def validation_curve(log_path: Path) -> list[dict[str, Any]]:
    """The trainer's validation records: step, mean mIoU over the validated patterns, mIoU per pattern."""
    curve: list[dict[str, Any]] = []
    if not log_path.is_file():
        return curve
    for line in log_path.read_text().splitlines():
        record = json.loads(line)
        if "val" in record:
            per_pattern = {p: float(s["miou"]) for p, s in record["val"].items()}
            curve.append(
                {
                    "step": int(record["step"]),
                    "miou": round(float(np.nanmean(list(per_pattern.values()))), 4),
                    "per_pattern": per_pattern,
                }
            )
    return curve


def score_rows(scores: Mapping[str, Any], class_names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per pattern: mIoU, mF1, pixel accuracy, per-class IoU (percent)."""
    rows = []
    for pattern, s in scores.items():
        summary = s.as_dict(class_names)
        rows.append(
            {
                "pattern": pattern,
                "miou": summary["miou"],
                "mf1": summary["mf1"],
                "pixel_accuracy": summary["pixel_accuracy"],
                "per_class_iou": summary["per_class_iou"],
            }
        )
    return rows


def execute(
    settings: StudySettings, run: RunSpec, data: StudyData, work: Path, **changes: Any
) -> dict[str, Any]:
    """Train ``run`` on ``data``, score it on the test tiles; the run's part of a results-log record."""
    from stars_edge.modalities import Pattern
    from training.evaluation import evaluate_model
    from training.loop import train

    config = train_config(settings, run, work, **changes)
    flops = flops_per_step(config, data.train, settings.flop_steps)
    start = time.perf_counter()
    result = train(config, progress=False, data=data.train)
    seconds = time.perf_counter() - start
    patterns = [p for p in data.patterns if set(p) <= set(run.modalities)]
    if run.method == "single_modality":
        patterns = [Pattern(run.modalities)]
    scores = evaluate_model(
        result.model, data.test, patterns, batch_size=2, ignore_index=data.train.ignore_index
    )
    return {
        "run": {
            "train_seconds": round(seconds, 1),
            "seconds_per_step": round(seconds / config.steps, 4),
            "flops_per_step": flops,
            "parameters": int(sum(p.numel() for p in result.model.parameters())),
            "lambda_psa": config.lambda_psa,
            "final_losses": {k: round(v, 5) for k, v in result.last_losses.items()},
            "final_feature_std": result.diagnostics.get("feature_std"),
            "final_effective_rank": result.diagnostics.get("effective_rank"),
        },
        "curve": validation_curve(result.log_path),
        "rows": score_rows(scores, data.train.class_names),
        "data": data.info,
    }
