"""Measure how far a fill value's influence reaches through an engine: the runtime's context margin.

The runtime puts a fill value into invalid pixels only because an engine needs an input there, and must keep
every used output independent of it (docs/RUNTIME.md). It does so by not using a modality within the
**context margin** of that modality's invalid pixels. This module measures the margin on the exported FP32
ONNX engines: on random normalised tiles, a square hole in one modality is filled once with 0 and once with
large values; the margin is the largest Chebyshev distance from the hole at which any class probability
moved by more than ``tolerance``. The maximum over patterns, modalities and trials goes into the manifest.

Engines with a global component (e.g. squeeze-excitation attention pools the whole tile) move every pixel a
little; ``tolerance`` separates that faint global effect from the receptive field's reach, and the result is
capped at ``MAX_MARGIN`` (a larger margin would drop modalities over large areas around every gap).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from runtime.upsampling import input_resolution
from stars_edge.errors import ExportError
from stars_edge.manifest import Manifest
from stars_edge.modalities import Pattern

#: Probability change that counts as influence (0.1 percentage point).
TOLERANCE = 1e-3
#: Largest margin recorded; engines whose fills reach further are capped (and the build log says so).
MAX_MARGIN = 64
HOLE = 8
TRIALS = 3
FILL_STD = 4.0


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def measure_context_margin(
    path: str | Path,
    pattern: Pattern,
    bands: dict[str, int],
    size: int = 128,
    tolerance: float = TOLERANCE,
    trials: int = TRIALS,
    seed: int = 0,
    output: str | None = None,
) -> int:
    """Pixels from an invalid square at which the engine's probabilities still move by > ``tolerance``."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    try:
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ExportError(f"{path}: cannot load for the context-margin measurement ({exc})") from exc
    names = [output] if output else None
    top = (size - HOLE) // 2
    hole = np.zeros((size, size), dtype=bool)
    hole[top : top + HOLE, top : top + HOLE] = True
    yy, xx = np.mgrid[0:size, 0:size]
    distance = np.maximum(
        np.maximum(top - yy, yy - (top + HOLE - 1)), np.maximum(top - xx, xx - (top + HOLE - 1))
    ).clip(min=0)
    rng = np.random.default_rng(seed)
    margin = 0
    for modality in pattern:
        for _ in range(trials):
            feed = {m: rng.standard_normal((1, bands[m], size, size)).astype(np.float32) for m in pattern}
            feed[modality][:, :, hole] = 0.0
            base = _softmax(input_resolution(session.run(names, feed)[0], (size, size)))
            filled = {m: v.copy() for m, v in feed.items()}
            filled[modality][:, :, hole] = rng.choice(
                [-FILL_STD, FILL_STD], size=(bands[modality], HOLE * HOLE)
            )
            moved = _softmax(input_resolution(session.run(names, filled)[0], (size, size)))
            moved = np.abs(moved - base).max(axis=(0, 1)) > tolerance
            moved &= ~hole
            if moved.any():
                margin = max(margin, int(distance[moved].max()))
    return margin


def measure_manifest_margin(
    manifest: Manifest, log: Callable[[str], None] | None = None, size: int | None = None
) -> int:
    """The context margin of a manifest: the largest over its FP32 ONNX engines, capped at ``MAX_MARGIN``."""
    if manifest.root is None:
        raise ExportError("manifest has no folder yet; save it before measuring the context margin")
    bands = {m: spec.bands for m, spec in manifest.modalities.items()}
    side = size or min(256, max(64, manifest.tile_size))
    margin = 0
    for entry in manifest.engines:
        if entry.precision != "fp32" or entry.backend != "onnxruntime":
            continue
        path = Path(manifest.root) / entry.path
        margin = max(margin, measure_context_margin(path, entry.pattern, bands, side, output=entry.output))
    if margin > MAX_MARGIN:
        if log is not None:
            log(f"context margin {margin} px exceeds {MAX_MARGIN}; recording {MAX_MARGIN}")
        margin = MAX_MARGIN
    return margin
