"""Where is STARS's single-modality gap: in the shared decoder or in the modality's features?

Trains one model at the demo's budget (``studies/recipe_study.py``'s recipe), scores it on one
single-modality pattern of the recipe study's held-out scenes, then gives it ``--finetune-steps`` more steps
on that pattern alone, from the same trained weights, with every BatchNorm frozen (eval mode), for:

- ``decoder``: only the decoder (fusion, smooth, head) trains; the encoders are frozen;
- ``modality_path``: the decoder and the modality's stem, the shared trunk, its specific branch and mixers.

A ``single_modality`` model gets the same extra steps for all its weights (``all``), so both sides have the
same budget. If decoder-only fine-tuning recovers most of the gap, the shared decoder is the bottleneck, and
a decoder per pattern (``decoder="per_pattern"``, free at inference since every engine is one pattern) is the
lever. One JSON row per run is appended to ``--results``.

    python studies/decoder_probe.py --method stars --seed 0
    python studies/decoder_probe.py --method single_modality --seed 0
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python studies/decoder_probe.py`: make `studies.` importable
    sys.path.insert(0, str(ROOT))

from stars_edge.modalities import IGNORE_INDEX  # noqa: E402
from studies.common import RESULTS_DIR, short_commit  # noqa: E402
from studies.recipe_study import demo_budget_settings, held_out_tiles, parse_sets  # noqa: E402

RESULTS = RESULTS_DIR / "decoder_probe.jsonl"
DECODER = ("fusion.", "smooth.", "head.", "pattern_decoders.")


def trainable_prefixes(method: str, modality: str, part: str) -> tuple[str, ...]:
    """Parameter-name prefixes fine-tuned for ``part`` (``decoder``, ``modality_path`` or ``all``)."""
    if part == "all" or method == "single_modality":
        return ("",)
    if part == "decoder":
        return DECODER
    if part == "modality_path":
        return (*DECODER, f"stems.{modality}.", "shared.", f"specific.{modality}.", f"mixers.{modality}.")
    raise ValueError(f"unknown part {part!r}; valid: decoder, modality_path, all")


def fine_tune(
    model: Any,
    tiles: Any,
    modality: str,
    prefixes: tuple[str, ...],
    steps: int,
    seed: int,
    ignore_index: int = IGNORE_INDEX,
) -> Any:
    """A copy of ``model`` trained ``steps`` more steps on ``modality`` alone; only ``prefixes`` train and
    every BatchNorm keeps its statistics (eval mode)."""
    import torch

    from training.data import collate
    from training.losses import segmentation_loss

    tuned = copy.deepcopy(model).eval()
    trained = []
    for name, parameter in tuned.named_parameters():
        parameter.requires_grad_(name.startswith(prefixes))
        if parameter.requires_grad:
            trained.append(parameter)
    optimizer = torch.optim.AdamW(trained, lr=5e-4, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(1000 + seed)
    for _ in range(steps):
        indices = torch.randint(len(tiles), (8,), generator=generator).tolist()
        batch = collate([tiles[i] for i in indices], [modality, "label"])
        loss = segmentation_loss(tuned({modality: batch[modality]}), batch["label"], ignore_index, 0.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return tuned


def run(
    method: str,
    modality: str,
    seed: int,
    steps: int,
    finetune_steps: int,
    test_scenes: int,
    sets: dict[str, str],
) -> dict[str, Any]:
    import torch

    from stars_edge.config import load_config
    from stars_edge.modalities import Pattern
    from training.config import TrainConfig
    from training.data import build_training_data
    from training.evaluation import evaluate_model
    from training.loop import train

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as work:
        settings = demo_budget_settings(steps, seed, 1, Path(work))
        if method == "single_modality":
            settings.update(method="single_modality", modalities=modality)
        settings.update(sets)
        config = load_config(TrainConfig, None, settings)
        data = build_training_data(config)
        model = train(config, progress=False, data=data).model
    test = held_out_tiles(data, test_scenes, config.synthetic_optical_bands)
    pattern = Pattern.parse(modality)

    def score(candidate: Any) -> float:
        return round(evaluate_model(candidate, test, [pattern], 8, data.ignore_index)[modality].miou, 2)

    parts = ("all",) if method == "single_modality" else ("decoder", "modality_path")
    row: dict[str, Any] = {
        "method": method,
        "modality": modality,
        "seed": seed,
        "steps": steps,
        "finetune_steps": finetune_steps,
        "set": sets,
        "commit": short_commit(),
        "miou": {"trained": score(model)},
    }
    for part in parts:
        prefixes = trainable_prefixes(method, modality, part)
        tuned = fine_tune(model, data.train, modality, prefixes, finetune_steps, seed, data.ignore_index)
        row["miou"][part] = score(tuned)
    return row


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--method", choices=("stars", "single_modality"), default="stars")
    parser.add_argument("--modality", choices=("optical", "sar", "dsm"), default="optical")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=600, help="training steps (the demo's budget: 600)")
    parser.add_argument("--finetune-steps", type=int, default=300, help="extra steps on the pattern alone")
    parser.add_argument("--test-scenes", type=int, default=12, help="held-out 256 px scenes")
    parser.add_argument("--set", action="append", default=[], help="TrainConfig override key=value")
    parser.add_argument("--results", type=Path, default=RESULTS, help="JSONL file the row is appended to")
    args = parser.parse_args(argv)
    row = run(
        args.method,
        args.modality,
        args.seed,
        args.steps,
        args.finetune_steps,
        args.test_scenes,
        parse_sets(args.set),
    )
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
