import numpy as np
import pytest

from stars_edge.metrics import argmax_agreement, confusion_matrix, segmentation_scores


def test_perfect_prediction_is_100() -> None:
    target = np.array([[0, 1], [2, 2]])
    scores = segmentation_scores(target, target, classes=3)
    assert scores.miou == pytest.approx(100.0)
    assert scores.mf1 == pytest.approx(100.0)


def test_known_confusion() -> None:
    target = np.array([0, 0, 1, 1, 255])
    prediction = np.array([0, 1, 1, 1, 0])
    matrix = confusion_matrix(prediction, target, classes=2)
    assert matrix.tolist() == [[1, 1], [0, 2]]
    scores = segmentation_scores(prediction, target, classes=2)
    assert scores.per_class_iou == pytest.approx((50.0, 200 / 3))
    assert scores.pixel_accuracy == pytest.approx(75.0)


def test_absent_classes_are_excluded_and_valid_mask_applies() -> None:
    target = np.array([0, 0, 1])
    prediction = np.array([0, 0, 0])
    scores = segmentation_scores(prediction, target, classes=4, valid=np.array([True, True, False]))
    assert np.isnan(scores.per_class_iou[2]) and scores.miou == pytest.approx(100.0)
    assert scores.as_dict(["a", "b", "c", "d"])["per_class_iou"]["c"] is None


def test_argmax_agreement_on_logits() -> None:
    logits = np.zeros((1, 2, 2, 2))
    logits[0, 1, 0, 0] = 1
    assert argmax_agreement(logits, np.zeros((1, 2, 2), dtype=int)) == pytest.approx(75.0)
