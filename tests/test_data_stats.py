"""Normalisation statistics and the per-pixel modality probe."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stars_edge.data.stats import (
    GaussianPixelClassifier,
    compute_stats,
    format_study_table,
    modality_study,
    pixel_features,
    write_dataset_stats,
)
from stars_edge.data.synthetic import SyntheticConfig, generate_dataset, generate_scene
from stars_edge.errors import DataError
from stars_edge.modalities import Pattern


def test_stats_match_numpy_over_valid_pixels() -> None:
    scenes = [generate_scene(SyntheticConfig(size=48, seed=s, sar_gap=0.3)) for s in (0, 1)]
    payload = compute_stats(scenes)
    sar = next(s for s in payload["specs"] if s["name"] == "sar")
    values = np.concatenate([s.image("sar")[:, s.valid["sar"]] for s in scenes], axis=1).astype(np.float64)
    np.testing.assert_allclose(sar["mean"], values.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(sar["std"], values.std(axis=1), rtol=1e-5)
    assert sum(payload["class_pixels"]) == 2 * 48 * 48
    assert payload["class_names"][0] == "background" and payload["scenes"] == 2
    with pytest.raises(DataError):
        compute_stats([])


def test_stats_command_library_writes_json_that_open_dataset_reads(tmp_path: Path) -> None:
    generate_dataset(tmp_path, scenes=3, size=32, seed=0, progress=False)
    out = write_dataset_stats(tmp_path, tmp_path / "stats.json", progress=False)
    payload = json.loads(out.read_text())
    assert payload["split"] == "train" and payload["scenes"] == 1
    from stars_edge.data import open_dataset

    scene = open_dataset(tmp_path)[0]  # picks up root/stats.json
    assert scene.specs["dsm"].mean == tuple(payload["specs"][2]["mean"])


def test_gaussian_classifier_separates_gaussian_blobs() -> None:
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (500, 2)), rng.normal(5, 1, (500, 2))])
    y = np.repeat([0, 1], 500)
    model = GaussianPixelClassifier.fit(x, y, classes=3)
    assert (model.predict(x) == y).mean() > 0.99 and not model.present[2]


def test_pixel_features_shapes() -> None:
    scene = generate_scene(SyntheticConfig(size=48, seed=0, dsm_voids=0.1))
    assert pixel_features(scene, "optical").shape == (12, 48, 48)
    assert pixel_features(scene, "sar").shape == (6, 48, 48)
    dsm = pixel_features(scene, "dsm")
    assert dsm.shape == (3, 48, 48) and np.isfinite(dsm[:, scene.valid["dsm"]]).all()


def test_modality_study_shows_complementary_modalities() -> None:
    train = [generate_scene(SyntheticConfig(size=160, seed=s)) for s in (10, 11, 12)]
    test = [generate_scene(SyntheticConfig(size=160, seed=s)) for s in (20, 21)]
    patterns = [Pattern.parse(p) for p in ("optical+sar+dsm", "optical", "sar", "dsm")]
    report = modality_study(train, test, patterns, progress=False)
    miou = {name: scores["miou"] for name, scores in report["patterns"].items()}
    iou = {name: scores["per_class_iou"] for name, scores in report["patterns"].items()}
    assert miou["optical+sar+dsm"] > max(miou["optical"], miou["sar"], miou["dsm"]) + 5  # missing data hurts
    assert iou["sar"]["water"] > iou["sar"]["low_vegetation"] + 30  # SAR: water easy, vegetation types not
    assert iou["dsm"]["building"] > iou["dsm"]["road"] + 10  # DSM: buildings stand out, roads do not
    assert "| optical |" in format_study_table(report)


def test_synthetic_specs_match_the_generator() -> None:
    """The built-in normalisation must stay close to what the generator produces (re-measure if not)."""
    from stars_edge.data.synthetic import synthetic_specs

    scenes = [generate_scene(SyntheticConfig(size=192, seed=s)) for s in (31, 32, 33)]
    measured = {spec["name"]: spec for spec in compute_stats(scenes)["specs"]}
    for name, spec in synthetic_specs().items():
        mean, std = np.array(measured[name]["mean"]), np.array(measured[name]["std"])
        assert np.all(np.abs(mean - np.array(spec.mean)) < 0.35 * np.array(spec.std)), name
        assert np.all((std / np.array(spec.std) > 0.7) & (std / np.array(spec.std) < 1.4)), name
