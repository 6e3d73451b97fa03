"""The main job end to end (a shrunken demo): artifacts, georeferencing, report, determinism."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
rasterio = pytest.importorskip("rasterio")

from stars_edge.demo import DemoConfig, run_demo  # noqa: E402
from stars_edge.modalities import ALL_PATTERNS  # noqa: E402


def _small(out: Path) -> DemoConfig:
    return replace(
        DemoConfig.quick_config(out, seed=3, threads=1),
        train_scenes=2,
        train_scene_size=64,
        train_steps=4,
        batch_size=2,
        train_tile=64,
        scene_size=256,
        tile=128,
        overlap=16,
        calib_tiles=2,
        latency_runs=1,
    )


@pytest.fixture(scope="module")
def demo_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, object]:
    first = run_demo(_small(tmp_path_factory.mktemp("demo_a")), echo=lambda _: None)
    second = run_demo(_small(tmp_path_factory.mktemp("demo_b")), echo=lambda _: None)
    return first, second


def test_prediction_is_georeferenced_like_the_scene(demo_runs: tuple) -> None:
    result = demo_runs[0]
    with (
        rasterio.open(result.prediction) as prediction,
        rasterio.open(result.out / "scene" / "optical.tif") as scene,
    ):
        assert prediction.crs == scene.crs
        assert prediction.transform == scene.transform
        assert (prediction.width, prediction.height) == (scene.width, scene.height)


def test_report_lists_all_patterns_with_numbers(demo_runs: tuple) -> None:
    result = demo_runs[0]
    report = result.report.read_text()
    for pattern in ALL_PATTERNS:
        assert f"`{pattern.name}`" in report
    assert "Scene mIoU" in report
    assert all(row["latency_ms"]["fp32"] > 0 for row in result.per_pattern.values())
    assert result.preview.stat().st_size > 10_000


def test_missing_regions_use_the_patterns_without_the_missing_modality(demo_runs: tuple) -> None:
    result = demo_runs[0]
    used = {name for name, row in result.per_pattern.items() if row["pixels"] > 0}
    assert "optical+sar+dsm" in used
    assert "sar+dsm" in used or "optical+dsm" in used


def test_same_seed_same_prediction(demo_runs: tuple) -> None:
    first, second = demo_runs
    with rasterio.open(first.prediction) as a, rasterio.open(second.prediction) as b:
        assert np.array_equal(a.read(), b.read())
