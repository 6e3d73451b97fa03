"""Segmentation metrics from a confusion matrix (numpy only, so the runtime and benchmarks share them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def confusion_matrix(
    prediction: np.ndarray,
    target: np.ndarray,
    classes: int,
    ignore_index: int | None = 255,
    valid: np.ndarray | None = None,
) -> np.ndarray:
    """``classes x classes`` counts, rows = target, columns = prediction; ignored/invalid pixels dropped."""
    prediction = np.asarray(prediction).reshape(-1).astype(np.int64)
    target = np.asarray(target).reshape(-1).astype(np.int64)
    if prediction.shape != target.shape:
        raise ValueError(f"prediction and target sizes differ: {prediction.shape} vs {target.shape}")
    keep = (target >= 0) & (target < classes) & (prediction >= 0) & (prediction < classes)
    if ignore_index is not None:
        keep &= target != ignore_index
    if valid is not None:
        keep &= np.asarray(valid).reshape(-1).astype(bool)
    index = target[keep] * classes + prediction[keep]
    return np.bincount(index, minlength=classes * classes).reshape(classes, classes)


@dataclass(frozen=True)
class SegmentationScores:
    """mIoU / mF1 in percent. Classes absent from both target and prediction are NaN and excluded."""

    per_class_iou: tuple[float, ...]
    per_class_f1: tuple[float, ...]
    pixel_accuracy: float

    @property
    def miou(self) -> float:
        values = np.asarray(self.per_class_iou, dtype=np.float64)
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    @property
    def mf1(self) -> float:
        values = np.asarray(self.per_class_f1, dtype=np.float64)
        return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")

    def as_dict(self, class_names: Sequence[str] | None = None) -> dict[str, object]:
        names = (
            list(class_names) if class_names is not None else [str(i) for i in range(len(self.per_class_iou))]
        )
        return {
            "miou": round(self.miou, 4),
            "mf1": round(self.mf1, 4),
            "pixel_accuracy": round(self.pixel_accuracy, 4),
            "per_class_iou": {
                n: (None if np.isnan(v) else round(v, 4))
                for n, v in zip(names, self.per_class_iou, strict=False)
            },
        }


def scores_from_confusion(confusion: np.ndarray) -> SegmentationScores:
    confusion = np.asarray(confusion, dtype=np.float64)
    true_positive = np.diag(confusion)
    support = confusion.sum(axis=1)
    predicted = confusion.sum(axis=0)
    union = support + predicted - true_positive
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, true_positive / union, np.nan) * 100.0
        f1 = np.where(support + predicted > 0, 2 * true_positive / (support + predicted), np.nan) * 100.0
    total = confusion.sum()
    accuracy = float(true_positive.sum() / total * 100.0) if total > 0 else float("nan")
    return SegmentationScores(tuple(float(v) for v in iou), tuple(float(v) for v in f1), accuracy)


def segmentation_scores(
    prediction: np.ndarray,
    target: np.ndarray,
    classes: int,
    ignore_index: int | None = 255,
    valid: np.ndarray | None = None,
) -> SegmentationScores:
    return scores_from_confusion(confusion_matrix(prediction, target, classes, ignore_index, valid))


def argmax_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction (percent) of pixels whose class is the same in two predictions (or logits along axis 1)."""
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim == 4:
        a = a.argmax(axis=1)
    if b.ndim == 4:
        b = b.argmax(axis=1)
    return float((a == b).mean() * 100.0)
