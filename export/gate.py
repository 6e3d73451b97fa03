"""The accuracy gate: every precision of every pattern is measured on held-out tiles before it ships.

Per pattern, the FP32 graph's predictions are the reference. Each precision gets its mIoU and per-class IoU
against the labels (stars_edge.metrics) and its pixel agreement with FP32. A precision whose mIoU is more than
``budget`` points below FP32's is *flagged*: the manifest says so, the CLI prints it, ``--strict`` refuses to
write it. So is one where any single class loses more than ``class_budget`` IoU points: a good mean can hide a
minority class that vanished (``flagged_classes`` names them). A precision that cannot run on this machine's
ONNX Runtime is *not_measured*, never silently passed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stars_edge.errors import ExportError
from stars_edge.manifest import EngineAccuracy, GateVerdict
from stars_edge.metrics import argmax_agreement, segmentation_scores

DEFAULT_BUDGET = 1.0  # mIoU points
#: IoU points one class may lose; larger than the mean's budget (a class is measured on fewer pixels).
DEFAULT_CLASS_BUDGET = 5.0


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
    reference_per_class: Mapping[str, float | None] | None = None,
    class_budget: float = DEFAULT_CLASS_BUDGET,
) -> EngineAccuracy:
    """Accuracy entry of one precision: scores vs labels, agreement and mIoU drop vs the FP32 reference,
    and the classes whose IoU dropped more than ``class_budget`` vs ``reference_per_class``."""
    if prediction is None:
        return EngineAccuracy(
            miou=None, per_class_iou={}, agreement_with_fp32=None, miou_drop=None, gate="not_measured"
        )
    scores = segmentation_scores(prediction.classes, labels, len(class_names), ignore_index)
    miou = _rounded(scores.miou)
    agreement = round(argmax_agreement(prediction.classes, reference.classes), 4)
    drop = round(reference_miou - miou, 4) if reference_miou is not None and miou is not None else None
    per_class = {name: _rounded(v) for name, v in zip(class_names, scores.per_class_iou, strict=True)}
    flagged_classes = class_drops(per_class, reference_per_class or {}, class_budget)
    verdict: GateVerdict = (
        "not_measured" if drop is None else "flagged" if drop > budget or flagged_classes else "pass"
    )
    accuracy = EngineAccuracy(
        miou=miou, per_class_iou=per_class, agreement_with_fp32=agreement, miou_drop=drop, gate=verdict
    )
    if flagged_classes:
        accuracy["flagged_classes"] = flagged_classes
    return accuracy


def class_drops(
    per_class: Mapping[str, float | None], reference: Mapping[str, float | None], class_budget: float
) -> list[str]:
    """Classes present in both whose IoU fell more than ``class_budget`` points below the reference."""
    flagged = []
    for name, value in per_class.items():
        before = reference.get(name)
        if before is None:
            continue  # the class is absent from the gate tiles: nothing to lose
        if (value if value is not None else 0.0) < before - class_budget:
            flagged.append(name)
    return flagged


def try_predict(onnx_path: str | Path, inputs: dict[str, np.ndarray]) -> tuple[Predictions | None, str]:
    """Predictions, or None and the reason when ONNX Runtime on this CPU cannot run the graph."""
    try:
        return predict(onnx_path, inputs), ""
    except ExportError as exc:
        return None, str(exc)
    except Exception as exc:  # onnxruntime raises untyped errors for unsupported kernels at run time
        return None, f"{type(exc).__name__}: {exc}"


def try_predict_openvino(
    onnx_path: str | Path, inputs: dict[str, np.ndarray], batch: int = 4
) -> tuple[Predictions | None, str]:
    """Predictions of OpenVINO's CPU plugin, or None and why (not installed, cannot compile the graph)."""
    from runtime.backends import OpenVINOBackend
    from runtime.upsampling import input_resolution
    from stars_edge.errors import StarsEdgeError

    if not OpenVINOBackend.is_available():
        return None, "openvino is not installed"
    try:
        backend = OpenVINOBackend(onnx_path)
        count = len(next(iter(inputs.values())))
        size = next(iter(inputs.values())).shape[-2:]
        batches = [
            {k: v[start : start + batch] for k, v in inputs.items()} for start in range(0, count, batch)
        ]
        classes = [input_resolution(backend.run(part), size).argmax(axis=1) for part in batches]
        backend.close()
    except StarsEdgeError as exc:
        return None, str(exc)
    return Predictions(np.concatenate(classes).astype(np.uint8)), ""


def with_openvino(
    accuracy: EngineAccuracy,
    onnx_path: str | Path,
    inputs: dict[str, np.ndarray],
    reference: Predictions,
    labels: np.ndarray,
    class_names: Sequence[str],
    ignore_index: int,
    reference_accuracy: EngineAccuracy,
    budget: float,
) -> EngineAccuracy:
    """``accuracy`` (ONNX Runtime) joined with the same measurement on OpenVINO, where it is installed.

    The runtime runs ONNX files on OpenVINO on CPUs, and OpenVINO executes Q/DQ graphs with integer kernels
    whose rounding differs from ONNX Runtime's float emulation (measured: agreement with FP32 80-94 % vs
    97-99 % on the demo's INT8 engines). The verdict must cover what will run, so the worse of the two is
    recorded; ``by_backend`` keeps both.
    """
    prediction, _reason = try_predict_openvino(onnx_path, inputs)
    if prediction is None:
        return accuracy
    openvino = measure(
        prediction,
        reference,
        labels,
        class_names,
        ignore_index,
        reference_accuracy["miou"],
        budget,
        reference_per_class=reference_accuracy["per_class_iou"],
    )
    keys = ("miou", "miou_drop", "agreement_with_fp32", "gate")
    by_backend = {"onnxruntime": {k: accuracy[k] for k in keys}, "openvino": {k: openvino[k] for k in keys}}  # type: ignore[literal-required]
    severity = {"not_measured": 0, "pass": 1, "flagged": 2}
    worse = max(
        (accuracy, openvino),
        key=lambda a: (severity[a["gate"]], a["miou_drop"] if a["miou_drop"] is not None else -1e9),
    )
    joined = EngineAccuracy(**worse)
    joined["by_backend"] = by_backend
    joined["measured_on"] = "onnxruntime" if worse is accuracy else "openvino"
    return joined
