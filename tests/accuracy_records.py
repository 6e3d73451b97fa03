"""Made-up accuracy studies for the harness tests: a tiny study's settings and results-log records as
``run_one`` writes them, with scores given by the test (no training)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks import accuracy  # noqa: E402
from benchmarks.accuracy_runs import RunSpec, StudySettings  # noqa: E402
from stars_edge.modalities import ALL_PATTERNS  # noqa: E402

CLASSES = ("background", "building", "car")
TINY_STUDY = dict(
    variant="tiny", steps=2, batch_size=2, tile_size=64, train_scenes=1, train_scene_size=128, val_scenes=1,
    val_every=1, test_scenes=1, scene_size=64, flop_steps=1, methods=("zero_fill_dropout",), seeds=(0,),
    sweep_seeds=(0,),
)  # fmt: skip


def tiny_study(tmp_path: Path, **changes: Any) -> accuracy.Study:
    settings = StudySettings(**{**TINY_STUDY, **changes})
    return accuracy.Study(settings, ("main",), tmp_path / "log.jsonl", tmp_path / "work")


def log_record(
    study: accuracy.Study,
    run: RunSpec,
    miou: float,
    fingerprint: str,
    classes: dict[str, float] | None = None,
) -> dict[str, Any]:
    """A results-log record as ``run_one`` writes it, with made-up scores (no training)."""
    patterns = [p.name for p in ALL_PATTERNS if set(p) <= set(run.modalities)]
    per_class = classes or dict.fromkeys(CLASSES, miou)
    return {
        "key": run.key,
        "spec": {**run.__dict__, "modalities": list(run.modalities)},
        "fingerprint": fingerprint,
        "commit": "abc123",
        "dirty": False,
        "settings_id": study.settings_id,
        "settings": study.settings.to_dict(),
        "finished": "2026-01-01T00:00:00Z",
        "run": {
            "train_seconds": 1.0,
            "seconds_per_step": 0.5,
            "flops_per_step": 2e9,
            "parameters": 1000,
            "lambda_psa": 0.1,
            "final_losses": {},
            "final_feature_std": None,
            "final_effective_rank": None,
        },
        "curve": [
            {"step": 1, "miou": miou - 5, "per_pattern": {}},
            {"step": 2, "miou": miou, "per_pattern": {}},
        ],
        "rows": [
            {"pattern": p, "miou": miou, "mf1": miou, "pixel_accuracy": 90.0, "per_class_iou": per_class}
            for p in patterns
        ],
        "data": {"test_class_pixels": {"background": 9000, "building": 3000, "car": 2000}},
    }
