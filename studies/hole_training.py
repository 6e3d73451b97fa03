"""Does training on scenes with holes (clouds, a SAR swath gap) pay on cloudy scenes, and what does it cost on
clean ones? (issue 22: keep it only if it wins without costing the clean patterns)

Trains the same recipe twice, same seed and steps: once on clean synthetic scenes, once with the hole
options on (``synthetic_train_cloud_cover``, ``synthetic_train_sar_gap``). Each checkpoint is scored
(1) per pattern on clean test scenes, (2) on held-out cloudy scenes through the PyTorch model, each pixel
predicted by the pattern of the modalities valid there (context margin 0), and (3) through the runtime on
FP32 engines, as ``studies/edge_study.py`` does: the margin and optical dilation picked on validation
scenes against every fixed pair on 8 held-out cloudy scenes. A clean-trained model is only fairly compared
with the margin and dilation chosen for it, which (3) gives. Writes one JSON file (commit, settings, scores).

    python studies/hole_training.py --out benchmarks/results/hole_training_pilot.json --steps 800
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python studies/hole_training.py`: make `studies.` importable
    sys.path.insert(0, str(ROOT))

from studies.common import RESULTS_DIR, short_commit  # noqa: E402

#: The hole options the second run trains with (the first trains on clean scenes).
HOLES: dict[str, Any] = {"synthetic_train_cloud_cover": 0.15, "synthetic_train_sar_gap": 0.2}
#: Clean test scenes and held-out cloudy scenes: seeds far from training (0..), validation (100000..).
TEST_SEED, CLOUDY_SEED = 200_000, 300_000


def cloudy_scores(model: Any, specs: Any, scenes: int, size: int) -> dict[str, float]:
    """mIoU on held-out cloudy scenes, each pixel by the pattern valid there (and the full pattern run on
    zero-filled holes, for reference), overall, on hole pixels and on pixels where every modality is valid."""
    import numpy as np
    import torch

    from stars_edge.data import SceneTileDataset
    from stars_edge.data.synthetic import SyntheticConfig, generate_scene
    from stars_edge.metrics import confusion_matrix, scores_from_confusion
    from stars_edge.modalities import all_patterns
    from training.data import collate

    generated = [
        generate_scene(SyntheticConfig(size=size, seed=CLOUDY_SEED + i, cloud_cover=0.15, sar_gap=0.2))
        for i in range(scenes)
    ]
    tiles = SceneTileDataset(generated, tile_size=size, specs=specs, augment=False, seed=0)
    modalities = model.modalities
    batch = collate([tiles[i] for i in range(len(tiles))], [*modalities, "label"], masks=True)
    valid = {m: batch[f"valid/{m}"] for m in modalities}
    labels = batch["label"].numpy()
    composite = torch.full(batch["label"].shape, -1, dtype=torch.long)
    full: torch.Tensor | None = None
    model.eval()
    with torch.no_grad():
        for pattern in all_patterns(modalities):
            predicted = model({m: batch[m] for m in pattern}).argmax(dim=1)
            full = predicted if full is None else full
            here = torch.ones_like(composite, dtype=torch.bool)
            for m in modalities:
                here &= valid[m] if m in pattern else ~valid[m]
            composite[here] = predicted[here]
    assert full is not None and bool((composite >= 0).all())
    holes = ~torch.stack([valid[m] for m in modalities]).all(dim=0)
    out = {"hole_fraction": float(holes.float().mean())}
    for name, predicted in (("composite", composite), ("full_pattern_zero_filled", full)):
        for region, mask in (("all", None), ("holes", holes), ("clear", ~holes)):
            kept = labels if mask is None else np.where(mask.numpy(), labels, 255)
            matrix = confusion_matrix(predicted.numpy(), kept, model.classes, 255)
            out[f"{name}/{region}"] = scores_from_confusion(matrix).miou
    return out


def run(name: str, options: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """Train (or reuse) one checkpoint and score it three ways."""
    import numpy as np
    import torch

    from export.build import build_engines
    from stars_edge.checkpoint import load_checkpoint
    from stars_edge.data import SceneTileDataset
    from studies.edge_study import study as edge_study
    from training.config import TrainConfig
    from training.data import synthetic_scenes
    from training.evaluation import evaluate_model
    from training.loop import train

    torch.set_num_threads(1)
    work = args.work_dir / name
    checkpoint = work / "checkpoint.pt"
    result: dict[str, Any] = {"options": options}
    if not checkpoint.exists():
        started = time.perf_counter()
        config = TrainConfig(
            variant="edge", steps=args.steps, synthetic_train_scenes=args.train_scenes, synthetic_size=256,
            tile_size=128, batch_size=8, synthetic_val_scenes=1, val_every=100_000, checkpoint_every=100_000,
            log_every=50, seed=args.seed, threads=1, output_dir=work, **options,
        )  # fmt: skip
        train(config, progress=False)
        result["train_seconds"] = round(time.perf_counter() - started, 1)
    model, meta = load_checkpoint(checkpoint)
    test = SceneTileDataset(
        synthetic_scenes(args.scenes, 256, TEST_SEED), tile_size=256, specs=meta.specs, augment=False, seed=0
    )
    clean = {p: s.miou for p, s in evaluate_model(model, test, "all", batch_size=4).items()}
    result["clean"] = clean
    result["clean_mean"] = float(np.mean(list(clean.values())))
    result["cloudy_pytorch"] = cloudy_scores(model, meta.specs, args.scenes, 256)
    engines = work / "engines"
    if not (engines / "manifest.json").exists():
        build_engines(
            checkpoint=checkpoint, out=engines, precisions=("fp32",), calib_data="synthetic",
            edge_selection=False, progress=False,
        )  # fmt: skip
    result["cloudy_runtime"] = edge_study(engines, 8, 512, None)
    return result


def main(argv: Sequence[str] | None = None) -> int:
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=formatter)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "hole_training_pilot.json")
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/hole_training"))
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--train-scenes", type=int, default=8)
    parser.add_argument("--scenes", type=int, default=4, help="clean test and cloudy scenes (256 px) each")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    results = {name: run(name, options, args) for name, options in (("clean", {}), ("holes", HOLES))}
    record = {"commit": short_commit(), "settings": {k: str(v) for k, v in vars(args).items()}, **results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    print(json.dumps({n: {"clean_mean": r["clean_mean"], "runtime": r["cloudy_runtime"]["selection"]}
                      for n, r in results.items()}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
