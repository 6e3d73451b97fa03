"""``python -m training.train [--config file.yaml] [--key value ...]``: train STARS or a baseline.

Every TrainConfig field is a flag (``--steps 200 --method shaspec``); flags override the YAML file. Launch
with ``torchrun --nproc_per_node N -m training.train ...`` for data-parallel training.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Sequence

from stars_edge.config import load_config
from stars_edge.errors import StarsEdgeError
from training.config import FIELD_HELP, TrainConfig
from training.loop import TrainResult, train

__all__ = ["TrainConfig", "TrainResult", "build_parser", "config_from_args", "main", "train"]


def build_parser() -> argparse.ArgumentParser:
    """One ``--flag`` per TrainConfig field; values are strings coerced by ``load_config``."""
    parser = argparse.ArgumentParser(
        prog="python -m training.train", description="Train STARS (or a baseline) on synthetic or real data."
    )
    parser.add_argument("--config", default=None, help="flat YAML file of TrainConfig keys")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        nargs = "+" if field.name in ("modalities", "translation_scales", "psa_modalities") else None
        parser.add_argument(
            flag,
            dest=field.name,
            default=None,
            nargs=nargs,
            help=f"{FIELD_HELP.get(field.name, field.name)} (default: {field.default})",
        )
    return parser


def config_from_args(argv: Sequence[str] | None = None) -> tuple[TrainConfig, bool]:
    """Parse flags into a TrainConfig (YAML first, flags override); returns (config, quiet)."""
    args = vars(build_parser().parse_args(argv))
    path = args.pop("config")
    quiet = bool(args.pop("quiet"))
    return load_config(TrainConfig, path, args), quiet


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point: domain errors become one line on stderr and exit code 1."""
    try:
        config, quiet = config_from_args(argv)
        result = train(config, progress=not quiet)
    except StarsEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    print(f"checkpoint: {result.checkpoint}")
    for pattern, scores in result.val_scores.items():
        print(f"val {pattern:<18} mIoU {scores['miou']:6.2f}  mF1 {scores['mf1']:6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
