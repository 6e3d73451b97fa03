"""Why the single-modality specialists beat STARS on their modality: under-fitting or generalisation?

Reads the accuracy study's checkpoints (``benchmarks/accuracy.py --work-dir``) and scores, per seed and
modality, STARS on that modality's pattern and the specialist trained on it, on two scene sets:

- ``fit``: the study's first training scenes (synthetic seeds from 0, whole scenes; training saw random crops
  of them). This is *not* held-out data: it measures how well each model fits what it was trained on.
- ``test``: the study's held-out test scenes (seeds from ``TEST_SEED_OFFSET``), as in the main table.

A gap that is as large on ``fit`` as on ``test`` means STARS fits its single-modality pattern less well (an
optimisation or capacity share: seven patterns through one decoder); a gap only on ``test`` means it
generalises less well. One row per (seed, modality, split) goes to the JSON; the Markdown has the means.

    python studies/specialist_gap.py --work-dir /work/stars_study_runs
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python studies/specialist_gap.py`: make `studies.` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.accuracy_runs import TEST_SEED_OFFSET  # noqa: E402
from benchmarks.common import BenchmarkError, machine_info  # noqa: E402
from studies.common import RESULTS_DIR  # noqa: E402

RESULTS = RESULTS_DIR
SCHEMA = "stars-edge/specialist-gap/v1"
MODALITIES = ("optical", "sar", "dsm")
SPLITS = {"fit": 0, "test": TEST_SEED_OFFSET}


def _checkpoint(work: Path, method: str, seed: int, modalities: str) -> Path:
    return work / f"synthetic_{method}_seed{seed}_lambda2_{modalities}" / "checkpoint.pt"


def seeds_available(work: Path) -> list[int]:
    """Seeds with a STARS checkpoint and all three specialists in ``work``."""
    seeds = []
    for seed in range(100):
        paths = [_checkpoint(work, "stars", seed, "optical-sar-dsm")]
        paths += [_checkpoint(work, "single_modality", seed, m) for m in MODALITIES]
        if all(p.is_file() for p in paths):
            seeds.append(seed)
    return seeds


def measure(work: Path, seeds: Sequence[int], scenes: int, size: int) -> list[dict[str, Any]]:
    """One row per (seed, modality, split): STARS's and the specialist's mIoU on that modality alone."""
    import torch

    from stars_edge.checkpoint import load_checkpoint
    from stars_edge.data import SceneTileDataset
    from stars_edge.modalities import Pattern
    from training.data import synthetic_scenes
    from training.evaluation import evaluate_model

    torch.set_num_threads(1)
    scene_sets = {split: synthetic_scenes(scenes, size, base) for split, base in SPLITS.items()}
    rows = []
    for seed in seeds:
        stars, meta = load_checkpoint(_checkpoint(work, "stars", seed, "optical-sar-dsm"))
        for modality in MODALITIES:
            single, single_meta = load_checkpoint(_checkpoint(work, "single_modality", seed, modality))
            pattern = Pattern((modality,))
            for split, chosen in scene_sets.items():
                scores = {}
                for name, model, specs in (
                    ("stars", stars, meta.specs),
                    ("single_modality", single, {**meta.specs, **single_meta.specs}),
                ):
                    dataset = SceneTileDataset(chosen, tile_size=size, specs=specs, augment=False, seed=0)
                    scores[name] = evaluate_model(model, dataset, [pattern], batch_size=2)[modality].miou
                rows.append(
                    {
                        "seed": seed,
                        "modality": modality,
                        "split": split,
                        "stars": round(float(scores["stars"]), 3),
                        "single_modality": round(float(scores["single_modality"]), 3),
                    }
                )
                print(
                    f"seed {seed} {modality:8s} {split:4s} stars {rows[-1]['stars']:6.2f} "
                    f"specialist {rows[-1]['single_modality']:6.2f}",
                    flush=True,
                )
    return rows


def summary(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per modality and split: mean STARS, mean specialist, mean gap (specialist - STARS), seeds."""
    out = []
    for modality in MODALITIES:
        for split in SPLITS:
            chosen = [r for r in rows if r["modality"] == modality and r["split"] == split]
            if not chosen:
                continue
            gaps = [r["single_modality"] - r["stars"] for r in chosen]
            out.append(
                {
                    "modality": modality,
                    "split": split,
                    "stars": float(np.mean([r["stars"] for r in chosen])),
                    "single_modality": float(np.mean([r["single_modality"] for r in chosen])),
                    "gap": float(np.mean(gaps)),
                    "gap_std": float(np.std(gaps, ddof=1)) if len(gaps) > 1 else None,
                    "seeds": sorted({int(r["seed"]) for r in chosen}),
                }
            )
    return out


def markdown(payload: Mapping[str, Any]) -> str:
    """The means table and what the splits are."""
    lines = [
        "# Specialist gap: fit vs held-out",
        "",
        f"Command: `{payload['command']}`. Scenes per split: {payload['scenes']} of "
        f"{payload['scene_size']} px. "
        "`fit` = the study's training scenes (not held out: how well each model fits its training data); "
        "`test` = the study's held-out test scenes. Gap = specialist - STARS, mIoU points, mean over seeds.",
        "",
        "| modality | split | STARS | specialist | gap | seeds |",
        "| --- | --- | ---: | ---: | ---: | --- |",
    ]
    for s in payload["summary"]:
        spread = f" ± {s['gap_std']:.2f}" if s["gap_std"] is not None else ""
        lines.append(
            f"| {s['modality']} | {s['split']} | {s['stars']:.2f} | {s['single_modality']:.2f} | "
            f"{s['gap']:+.2f}{spread} | {', '.join(map(str, s['seeds']))} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--work-dir", type=Path, required=True, help="the accuracy study's run folders")
    parser.add_argument(
        "--seeds", type=str, default=None, help="comma-separated (default: every complete seed)"
    )
    parser.add_argument("--scenes", type=int, default=8, help="scenes per split (default 8, as the study)")
    parser.add_argument("--scene-size", type=int, default=512, help="scene size in px (default 512)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for specialist_gap.{json,md}")
    args = parser.parse_args(argv)
    from stars_edge.io import write_json_atomic, write_text_atomic

    try:
        available = seeds_available(args.work_dir)
        seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else available
        missing = sorted(set(seeds) - set(available))
        if not seeds or missing:
            raise BenchmarkError(
                f"{args.work_dir}: no STARS + specialist checkpoints for seed(s) "
                f"{', '.join(map(str, missing or seeds)) or 'any'}; run benchmarks/accuracy.py first"
            )
        rows = measure(args.work_dir, seeds, args.scenes, args.scene_size)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    command = " ".join(["python studies/specialist_gap.py", *(argv if argv is not None else sys.argv[1:])])
    payload = {
        "schema": SCHEMA,
        "command": command,
        "scenes": args.scenes,
        "scene_size": args.scene_size,
        "machine": machine_info(1),
        "rows": rows,
        "summary": summary(rows),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    for path in (
        write_json_atomic(args.out / "specialist_gap.json", payload),
        write_text_atomic(args.out / "specialist_gap.md", markdown(payload)),
    ):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
