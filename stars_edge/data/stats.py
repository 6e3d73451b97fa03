"""Dataset statistics (normalisation, class balance) and a cheap per-pixel probe of each modality's value.

Why: real datasets need per-band normalisation computed on the training split only (``stats.json``, read
back by ``open_dataset``); and the synthetic benchmark must show that each modality alone is informative but
ambiguous in its own way. ``modality_study`` measures that honestly with a per-pixel Gaussian classifier
(quadratic discriminant: one full-covariance Gaussian per class) on band values plus a few local-mean
features, fitted on training scenes and scored on disjoint test scenes. numpy/scipy only.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from stars_edge.data.synthetic import Scene
from stars_edge.errors import DataError
from stars_edge.io import write_json_atomic
from stars_edge.metrics import confusion_matrix, scores_from_confusion
from stars_edge.modalities import IGNORE_INDEX, MODALITIES, ModalitySpec, Pattern, all_patterns

# ----------------------------------------------------------------------------------------------- stats


@dataclass
class _Moments:
    """Running per-band sums in float64, so any number of scenes can be folded in with flat memory."""

    count: np.ndarray
    total: np.ndarray
    squares: np.ndarray

    @classmethod
    def empty(cls, bands: int) -> _Moments:
        return cls(np.zeros(bands), np.zeros(bands), np.zeros(bands))

    def add(self, image: np.ndarray, valid: np.ndarray) -> None:
        values = image[:, valid].astype(np.float64)
        self.count += values.shape[1]
        self.total += values.sum(axis=1)
        self.squares += (values * values).sum(axis=1)

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        count = np.maximum(self.count, 1.0)
        mean = self.total / count
        variance = np.maximum(self.squares / count - mean * mean, 0.0)
        return mean, np.sqrt(variance)


def compute_stats(scenes: Iterable[Scene], progress: bool = False) -> dict[str, Any]:
    """Per-band mean/std over valid pixels and per-class pixel counts of ``scenes`` (stats.json payload)."""
    moments: dict[str, _Moments] = {}
    band_names: dict[str, tuple[str, ...]] = {}
    units: dict[str, str] = {}
    class_names: tuple[str, ...] = ()
    class_pixels = np.zeros(256, dtype=np.int64)
    count = 0
    for scene in tqdm(scenes, desc="stats", unit="scene", disable=not progress):
        count += 1
        class_names = class_names or scene.class_names
        class_pixels += np.bincount(scene.label.reshape(-1), minlength=256)[:256]
        for modality in scene.modalities:
            image = scene.image(modality)
            if modality not in moments:
                moments[modality] = _Moments.empty(image.shape[0])
                spec = scene.specs.get(modality)
                band_names[modality] = (
                    spec.band_names
                    if spec is not None
                    else tuple(f"band{i + 1}" for i in range(image.shape[0]))
                )
                units[modality] = spec.units if spec is not None else ""
            if image.shape[0] != len(moments[modality].count):
                raise DataError(
                    f"scene {scene.name}: {modality} has {image.shape[0]} bands, earlier scenes had "
                    f"{len(moments[modality].count)}; select the same bands for every scene"
                )
            moments[modality].add(image, scene.valid[modality])
    if count == 0:
        raise DataError("no scenes to compute statistics from; check the dataset root and split")
    specs = []
    for modality in MODALITIES:
        if modality not in moments:
            continue
        if moments[modality].count.min() == 0:
            raise DataError(f"{modality} has no valid pixel in these scenes; statistics cannot be computed")
        mean, std = moments[modality].mean_std()
        std = np.where(std > 1e-12, std, 1.0)
        specs.append(
            ModalitySpec(
                modality,
                band_names[modality],
                tuple(float(v) for v in mean),
                tuple(float(v) for v in std),
                units[modality],
            ).to_dict()
        )
    labelled = class_pixels[: len(class_names)]
    total = max(int(labelled.sum()), 1)
    return {
        "scenes": count,
        "specs": specs,
        "class_names": list(class_names),
        "class_pixels": [int(v) for v in labelled],
        "class_fractions": [round(float(v) / total, 6) for v in labelled],
        "ignored_pixels": int(class_pixels[IGNORE_INDEX]),
    }


def write_dataset_stats(
    root: str | Path,
    out: str | Path,
    split: str = "train",
    format: str = "auto",
    progress: bool = True,
) -> Path:
    """Normalisation statistics of one split of a dataset (scenes read one at a time), written as JSON."""
    from stars_edge.data.loaders import open_dataset

    scenes = open_dataset(root, split=split, format=format, lazy=True)
    payload = compute_stats(scenes, progress=progress)
    payload = {"dataset": str(root), "format": format, "split": split, **payload}
    return write_json_atomic(out, payload)


# ----------------------------------------------------------------------------------------------- probe


def _local_mean(image: np.ndarray, valid: np.ndarray, size: int) -> np.ndarray:
    """Mean over a size x size window of valid pixels only (normalised convolution)."""
    weight = ndimage.uniform_filter(valid.astype(np.float32), size=size, mode="reflect")
    out = np.empty_like(image, dtype=np.float32)
    for band in range(image.shape[0]):
        filled = np.where(valid, image[band], 0.0).astype(np.float32)
        out[band] = ndimage.uniform_filter(filled, size=size, mode="reflect") / np.maximum(weight, 1e-6)
    return out


def pixel_features(scene: Scene, modality: str) -> np.ndarray:
    """Per-pixel features of one modality, (features, H, W): what a pixel classifier may look at.

    optical: band values and their 5 / 15 px local means (texture context); SAR: dB values and 5 / 15 px
    local means (speckle averaged); DSM: height above the local ground (height minus the 41 px minimum) and
    its 5 px local mean and standard deviation (roughness separates trees from flat roofs).
    """
    image = scene.image(modality).astype(np.float32)
    valid = scene.valid[modality]
    if modality == "dsm":
        height = np.where(valid, image[0], np.float32(np.inf))  # voids never count as ground
        ground = ndimage.minimum_filter(height, size=41, mode="nearest")
        above = (image[0] - ground)[None]
        mean = _local_mean(above, valid, 5)
        square = _local_mean(above * above, valid, 5)
        rough = np.sqrt(np.maximum(square - mean * mean, 0.0))
        return np.concatenate([above, mean, rough]).astype(np.float32)
    return np.concatenate([image, _local_mean(image, valid, 5), _local_mean(image, valid, 15)]).astype(
        np.float32
    )


@dataclass
class GaussianPixelClassifier:
    """One full-covariance Gaussian per class over pixel features, with class priors (QDA)."""

    means: np.ndarray  # (classes, features)
    precisions: np.ndarray  # (classes, features, features)
    log_norm: np.ndarray  # (classes,) log prior - 0.5 log det covariance
    present: np.ndarray  # (classes,) bool: classes seen in training

    @classmethod
    def fit(
        cls, features: np.ndarray, labels: np.ndarray, classes: int, regularisation: float = 1e-3
    ) -> GaussianPixelClassifier:
        """``features`` (N, F), ``labels`` (N,) in [0, classes)."""
        dim = features.shape[1]
        scale = features.std(axis=0) + 1e-6
        means = np.zeros((classes, dim))
        precisions = np.tile(np.eye(dim), (classes, 1, 1))
        log_norm = np.full(classes, -np.inf)
        present = np.zeros(classes, dtype=bool)
        counts = np.bincount(labels, minlength=classes)
        for k in range(classes):
            if counts[k] < dim + 2:
                continue
            x = features[labels == k].astype(np.float64)
            mean = x.mean(axis=0)
            cov = np.cov(x, rowvar=False) + np.diag((regularisation * scale) ** 2 + 1e-9)
            sign, logdet = np.linalg.slogdet(cov)
            if sign <= 0:
                continue
            means[k] = mean
            precisions[k] = np.linalg.inv(cov)
            log_norm[k] = math.log(counts[k] / counts.sum()) - 0.5 * logdet
            present[k] = True
        if not present.any():
            raise DataError(
                "no class has enough training pixels to fit the pixel classifier; use more scenes"
            )
        return cls(means, precisions, log_norm, present)

    def predict(self, features: np.ndarray, chunk: int = 200_000) -> np.ndarray:
        """Class of each row of ``features`` (N, F)."""
        out = np.empty(features.shape[0], dtype=np.int64)
        for start in range(0, features.shape[0], chunk):
            x = features[start : start + chunk].astype(np.float64)
            scores = np.full((x.shape[0], len(self.means)), -np.inf)
            for k in np.flatnonzero(self.present):
                diff = x - self.means[k]
                scores[:, k] = self.log_norm[k] - 0.5 * np.einsum(
                    "nf,fg,ng->n", diff, self.precisions[k], diff
                )
            out[start : start + chunk] = scores.argmax(axis=1)
        return out


def _scene_matrix(scene: Scene, pattern: Pattern) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, features) of the pattern's modalities and the mask of pixels valid in all of them."""
    blocks = [pixel_features(scene, m) for m in pattern]
    valid = np.logical_and.reduce([scene.valid[m] for m in pattern])
    stacked = np.concatenate(blocks)
    return stacked.reshape(stacked.shape[0], -1).T, valid.reshape(-1)


def modality_study(
    train_scenes: Sequence[Scene],
    test_scenes: Sequence[Scene],
    patterns: Sequence[Pattern] | None = None,
    pixels_per_class: int = 20_000,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Per-pattern test mIoU of a per-pixel Gaussian classifier fitted on ``train_scenes``.

    Every pattern is scored on the same test pixels (labelled and valid in all modalities), so the numbers
    compare modalities, not missing-data masks. Training pixels: up to ``pixels_per_class`` per class.
    """
    if not train_scenes or not test_scenes:
        raise DataError("the modality study needs at least one train and one test scene")
    available = [m for m in MODALITIES if all(m in s.modalities for s in [*train_scenes, *test_scenes])]
    if not available:
        raise DataError("train and test scenes share no modality; the modality study needs a common one")
    chosen = list(patterns) if patterns is not None else list(all_patterns(available))
    class_names = train_scenes[0].class_names
    classes = len(class_names)
    rng = np.random.default_rng(seed)
    full = Pattern.full(available)
    common_valid = [np.logical_and.reduce([s.valid[m] for m in full]).reshape(-1) for s in test_scenes]
    results: dict[str, Any] = {}
    for pattern in tqdm(chosen, desc="modality study", unit="pattern", disable=not progress):
        features, labels = [], []
        for scene in train_scenes:
            x, valid = _scene_matrix(scene, pattern)
            y = scene.label.reshape(-1).astype(np.int64)
            keep = valid & (y < classes)
            features.append(x[keep])
            labels.append(y[keep])
        x_train = np.concatenate(features)
        y_train = np.concatenate(labels)
        picked = []
        for k in range(classes):
            index = np.flatnonzero(y_train == k)
            if len(index) > pixels_per_class:
                index = rng.choice(index, size=pixels_per_class, replace=False)
            picked.append(index)
        chosen_rows = np.concatenate(picked)
        model = GaussianPixelClassifier.fit(x_train[chosen_rows], y_train[chosen_rows], classes)
        # restore the true class priors (the balanced subsample would otherwise favour rare classes)
        counts = np.bincount(y_train, minlength=classes).astype(np.float64)
        sampled = np.bincount(y_train[chosen_rows], minlength=classes).astype(np.float64)
        with np.errstate(divide="ignore"):
            model.log_norm = model.log_norm + np.log(np.maximum(counts, 1) / np.maximum(sampled, 1))
        confusion = np.zeros((classes, classes), dtype=np.int64)
        for scene, valid in zip(test_scenes, common_valid, strict=True):
            x, _ = _scene_matrix(scene, pattern)
            y = scene.label.reshape(-1)
            keep = valid & (y < classes)
            prediction = model.predict(x[keep])
            confusion += confusion_matrix(prediction, y[keep], classes, ignore_index=IGNORE_INDEX)
        scores = scores_from_confusion(confusion)
        results[pattern.name] = scores.as_dict(class_names)
    return {
        "classifier": "per-pixel Gaussian (full covariance per class, empirical priors)",
        "train_scenes": [s.name for s in train_scenes],
        "test_scenes": [s.name for s in test_scenes],
        "class_names": list(class_names),
        "patterns": results,
    }


def run_modality_study(
    root: str | Path,
    out: str | Path | None = None,
    format: str = "auto",
    train_split: str = "train",
    test_split: str = "test",
    patterns: str = "all",
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Load two splits of a dataset, run ``modality_study`` and (optionally) write the JSON report."""
    from stars_edge.data.loaders import open_dataset
    from stars_edge.modalities import parse_patterns

    train = list(open_dataset(root, split=train_split, format=format))
    test = list(open_dataset(root, split=test_split, format=format))
    available = [m for m in MODALITIES if all(m in s.modalities for s in [*train, *test])]
    report = modality_study(train, test, parse_patterns(patterns, available), seed=seed, progress=progress)
    report = {"dataset": str(root), "train_split": train_split, "test_split": test_split, **report}
    if out is not None:
        write_json_atomic(out, report)
    return report


def format_study_table(report: Mapping[str, Any]) -> str:
    """The study as a Markdown table: one row per pattern, mIoU and per-class IoU."""
    names = list(report["class_names"])
    header = "| pattern | mIoU | " + " | ".join(names) + " |"
    rule = "| --- | ---: | " + " | ".join("---:" for _ in names) + " |"
    rows = [header, rule]
    for pattern, scores in report["patterns"].items():
        per_class = scores["per_class_iou"]
        cells = " | ".join("-" if per_class[n] is None else f"{per_class[n]:.1f}" for n in names)
        rows.append(f"| {pattern} | {scores['miou']:.1f} | {cells} |")
    return "\n".join(rows)
