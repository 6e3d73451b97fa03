"""INT8 accuracy control: keep the few layers that cost the most accuracy in float, chosen on control tiles.

Why: one pattern's INT8 graph can lose far more than the others (the study's `dsm` engine: 0.62-0.85 mIoU
where the other six lose <= 0.2) because a handful of layers carry most of the quantization error. The
standard remedy (OpenVINO NNCF's accuracy-aware quantization, TensorRT's per-layer precision fallback) is to
run those layers in float. Which ones is decided here on **control tiles**: tiles from the calibration source
that calibration did not use, disjoint from the accuracy gate's tiles, so the gate still grades the result
on data that shaped none of it.

Procedure, per pattern, only when the fully quantized graph loses more than ``target`` mIoU on the control
tiles: rank every quantized convolution by the logit error left when it alone stays float (on the first
``RANKING_TILES`` control tiles), then keep the top 1, 2, ... in float until the control loss is within
``target`` or ``max_float_layers`` is reached; the best graph found is kept either way, and the gate decides.
Calibrated ranges are computed once and reused (``ranges_cache``), so each candidate costs one graph
rewrite and one short inference.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from export.ort_utils import make_session, run_logits
from stars_edge.metrics import segmentation_scores

#: Control tiles used to rank layers (all of them decide when to stop).
RANKING_TILES = 8
#: Fewer control tiles than this measure too little to choose layers by: accuracy control stays off.
MIN_CONTROL_TILES = 4
#: Layers that may stay float before accuracy control gives up (the rest of the graph stays INT8).
DEFAULT_MAX_FLOAT_LAYERS = 8
#: Stop once the control-tile loss is within this share of the gate budget: control and gate tiles are
#: different samples, so a graph that only just fits on one would fail the other half the time.
CONTROL_MARGIN = 0.5


@dataclass(frozen=True)
class ControlTiles:
    """Normalised inputs ``{name: (N, bands, t, t)}`` of one pattern and their labels ``(N, t, t)``."""

    inputs: Mapping[str, np.ndarray]
    labels: np.ndarray
    classes: int
    ignore_index: int


@dataclass(frozen=True)
class ControlResult:
    """What accuracy control did to one INT8 graph (``float_layers`` empty: nothing needed)."""

    float_layers: tuple[str, ...]
    drop_before: float  # control-tile mIoU lost by the fully quantized graph
    drop_after: float  # ... by the graph written
    target: float
    candidates: int  # quantized convolutions that could have stayed float

    @property
    def within_target(self) -> bool:
        return self.drop_after <= self.target

    def to_dict(self) -> dict[str, object]:
        return {
            "float_layers": list(self.float_layers),
            "control_miou_drop_before": round(self.drop_before, 4),
            "control_miou_drop_after": round(self.drop_after, 4),
            "control_target": round(self.target, 4),
        }


def quantized_convs(model: onnx.ModelProto) -> list[str]:
    """Names of the Convs whose activation input comes out of a DequantizeLinear (they run INT8)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    return [
        node.name
        for node in model.graph.node
        if node.op_type == "Conv"
        and node.input[0] in producers
        and producers[node.input[0]].op_type == "DequantizeLinear"
    ]


def logit_error(logits: np.ndarray, reference: np.ndarray) -> float:
    """Mean absolute logit difference relative to the reference's mean magnitude."""
    return float(np.abs(logits - reference).mean() / max(float(np.abs(reference).mean()), 1e-12))


def control_int8(
    quantize: Callable[[Sequence[str], Path], Path],
    fp32_path: Path,
    out_path: Path,
    tiles: ControlTiles,
    target: float,
    max_float_layers: int = DEFAULT_MAX_FLOAT_LAYERS,
    progress: Callable[[str], None] | None = None,
) -> ControlResult:
    """Write the INT8 graph to ``out_path``, with the fewest float layers that meet ``target`` on ``tiles``.

    ``quantize(float_nodes, path)`` writes an INT8 graph with those nodes left float (calibrating once).
    """
    reference = run_logits(make_session(fp32_path), tiles.inputs)
    reference_miou = _miou(reference, tiles)
    scratch = out_path.with_name(out_path.name + ".control.onnx")
    try:
        quantize((), out_path)
        drop_before = reference_miou - _miou(run_logits(make_session(out_path), tiles.inputs), tiles)
        candidates = quantized_convs(onnx.load(str(out_path)))
        if drop_before <= target or max_float_layers < 1 or not candidates:
            return ControlResult((), drop_before, drop_before, target, len(candidates))
        ranking = rank_layers(quantize, candidates, tiles, reference, scratch, progress)
        best: tuple[float, tuple[str, ...]] = (drop_before, ())
        for count in range(1, min(max_float_layers, len(ranking)) + 1):
            float_layers = tuple(ranking[:count])
            quantize(float_layers, scratch)
            drop = reference_miou - _miou(run_logits(make_session(scratch), tiles.inputs), tiles)
            if progress is not None:
                progress(f"{count} float layer(s): control mIoU drop {drop:.2f} (target {target:.2f})")
            if drop < best[0]:
                best = (drop, float_layers)
                scratch.replace(out_path)
            if drop <= target:
                break
        return ControlResult(best[1], drop_before, best[0], target, len(candidates))
    finally:
        scratch.unlink(missing_ok=True)


def rank_layers(
    quantize: Callable[[Sequence[str], Path], Path],
    candidates: Sequence[str],
    tiles: ControlTiles,
    reference: np.ndarray,
    scratch: Path,
    progress: Callable[[str], None] | None,
) -> list[str]:
    """Candidates ordered by the logit error left when each alone stays float (smallest first)."""
    subset = {name: array[:RANKING_TILES] for name, array in tiles.inputs.items()}
    errors = []
    for index, name in enumerate(candidates):
        quantize((name,), scratch)
        errors.append(
            (logit_error(run_logits(make_session(scratch), subset), reference[:RANKING_TILES]), name)
        )
        if progress is not None and (index + 1) % 10 == 0:
            progress(f"ranked {index + 1}/{len(candidates)} quantized layers")
    return [name for _, name in sorted(errors)]


def _miou(logits: np.ndarray, tiles: ControlTiles) -> float:
    return segmentation_scores(logits.argmax(axis=1), tiles.labels, tiles.classes, tiles.ignore_index).miou
