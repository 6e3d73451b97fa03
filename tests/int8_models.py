"""Tiny STARS models for the export tests: an untrained checkpoint, and a briefly trained model with its FP32
ONNX graphs for the INT8 tests.

An untrained model has near-tied logits, where any rounding flips the argmax, so INT8 tests need one that
has learned something; ~2 s of training on the calibration tiles is enough.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.build import BuildOptions
from export.onnx_export import export_onnx, simplify_onnx
from export.tiles import TileSet
from stars_edge.checkpoint import CheckpointMeta, save_checkpoint
from stars_edge.data.synthetic import CLASS_NAMES, synthetic_specs
from stars_edge.modalities import ALL_PATTERNS, Pattern
from stars_edge.models import STARSModel, create_model, export_module

SPECS = synthetic_specs(4)
BANDS = {m: s.bands for m, s in SPECS.items()}
TILE = 64


def small(checkpoint: Path, out: Path, **overrides: Any) -> BuildOptions:
    """Options for a build that takes seconds: 64 px tiles, 4 calibration, 2 gate tiles, no INT8 control."""
    settings: dict[str, Any] = {
        "patterns": "optical+sar,dsm",
        "calib_tiles": 4,
        "control_tiles": 0,
        "gate_tiles": 2,
        "tile": 64,
        "progress": False,
    }
    return BuildOptions(checkpoint=checkpoint, out=out, **{**settings, **overrides})


def save_untrained_checkpoint(path: Path, **overrides: Any) -> Path:
    """An untrained ``tiny`` STARS checkpoint over the synthetic modalities, tile size ``TILE``."""
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=len(CLASS_NAMES), **overrides)
    meta = CheckpointMeta(
        variant="tiny",
        method="stars",
        in_channels=BANDS,
        classes=len(CLASS_NAMES),
        class_names=CLASS_NAMES,
        specs=SPECS,
        tile_size=TILE,
    )
    return save_checkpoint(path, model, meta)


def train_tiny(tiles: TileSet, steps: int = 150, method: str = "stars", seed: int = 0) -> STARSModel:
    """``steps`` Adam steps of ``method`` on ``tiles``, cycling through every pattern; in eval mode."""
    torch.manual_seed(seed)
    model = create_model("tiny", BANDS, classes=7, method=method)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    inputs = {m: torch.from_numpy(a) for m, a in tiles.inputs.items()}
    labels = torch.from_numpy(tiles.labels.astype(np.int64))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        batch = torch.randint(0, len(tiles), (8,), generator=generator)
        pattern = ALL_PATTERNS[step % len(ALL_PATTERNS)]
        logits = model({m: inputs[m][batch] for m in pattern})
        loss = torch.nn.functional.cross_entropy(logits, labels[batch], ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval()


def export_fp32(model: STARSModel, patterns: Iterable[Pattern], folder: Path) -> dict[Pattern, Path]:
    """Simplified FP32 ONNX graph per pattern, as the build writes them."""
    paths = {}
    for pattern in patterns:
        path = folder / f"{pattern}.fp32.onnx"
        export_onnx(export_module(model, pattern), pattern, BANDS, path)
        simplify_onnx(path)
        paths[pattern] = path
    return paths
