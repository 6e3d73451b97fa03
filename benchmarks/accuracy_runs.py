"""The accuracy study's runs: settings, the plan of (method, seed, lambda_tr) runs, data, and one run.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.accuracy_targets import DEFAULT_LAMBDA_TR
from benchmarks.common import BenchmarkError

#: Seeds of test scenes start here; training scenes use 0.., validation scenes 100000.. (disjoint).
TEST_SEED_OFFSET = 200_000
MAIN_METHODS: tuple[str, ...] = (
    "stars",
    "stars_no_psa",
    "stars_no_stopgrad",
    "zero_fill_dropout",
    "shaspec",
    "single_modality",
)
SWEEP_METHODS: tuple[str, ...] = ("stars", "stars_no_stopgrad")
PARTS: tuple[str, ...] = ("main", "sweep", "sen1floods11")

#: TrainConfig fields that switch on per-pattern normalization (issue 10) for every method; empty until
#: that option exists. ``--train-option key=value`` adds fields from the command line the same way.
PER_PATTERN_NORMALIZATION: dict[str, Any] = {}


@dataclass
class StudySettings:
    """Everything that decides a run's numbers besides the code, the method, the seed and lambda_tr."""

    variant: str = "edge"
    steps: int = 3000
    batch_size: int = 8
    tile_size: int = 128
    lr: float = 2e-3
    schedule: str = "poly"
    warmup_steps: int = 10
    train_scenes: int = 16
    train_scene_size: int = 512
    val_scenes: int = 1
    val_every: int = 250
    test_scenes: int = 8
    scene_size: int = 512
    threads: int = 1
    device: str = "cpu"
    channels_last: bool = False
    autocast: str = "none"
    flop_steps: int = 2
    methods: tuple[str, ...] = MAIN_METHODS
    seeds: tuple[int, ...] = (0, 1, 2)
    sweep_lambdas: tuple[float, ...] = (0.1, 1.0, 10.0)
    sweep_seeds: tuple[int, ...] = (0, 1, 2)
    train_options: dict[str, Any] = field(default_factory=lambda: dict(PER_PATTERN_NORMALIZATION))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (tuples as lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StudySettings:
        """Inverse of ``to_dict`` (lists back to tuples)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise BenchmarkError(
                f"unknown study settings {', '.join(unknown)}; valid: {', '.join(sorted(names))}"
            )
        values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
        return cls(**values)


@dataclass(frozen=True)
class RunSpec:
    """One training run of the study."""

    experiment: str  # "synthetic" or "sen1floods11"
    method: str
    seed: int
    lambda_tr: float = DEFAULT_LAMBDA_TR
    modalities: tuple[str, ...] = ("optical", "sar", "dsm")

    @property
    def key(self) -> str:
        """Stable identifier: what "already done" means in the results log."""
        modalities = "+".join(self.modalities)
        return f"{self.experiment}/{self.method}/seed{self.seed}/lambda{self.lambda_tr:g}/{modalities}"

    @property
    def name(self) -> str:
        """Folder-safe name of the run's work directory."""
        return self.key.replace("/", "_").replace("+", "-")


def plan(settings: StudySettings, parts: Sequence[str] = PARTS) -> list[RunSpec]:
    """Every run of the study, seed by seed (a partial study already has every method on the first seeds)."""
    from stars_edge.modalities import MODALITIES

    unknown = sorted(set(parts) - set(PARTS)) + sorted(set(settings.methods) - set(MAIN_METHODS))
    if unknown:
        raise BenchmarkError(
            f"unknown part or method {', '.join(unknown)}; parts: {', '.join(PARTS)}; methods: "
            f"{', '.join(MAIN_METHODS)}"
        )
    runs: list[RunSpec] = []
    if "main" in parts:
        for seed in settings.seeds:
            for method in settings.methods:
                if method == "single_modality":
                    runs += [RunSpec("synthetic", method, seed, DEFAULT_LAMBDA_TR, (m,)) for m in MODALITIES]
                else:
                    runs.append(RunSpec("synthetic", method, seed))
    if "sweep" in parts:
        for seed in settings.sweep_seeds:
            for method in SWEEP_METHODS:
                runs += [RunSpec("synthetic", method, seed, float(v)) for v in settings.sweep_lambdas]
    if "sen1floods11" in parts:
        seed = settings.seeds[0]
        runs += [
            RunSpec("sen1floods11", "stars", seed, DEFAULT_LAMBDA_TR, ("optical", "sar")),
            RunSpec("sen1floods11", "zero_fill_dropout", seed, DEFAULT_LAMBDA_TR, ("optical", "sar")),
            RunSpec("sen1floods11", "single_modality", seed, DEFAULT_LAMBDA_TR, ("sar",)),
        ]
    unique: dict[str, RunSpec] = {}
    for run in runs:
        unique.setdefault(run.key, run)
    return list(unique.values())


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


def synthetic_data(settings: StudySettings, seed: int) -> StudyData:
    """Train/validation data as the trainer builds it, and test scenes from ``TEST_SEED_OFFSET``."""
    from stars_edge.data import SceneTileDataset
    from stars_edge.modalities import ALL_PATTERNS
    from training.config import TrainConfig
    from training.data import VAL_SEED_OFFSET, build_training_data, synthetic_scenes

    config = TrainConfig(
        variant=settings.variant,
        tile_size=settings.tile_size,
        synthetic_size=settings.train_scene_size,
        synthetic_train_scenes=settings.train_scenes,
        synthetic_val_scenes=settings.val_scenes,
        seed=seed,
        **settings.train_options,
    )
    data = build_training_data(config)
    if settings.val_scenes == 0:
        data = dataclasses.replace(data, val=None)
    scenes = synthetic_scenes(settings.test_scenes, settings.scene_size, TEST_SEED_OFFSET)
    test = SceneTileDataset(scenes, tile_size=settings.scene_size, specs=data.specs, augment=False, seed=0)
    info = {
        "test_seeds": [TEST_SEED_OFFSET, TEST_SEED_OFFSET + settings.test_scenes - 1],
        "val_seeds": [VAL_SEED_OFFSET, VAL_SEED_OFFSET + settings.val_scenes - 1],
        "train_seeds": [0, settings.train_scenes - 1],
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
