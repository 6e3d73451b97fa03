"""The accuracy gate: every precision of every pattern is measured on held-out tiles before it ships.

Per pattern, the FP32 graph's predictions are the reference. Each precision gets its mIoU and per-class IoU
against the labels (stars_edge.metrics) and its pixel agreement with FP32. A precision whose mIoU is more than
``budget`` points below FP32's is *flagged*: the manifest says so, the CLI prints it, ``--strict`` refuses to
write it. A precision that cannot run on this machine's ONNX Runtime is *not_measured*, never silently passed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stars_edge.errors import ExportError
from stars_edge.manifest import EngineAccuracy, GateVerdict
from stars_edge.metrics import argmax_agreement, segmentation_scores

DEFAULT_BUDGET = 1.0  # mIoU points


@dataclass(frozen=True)
class Predictions:
    """Class maps ``(N, H, W)`` of one graph on the gate tiles."""

    classes: np.ndarray


def predict(onnx_path: str | Path, inputs: dict[str, np.ndarray], batch: int = 4) -> Predictions:
    """Run a graph over the gate tiles with ONNX Runtime (CPU) and keep the argmax."""
    from export.ort_utils import make_session, run_logits

    logits = run_logits(make_session(onnx_path), inputs, batch=batch)
    return Predictions(logits.argmax(axis=1).astype(np.uint8))


def _rounded(value: float) -> float | None:
    return None if math.isnan(value) else round(float(value), 4)


def measure(
    prediction: Predictions | None,
    reference: Predictions,
    labels: np.ndarray,
    class_names: Sequence[str],
    ignore_index: int,
    reference_miou: float | None,
    budget: float,
) -> EngineAccuracy:
    """Accuracy entry of one precision: scores vs labels, agreement and mIoU drop vs the FP32 reference."""
    if prediction is None:
        return EngineAccuracy(
            miou=None, per_class_iou={}, agreement_with_fp32=None, miou_drop=None, gate="not_measured"
        )
    scores = segmentation_scores(prediction.classes, labels, len(class_names), ignore_index)
    miou = _rounded(scores.miou)
    agreement = round(argmax_agreement(prediction.classes, reference.classes), 4)
    drop = round(reference_miou - miou, 4) if reference_miou is not None and miou is not None else None
    verdict: GateVerdict = "not_measured" if drop is None else "flagged" if drop > budget else "pass"
    return EngineAccuracy(
        miou=miou,
        per_class_iou={name: _rounded(v) for name, v in zip(class_names, scores.per_class_iou, strict=True)},
        agreement_with_fp32=agreement,
        miou_drop=drop,
        gate=verdict,
    )


def try_predict(onnx_path: str | Path, inputs: dict[str, np.ndarray]) -> tuple[Predictions | None, str]:
    """Predictions, or None and the reason when ONNX Runtime on this CPU cannot run the graph."""
    try:
        return predict(onnx_path, inputs), ""
    except ExportError as exc:
        return None, str(exc)
    except Exception as exc:  # onnxruntime raises untyped errors for unsupported kernels at run time
        return None, f"{type(exc).__name__}: {exc}"
