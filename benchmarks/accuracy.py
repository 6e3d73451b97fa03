"""Accuracy evidence: STARS against its ablations and baselines, same backbone, same data, same budget.

One seeded command trains every method on the synthetic benchmark (disjoint train and test scenes) and scores
each on every modality-availability pattern; then the lambda_tr sweep (stars vs stars_no_stopgrad); then a
single-scene check on real Sentinel-1/-2 data (Sen1Floods11 sample chip: train on the left half, test on
the right half). Results are JSON rows (method, pattern, miou, mf1, per_class_iou, seed, steps, ...) plus
Markdown tables; ``--render`` re-renders the tables from stored JSON without training.

    python benchmarks/accuracy.py                        # the full experiment (about 15-20 min, 1 thread)
    python benchmarks/accuracy.py --steps 20 --quick     # a smoke run (numbers meaningless)
    python benchmarks/accuracy.py --render               # tables from benchmarks/results/accuracy_*.json

Every training run is logged under ``--work-dir`` (checkpoints and log.jsonl per run). One torch thread by
default: on a shared 2-core machine two intra-op threads oversubscribe the cores and run many times slower.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results"
SEN1FLOODS11 = ROOT.parent / "shared" / "data" / "sen1floods11_sample"
SCHEMA = "stars-edge/accuracy/v1"
MAIN_METHODS = (
    "stars",
    "stars_no_stopgrad",
    "stars_no_psa",
    "zero_fill_dropout",
    "shaspec",
    "single_modality",
)
SWEEP_METHODS = ("stars", "stars_no_stopgrad")
SWEEP_LAMBDAS = (0.1, 1.0, 10.0)


@dataclasses.dataclass
class Budget:
    """What every method gets: the same variant, steps, batch, tile, learning rate and seed."""

    variant: str = "tiny"
    steps: int = 300
    batch_size: int = 8
    tile_size: int = 128
    lr: float = 3e-3
    seed: int = 0
    threads: int = 1
    train_scenes: int = 6
    test_scenes: int = 3
    scene_size: int = 256
    sen1floods11_steps: int = 200


def _train_config(budget: Budget, work: Path, name: str, **changes: Any) -> Any:
    from training.config import TrainConfig

    base: dict[str, Any] = dict(
        variant=budget.variant,
        steps=budget.steps,
        batch_size=budget.batch_size,
        tile_size=budget.tile_size,
        lr=budget.lr,
        seed=budget.seed,
        threads=budget.threads,
        log_every=25,
        val_every=10**9,
        checkpoint_every=10**9,
        output_dir=work / name,
    )
    base.update(changes)
    return TrainConfig(**base)


def _rows(
    scores: Mapping[str, Any], class_names: Sequence[str], common: Mapping[str, Any]
) -> list[dict[str, Any]]:
    rows = []
    for pattern, s in scores.items():
        summary = s.as_dict(class_names)
        rows.append(
            {
                **common,
                "pattern": pattern,
                "miou": summary["miou"],
                "mf1": summary["mf1"],
                "pixel_accuracy": summary["pixel_accuracy"],
                "per_class_iou": summary["per_class_iou"],
            }
        )
    return rows


def _run(
    budget: Budget,
    work: Path,
    name: str,
    data: Any,
    test: Any,
    patterns: Sequence[Any],
    common: Mapping[str, Any],
    **changes: Any,
) -> list[dict[str, Any]]:
    """Train one configuration on ``data`` and score it on ``test`` for ``patterns``."""
    from training.evaluation import evaluate_model
    from training.loop import train

    config = _train_config(budget, work, name, **changes)
    start = time.perf_counter()
    result = train(config, progress=False, data=data)
    seconds = time.perf_counter() - start
    scores = evaluate_model(result.model, test, patterns, batch_size=4, ignore_index=data.ignore_index)
    mean = float(np.mean([s.miou for s in scores.values()]))
    print(f"  {name:<34} {seconds:6.1f} s   mean mIoU over {len(scores)} pattern(s) {mean:6.2f}", flush=True)
    info = {
        **common,
        "method": config.method,
        "variant": config.variant,
        "seed": config.seed,
        "steps": config.steps,
        "batch_size": config.batch_size,
        "tile_size": config.tile_size,
        "lambda_tr": config.lambda_tr,
        "lambda_psa": config.lambda_psa,
        "train_seconds": round(seconds, 1),
        "final_losses": {k: round(v, 5) for k, v in result.last_losses.items()},
        "final_feature_std": result.diagnostics.get("feature_std"),
        "final_effective_rank": result.diagnostics.get("effective_rank"),
        "trained_modalities": "+".join(config.modalities),
    }
    return _rows(scores, data.class_names, info)


def _synthetic_data(budget: Budget) -> tuple[Any, Any]:
    """Training data (scenes seeded 0..n-1) and test tiles (seeds from 100000: disjoint scenes)."""
    from stars_edge.data import SceneTileDataset
    from training.config import TrainConfig
    from training.data import VAL_SEED_OFFSET, build_training_data, synthetic_scenes

    config = TrainConfig(
        variant=budget.variant,
        tile_size=budget.tile_size,
        synthetic_size=budget.scene_size,
        synthetic_train_scenes=budget.train_scenes,
        synthetic_val_scenes=1,
        seed=budget.seed,
    )
    data = build_training_data(config)
    data = dataclasses.replace(data, val=None)
    scenes = synthetic_scenes(budget.test_scenes, budget.scene_size, VAL_SEED_OFFSET + 1000)
    test = SceneTileDataset(scenes, tile_size=budget.scene_size, specs=data.specs, augment=False, seed=0)
    return data, test


def run_synthetic(
    budget: Budget, work: Path, sweep: bool, methods: Sequence[str] = MAIN_METHODS
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The ablation table (``methods``, all by default) and, optionally, the lambda_tr sweep."""
    from stars_edge.modalities import ALL_PATTERNS, MODALITIES, Pattern

    data, test = _synthetic_data(budget)
    common = {"experiment": "synthetic", "dataset": "synthetic (stars_edge.data.synthetic)"}
    rows: list[dict[str, Any]] = []
    print(f"synthetic benchmark: {budget.train_scenes} train / {budget.test_scenes} test scenes", flush=True)
    for method in methods:
        if method == "single_modality":
            for modality in MODALITIES:
                rows += _run(
                    budget,
                    work,
                    f"single_{modality}",
                    data,
                    test,
                    [Pattern((modality,))],
                    common,
                    method=method,
                    modalities=(modality,),
                )
        else:
            rows += _run(budget, work, method, data, test, ALL_PATTERNS, common, method=method)
    sweep_rows: list[dict[str, Any]] = []
    if sweep:
        print("lambda_tr sweep", flush=True)
        sweep_common = {**common, "experiment": "lambda_tr_sweep"}
        for method in SWEEP_METHODS:
            for value in SWEEP_LAMBDAS:
                if value == 1.0:
                    sweep_rows += [
                        {**r, "experiment": "lambda_tr_sweep"} for r in rows if r["method"] == method
                    ]
                    continue
                sweep_rows += _run(
                    budget,
                    work,
                    f"{method}_lambda{value:g}",
                    data,
                    test,
                    ALL_PATTERNS,
                    sweep_common,
                    method=method,
                    lambda_tr=value,
                )
    return rows, sweep_rows


def _sen1floods11_halves(root: Path) -> tuple[Any, Any, dict[str, Any]]:
    """The one chip, split into a left (train) and a right (test) half; stats from the train half only."""
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
    for modality in ("optical", "sar"):
        image = getattr(train, modality).astype(np.float64)
        valid = train.valid[modality]
        values = image[:, valid]
        names = scene.specs[modality].band_names
        std = np.maximum(values.std(axis=1), 1e-3)
        specs[modality] = ModalitySpec(
            modality,
            names,
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
    }
    return train, test, info


def run_sen1floods11(budget: Budget, work: Path, root: Path) -> list[dict[str, Any]]:
    """Single-scene real-data check: STARS and baselines on optical+sar and sar (n = 1 chip)."""
    from stars_edge.data import SceneTileDataset
    from stars_edge.modalities import Pattern
    from training.data import TrainingData

    if not root.is_dir():
        print(f"Sen1Floods11 sample not found at {root}; skipping the real-data check", flush=True)
        return []
    train_scene, test_scene, info = _sen1floods11_halves(root)
    modalities = ("optical", "sar")
    train_tiles = SceneTileDataset(
        [train_scene],
        tile_size=budget.tile_size,
        specs=train_scene.specs,
        augment=True,
        seed=budget.seed,
        samples_per_epoch=64,
        modalities=modalities,
    )
    test_tiles = SceneTileDataset(
        [test_scene], tile_size=256, specs=train_scene.specs, augment=False, seed=0, modalities=modalities
    )
    data = TrainingData(
        train_tiles, None, dict(train_scene.specs), tuple(train_scene.class_names), "sen1floods11 (left half)"
    )
    common = {
        "experiment": "sen1floods11_single_scene",
        "dataset": f"Sen1Floods11 chip {info['chip']}",
        **info,
    }
    patterns = [Pattern.parse("optical+sar"), Pattern.parse("sar")]
    steps = budget.sen1floods11_steps
    print(f"Sen1Floods11 single-scene check ({info['chip']}, left half -> right half)", flush=True)
    rows: list[dict[str, Any]] = []
    for method in ("stars", "zero_fill_dropout"):
        rows += _run(
            budget,
            work,
            f"s1f11_{method}",
            data,
            test_tiles,
            patterns,
            common,
            method=method,
            modalities=modalities,
            steps=steps,
            psa_pixels_per_class=64,
        )
    rows += _run(
        budget,
        work,
        "s1f11_single_sar",
        data,
        test_tiles,
        [Pattern.parse("sar")],
        common,
        method="single_modality",
        modalities=("sar",),
        steps=steps,
    )
    return rows


# ------------------------------------------------------------------------------------------------ rendering


def _mean_std(values: Sequence[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def _pivot(rows: Sequence[Mapping[str, Any]], key: str, row_key: str = "method") -> list[str]:
    """Rows x patterns table of ``key``; several seeds give mean ± sample std."""
    from stars_edge.modalities import ALL_PATTERNS

    patterns = [p.name for p in ALL_PATTERNS if any(r["pattern"] == p.name for r in rows)]
    patterns += sorted({r["pattern"] for r in rows} - set(patterns))
    groups: dict[str, dict[str, dict[int, float]]] = {}
    for r in rows:
        if r[key] is not None:
            groups.setdefault(str(r[row_key]), {}).setdefault(r["pattern"], {})[int(r["seed"])] = float(
                r[key]
            )
    seeds = sorted({int(r["seed"]) for r in rows})
    singles = [p for p in patterns if "+" not in p]
    lines = [
        f"| {row_key} | "
        + " | ".join(patterns)
        + " | mean over patterns scored | mean over single-modality |",
        "| --- | " + " | ".join("---:" for _ in patterns) + " | ---: | ---: |",
    ]

    def seed_means(by_pattern: Mapping[str, Mapping[int, float]], names: Sequence[str]) -> list[float]:
        chosen = [by_pattern[p] for p in names if p in by_pattern]
        return [
            float(np.mean([v[seed] for v in chosen if seed in v]))
            for seed in seeds
            if any(seed in v for v in chosen)
        ]

    for name, by_pattern in groups.items():
        cells = [_mean_std(list(by_pattern[p].values())) if p in by_pattern else "n/a" for p in patterns]
        overall = seed_means(by_pattern, patterns)
        single = seed_means(by_pattern, singles)
        single_cell = _mean_std(single) if single and all(p in by_pattern for p in singles) else "n/a"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_mean_std(overall)} | {single_cell} |")
    return lines


def _per_class(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    classes = list(rows[0]["per_class_iou"])
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(r["method"], []).append(r["per_class_iou"])
    lines = [
        "| method | " + " | ".join(classes) + " |",
        "| --- | " + " | ".join("---:" for _ in classes) + " |",
    ]
    for method, items in groups.items():
        cells = []
        for c in classes:
            values = [i[c] for i in items if i.get(c) is not None]
            cells.append(f"{np.mean(values):.2f}" if values else "n/a")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def _paired(rows: Sequence[Mapping[str, Any]], reference: str = "stars") -> list[str]:
    """Per seed, the reference's mean mIoU over all patterns minus each method's (same seed, same data)."""
    means: dict[str, dict[int, float]] = {}
    by_method: dict[str, dict[int, list[float]]] = {}
    for r in rows:
        by_method.setdefault(r["method"], {}).setdefault(int(r["seed"]), []).append(float(r["miou"]))
    for method, values in by_method.items():
        means[method] = {seed: float(np.mean(v)) for seed, v in values.items()}
    if reference not in means:
        return []
    lines = [
        f"| method | seeds | {reference} minus method (mean ± std) | seeds where {reference} is better |",
        "| --- | ---: | ---: | ---: |",
    ]
    for method, seed_means in means.items():
        if method in (reference, "single_modality"):
            continue
        common = sorted(set(seed_means) & set(means[reference]))
        diffs = [means[reference][seed] - seed_means[seed] for seed in common]
        if diffs:
            wins = sum(d > 0 for d in diffs)
            lines.append(f"| {method} | {len(diffs)} | {_mean_std(diffs)} | {wins}/{len(diffs)} |")
    return lines


def _collapse(rows: Sequence[Mapping[str, Any]], row_key: str) -> list[str]:
    """End-of-training collapse diagnostics per run (rows recorded before diagnostics existed are skipped)."""
    seen: dict[tuple[str, int], Mapping[str, Any]] = {}
    for r in rows:
        if r.get("final_feature_std") is not None:
            seen.setdefault((str(r[row_key]), int(r["seed"])), r)
    if not seen:
        return []
    lines = [
        "Collapse diagnostics at the last logged step (fused features at the PSA scale, mean over "
        "modalities): `feature_std` is 0 for collapsed features and at most 1/sqrt(C) (C = channels).",
        "",
        f"| {row_key} | seed | feature_std | effective_rank | translation loss |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for (name, seed), r in seen.items():
        translation = r.get("final_losses", {}).get("translation")
        lines.append(
            f"| {name} | {seed} | {r['final_feature_std']:.3f} | {r['final_effective_rank']:.2f} | "
            f"{'n/a' if translation is None else f'{translation:.3f}'} |"
        )
    return lines


def _settings_line(payload: Mapping[str, Any]) -> str:
    s = payload.get("settings", {})
    rows = payload.get("rows", [])
    steps = sorted({int(r["steps"]) for r in rows}) or [s.get("steps")]
    seeds = sorted({int(r["seed"]) for r in rows}) or [s.get("seed")]
    return (
        f"Budget per run: variant `{s.get('variant')}`, {', '.join(map(str, steps))} steps, batch "
        f"{s.get('batch_size')}, {s.get('tile_size')} px tiles, lr {s.get('lr')}, seeds {seeds}, "
        f"{s.get('threads')} thread(s); written {payload.get('written', '?')} by "
        f"`{payload.get('command', '?')}` (the last command that wrote the file; `--append` runs merge rows)."
    )


def render_synthetic(main: Mapping[str, Any], sweep: Mapping[str, Any] | None) -> str:
    """Markdown for the ablation table and the lambda_tr sweep."""
    rows = main["rows"]
    s = main.get("settings", {})
    out = [
        "# Accuracy on the synthetic benchmark",
        "",
        "Generated by `python benchmarks/accuracy.py` (re-render: `--render`). mIoU / mF1 in percent on "
        f"{s.get('test_scenes')} held-out synthetic scenes ({s.get('scene_size')} px, seeds disjoint "
        f"from the {s.get('train_scenes')} training scenes). Every method: same backbone, same data, "
        "same number of steps. With several seeds a cell is mean ± sample std over seeds; the lambda_tr "
        "sweep and the per-class table use every seed available for that row.",
        "",
        _settings_line(main),
        "",
        "`single_modality` is one model per modality, so it has a score only on its own single-modality "
        "pattern (n/a elsewhere); the mean column averages the patterns each method was scored on.",
        "",
        "## mIoU per availability pattern",
        "",
        *_pivot(rows, "miou"),
        "",
        "## Paired comparison (mean mIoU over the 7 patterns, same seed)",
        "",
        *_paired(rows),
        "",
        "## mF1 per availability pattern",
        "",
        *_pivot(rows, "mf1"),
        "",
        "## Per-class IoU (mean over the patterns scored)",
        "",
        *_per_class(rows),
        "",
    ]
    if sweep and sweep.get("rows"):
        srows = [dict(r, run=f"{r['method']} λ_tr={r['lambda_tr']:g}") for r in sweep["rows"]]
        out += [
            "## lambda_tr sweep (stars vs stars_no_stopgrad)",
            "",
            "The stop-gradient claim: STARS should be less sensitive to the translation-loss weight. "
            "mIoU per pattern:",
            "",
            *_pivot(srows, "miou", row_key="run"),
            "",
            *_collapse(srows, "run"),
            "",
        ]
    return "\n".join(out)


def render_sen1floods11(payload: Mapping[str, Any]) -> str:
    """Markdown for the real single-scene check."""
    rows = payload["rows"]
    info = rows[0]
    water = [dict(r, water_iou=r["per_class_iou"].get("water")) for r in rows]
    return "\n".join(
        [
            "# Sen1Floods11 single-scene check (real Sentinel-1 + Sentinel-2)",
            "",
            f"**A single-scene check, not a benchmark** (n = 1 chip, {info['dataset']}): trained on the left "
            f"half ({info['train']}), scored on the right half ({info['test']}); binary water / not-water. "
            f"Water fraction: train {info['water_fraction_train']:.1%}, "
            f"test {info['water_fraction_test']:.1%}. "
            "Normalisation statistics come from the training half only.",
            "",
            _settings_line(payload),
            "",
            "## mIoU",
            "",
            *_pivot(rows, "miou"),
            "",
            "## Water IoU",
            "",
            *_pivot(water, "water_iou"),
            "",
        ]
    )


def _write(results: Path, name: str, payload: Mapping[str, Any]) -> Path:
    from stars_edge.io import write_json_atomic

    return write_json_atomic(results / name, payload)


def _row_key(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return (
        row["experiment"],
        row["method"],
        row["pattern"],
        row["seed"],
        row["lambda_tr"],
        row["trained_modalities"],
    )


def _save(
    results: Path,
    name: str,
    header: Mapping[str, Any],
    experiment: str,
    rows: Sequence[Mapping[str, Any]],
    append: bool,
) -> Path:
    """Write a result file; with ``append`` merge into the existing one (new rows replace same-key rows)."""
    import json

    merged: dict[tuple[Any, ...], Mapping[str, Any]] = {}
    path = results / name
    if append and path.is_file():
        for row in json.loads(path.read_text()).get("rows", []):
            merged[_row_key(row)] = row
    for row in rows:
        merged[_row_key(row)] = row
    all_rows = list(merged.values())
    seeds = sorted({int(r["seed"]) for r in all_rows})
    return _write(results, name, {**header, "experiment": experiment, "seeds": seeds, "rows": all_rows})


def render_all(results: Path = RESULTS) -> list[Path]:
    """Re-render every Markdown table from the stored JSON results."""
    import json

    from stars_edge.io import write_text_atomic

    written = []
    sweep_path = results / "accuracy_lambda_sweep.json"
    sweep = json.loads(sweep_path.read_text()) if sweep_path.is_file() else None
    for main_path in sorted(results.glob("accuracy_synthetic*.json")):
        # accuracy_synthetic.json carries the sweep; variants (e.g. _1000steps) are renamed extra runs
        main = json.loads(main_path.read_text())
        extra = sweep if main_path.name == "accuracy_synthetic.json" else None
        written.append(write_text_atomic(main_path.with_suffix(".md"), render_synthetic(main, extra)))
    s1_path = results / "accuracy_sen1floods11.json"
    if s1_path.is_file():
        payload = json.loads(s1_path.read_text())
        if payload.get("rows"):
            written.append(
                write_text_atomic(results / "accuracy_sen1floods11.md", render_sen1floods11(payload))
            )
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--render", action="store_true", help="only re-render Markdown from stored JSON")
    parser.add_argument("--steps", type=int, default=Budget.steps, help="training steps per run")
    parser.add_argument("--variant", default=Budget.variant, help="model variant for every run")
    parser.add_argument(
        "--seeds",
        default="0",
        help="comma list of seeds for the ablation table (sweep and Sen1Floods11 use the first)",
    )
    parser.add_argument(
        "--methods",
        default=",".join(MAIN_METHODS),
        help="comma list of methods for the ablation table (default: all)",
    )
    parser.add_argument(
        "--append",
        action="store_true",
        help="merge the new rows into existing result files (e.g. more seeds) instead of replacing",
    )
    parser.add_argument("--threads", type=int, default=Budget.threads, help="torch threads")
    parser.add_argument("--lr", type=float, default=Budget.lr, help="peak learning rate")
    parser.add_argument(
        "--sen1floods11-steps",
        type=int,
        default=Budget.sen1floods11_steps,
        help="steps per run of the Sen1Floods11 check",
    )
    parser.add_argument("--quick", action="store_true", help="smaller scenes and no sweep (smoke test)")
    parser.add_argument(
        "--skip", default="", help="comma list of parts to skip: synthetic, sweep, sen1floods11"
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=Path("/tmp/stars_edge_accuracy"),
        help="where each run's checkpoint and log go",
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the JSON and Markdown results")
    parser.add_argument("--sen1floods11", type=Path, default=SEN1FLOODS11, help="Sen1Floods11 sample folder")
    args = parser.parse_args(argv)
    if args.render:
        for path in render_all(args.out):
            print(f"wrote {path}")
        return 0

    import torch

    from benchmarks.common import machine_info

    torch.set_num_threads(args.threads)
    seeds = [int(v) for v in args.seeds.replace(",", " ").split()]
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - set(MAIN_METHODS))
    if unknown:
        parser.error(f"unknown method(s) {', '.join(unknown)}; valid: {', '.join(MAIN_METHODS)}")
    budget = Budget(
        variant=args.variant,
        steps=args.steps,
        seed=seeds[0],
        threads=args.threads,
        lr=args.lr,
        sen1floods11_steps=args.sen1floods11_steps,
    )
    if args.quick:
        budget = dataclasses.replace(budget, train_scenes=2, test_scenes=1, scene_size=128, tile_size=64)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    header = {
        "schema": SCHEMA,
        "written": stamp,
        "settings": dataclasses.asdict(budget),
        "machine": machine_info(args.threads),
        "command": " ".join(["python benchmarks/accuracy.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    started = time.perf_counter()
    if "synthetic" not in skip:
        rows: list[dict[str, Any]] = []
        sweep_rows: list[dict[str, Any]] = []
        for index, seed in enumerate(seeds):
            seeded = dataclasses.replace(budget, seed=seed)
            do_sweep = index == 0 and "sweep" not in skip and not args.quick
            main_rows, more_sweep = run_synthetic(seeded, args.work_dir / f"seed{seed}", do_sweep, methods)
            rows += main_rows
            sweep_rows += more_sweep
            _save(args.out, "accuracy_synthetic.json", header, "synthetic", rows, args.append)
        if sweep_rows:
            _save(args.out, "accuracy_lambda_sweep.json", header, "lambda_tr_sweep", sweep_rows, args.append)
    if "sen1floods11" not in skip:
        s1_rows = run_sen1floods11(budget, args.work_dir / f"seed{budget.seed}", args.sen1floods11)
        if s1_rows:
            _save(
                args.out,
                "accuracy_sen1floods11.json",
                header,
                "sen1floods11_single_scene",
                s1_rows,
                args.append,
            )
    for path in render_all(args.out):
        print(f"wrote {path}")
    print(f"total {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
