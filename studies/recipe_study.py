"""Recipe measurements for the STARS model: the demo's training budget, one variant per run, held-out scores.

Each run trains the demo's recipe (``edge``, 16 synthetic scenes of 256 px, 128 px tiles, batch 8) with the
given ``--set key=value`` overrides of ``TrainConfig``, then scores every pattern on held-out synthetic scenes
(seeds disjoint from training and validation) and appends one JSON row to ``--results`` with the settings,
the commit, the per-pattern mIoU, the mechanism checks of the last log line (``psa`` against
``psa_trivial``, ``translation_gain_min`` and every pair/scale gain, the per-class embedding gap) and the
seconds per step. This is how the defaults of docs/MODEL.md were chosen.

    python studies/recipe_study.py --name default
    python studies/recipe_study.py --name psa_t05 --set psa_temperature=0.5 --set lambda_psa=0.5
    python studies/recipe_study.py --render          # Markdown table of the stored rows
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python studies/recipe_study.py`: make `studies.` importable
    sys.path.insert(0, str(ROOT))

from studies.common import RESULTS_DIR, short_commit  # noqa: E402

RESULTS = RESULTS_DIR / "recipe_study.jsonl"
#: Held-out scenes start at this seed: training uses 0.., validation VAL_SEED_OFFSET.., the study these.
TEST_SEED = 70_000


def parse_sets(items: Sequence[str]) -> dict[str, str]:
    """``--set key=value`` options as a dict of ``TrainConfig`` overrides."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes key=value, got {item!r}")
        out[key.strip()] = value.strip()
    return out


def demo_budget_settings(steps: int, seed: int, threads: int, output_dir: Path) -> dict[str, Any]:
    """The demo's training recipe as TrainConfig settings (before ``--set`` overrides)."""
    return {
        "variant": "edge",
        "synthetic_size": 256,
        "synthetic_train_scenes": 16,
        "synthetic_val_scenes": 1,
        "tile_size": 128,
        "batch_size": 8,
        "steps": steps,
        "seed": seed,
        "threads": threads,
        "output_dir": str(output_dir),
        "val_every": steps,
        "checkpoint_every": steps,
        "log_every": 25,
    }


def held_out_tiles(data: Any, count: int, optical_bands: int) -> Any:
    """``count`` held-out 256 px scenes (seeds from TEST_SEED), one evaluation tile per scene."""
    from stars_edge.data import SceneTileDataset
    from training.data import synthetic_scenes

    scenes = synthetic_scenes(count, 256, TEST_SEED, optical_bands)
    return SceneTileDataset(
        scenes, tile_size=256, specs=data.specs, augment=False, seed=0, modalities=tuple(data.specs)
    )


def run(
    name: str, sets: dict[str, str], steps: int, seed: int, test_scenes: int, threads: int
) -> dict[str, Any]:
    """Train one variant and score it; returns the JSON row."""
    import torch

    from stars_edge.config import load_config
    from training.config import TrainConfig
    from training.data import build_training_data
    from training.evaluation import evaluate_model
    from training.loop import train

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as work:
        base = demo_budget_settings(steps, seed, threads, Path(work) / "run")
        base.update(sets)
        config = load_config(TrainConfig, None, base)
        data = build_training_data(config)
        start = time.perf_counter()
        result = train(config, progress=False, data=data)
        seconds = time.perf_counter() - start
        log = [json.loads(line) for line in result.log_path.read_text().splitlines()]
        last = [row for row in log if "total" in row][-1]
        test = held_out_tiles(data, test_scenes, config.synthetic_optical_bands)
        scores = evaluate_model(result.model, test, "all", 8, data.ignore_index)
        held_out_gains = held_out_translation_gains(result.model, data.train, test)
    miou = {p: round(s.miou, 2) for p, s in scores.items()}
    per_class = {
        p: [None if v != v else round(float(v), 2) for v in s.per_class_iou] for p, s in scores.items()
    }
    mechanism = {
        k: round(float(v), 4)
        for k, v in last.items()
        if k.startswith(("psa", "translation_gain", "seg", "distill", "translation"))
    }
    return {
        "name": name,
        "commit": short_commit(),
        "steps": steps,
        "seed": seed,
        "set": sets,
        "seconds_per_step": round(seconds / steps, 4),
        "mean_miou": round(sum(miou.values()) / len(miou), 2),
        "miou": miou,
        "per_class_iou": per_class,
        "class_names": list(data.class_names),
        "last_log": mechanism,
        "held_out_translation": {
            reference: {k: round(v, 4) for k, v in gains.items()}
            for reference, gains in held_out_gains.items()
        },
    }


def held_out_translation_gains(
    model: Any, train_tiles: Any, test_tiles: Any, train_count: int = 64
) -> dict[str, dict[str, float]]:
    """Translation gains in inference mode on the held-out tiles (``training.losses.translation_gains``).

    ``vs_train_mean``: against the per-channel mean of the translation targets (``model.translation_targets``:
    fused or specific features) of the first ``train_count`` training tiles (the constant a deployed model
    could use); ``vs_held_out_mean``: against the held-out tiles' own mean (an oracle). Empty for a model
    without translators. Used by this study and by ``tests/test_model_patterns.py``.
    """
    import torch

    from training.data import collate
    from training.losses import translation_gains

    if not getattr(model, "translators", None) or len(model.translators) == 0:
        return {}
    keys = [*model.modalities, "label"]
    model.eval()
    with torch.no_grad():
        train_batch = collate([train_tiles[i] for i in range(min(train_count, len(train_tiles)))], keys)
        encoded = model.encode({m: train_batch[m] for m in model.modalities})
        train_targets = model.translation_targets(encoded)
        guesses = {
            (m, i): train_targets[m][i].mean(dim=(0, 2, 3))
            for m in train_targets
            for i in model.translation_scales
        }
        test_batch = collate([test_tiles[i] for i in range(len(test_tiles))], keys)
        encoded = model.encode({m: test_batch[m] for m in model.modalities})
        targets = model.translation_targets(encoded)
        fused = {m: e.fused for m, e in encoded.items()}
        pairs = {(s, t): model.translate(s, t, fused[s]) for s in fused for t in fused if s != t}
        return {
            "vs_train_mean": translation_gains(pairs, targets, guesses),
            "vs_held_out_mean": translation_gains(pairs, targets),
        }


def render(path: Path) -> str:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    patterns = max((list(r["miou"]) for r in rows), key=len) if rows else []
    head = "| run | commit | s/step | mean | " + " | ".join(patterns) + " | psa / trivial | gain min |"
    lines = [head, "|" + " --- |" * (6 + len(patterns))]
    for r in rows:
        log = r["last_log"]
        psa = f"{log['psa']:.2f} / {log['psa_trivial']:.2f}" if "psa" in log else "-"
        gain = f"{log['translation_gain_min']:.2f}" if "translation_gain_min" in log else "-"
        cells = " | ".join(f"{r['miou'][p]:.1f}" if p in r["miou"] else "" for p in patterns)
        lines.append(
            f"| {r['name']} (seed {r['seed']}) | {r['commit']} | {r['seconds_per_step']:.2f} | "
            f"{r['mean_miou']:.1f} | {cells} | {psa} | {gain} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--name", default="default", help="label of this run in the results")
    parser.add_argument("--set", action="append", default=[], help="TrainConfig override key=value")
    parser.add_argument("--steps", type=int, default=600, help="training steps (the demo's budget: 600)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-scenes", type=int, default=6, help="held-out 256 px scenes")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSONL file the row is appended to")
    parser.add_argument("--render", action="store_true", help="print the stored rows as a Markdown table")
    args = parser.parse_args(argv)
    if args.render:
        print(render(args.results))
        return 0
    row = run(args.name, parse_sets(args.set), args.steps, args.seed, args.test_scenes, args.threads)
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps({k: row[k] for k in ("name", "mean_miou", "miou", "seconds_per_step", "last_log")}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
