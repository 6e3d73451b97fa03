"""The main job end to end (a shrunken demo): artifacts, georeferencing, report, determinism."""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
rasterio = pytest.importorskip("rasterio")

from stars_edge.data.synthetic import CLASS_NAMES  # noqa: E402
from stars_edge.demo import DemoConfig, DemoResult, checkpoint_decoders, run_demo  # noqa: E402
from stars_edge.demo_report import decoder_kind, engine_lines, render_report  # noqa: E402
from stars_edge.manifest import EngineEntry, Manifest, ModelInfo, engine_inputs  # noqa: E402
from stars_edge.modalities import ALL_PATTERNS, DEFAULT_SPECS, Pattern  # noqa: E402


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
    engines = report.split("## Engines", 1)[1].split("##", 1)[0]
    assert f"`{result.checkpoint.name}`" in engines and "| stars | per_pattern |" in engines
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


def _manifest(checkpoints: dict[str, dict[str, str]] | None = None) -> Manifest:
    """Two patterns, FP32 and INT8 each; with ``checkpoints`` (pattern -> record) entries name their own."""
    engines = [
        EngineEntry(
            pattern=Pattern.parse(pattern),
            precision=precision,  # type: ignore[arg-type]
            backend="onnxruntime",
            path=f"{pattern}.{precision}.onnx",
            sha256="0" * 64,
            inputs=engine_inputs(Pattern.parse(pattern), DEFAULT_SPECS),
            tile_size=128,
            checkpoint=(checkpoints or {}).get(pattern, {}),
        )
        for pattern in ("optical+sar", "sar")
        for precision in ("fp32", "int8")
    ]
    model = ModelInfo("tiny", "stars", "ab" * 32, len(CLASS_NAMES), tuple(CLASS_NAMES))
    return Manifest(model=model, modalities=dict(DEFAULT_SPECS), tile_size=128, engines=engines)


def test_report_names_each_engines_checkpoint_method_and_decoder(tmp_path: Path) -> None:
    """Rendered without running the demo: one row per pattern, from the manifest and the checkpoints."""
    one = engine_lines(_manifest(), "checkpoint.pt", {"ab" * 32: "per_pattern"})
    assert "| `sar` | fp32, int8 | `checkpoint.pt` (`abababababab`) | stars | per_pattern |" in one
    assert len(one) == 2 + 2  # header + one row per pattern
    stride4 = _manifest()
    stride4.logits_stride = 4
    assert "logits at stride 4" in engine_lines(stride4, "checkpoint.pt")[-1]
    for entry in list(stride4.engines):
        stride4.add(dataclasses.replace(entry, options={"quantizer": "nncf"}))
    assert "| `sar` | fp32, int8 (nncf) |" in engine_lines(stride4, "checkpoint.pt")[3]

    zero_fill = {"path": "/runs/zf/last.pt", "sha256": "cd" * 32, "method": "zero_fill_dropout"}
    stars = {"path": "/runs/stars/last.pt", "sha256": "ab" * 32, "method": "stars"}
    mixed = engine_lines(_manifest({"optical+sar": stars, "sar": zero_fill}), None, {"ab" * 32: "shared"})
    assert "| `optical+sar` | fp32, int8 | `last.pt` (`abababababab`) | stars | shared |" in mixed
    assert "| `sar` | fp32, int8 | `last.pt` (`cdcdcdcdcdcd`) | zero_fill_dropout | ? |" in mixed

    assert decoder_kind({"decoder": "per_pattern"}, {"decoder": "shared"}) == "per_pattern"
    assert decoder_kind({"decoder": None}, {"decoder": "shared"}) == "shared"

    config = _small(tmp_path)
    result = DemoResult(
        out=tmp_path, prediction=tmp_path / "p.tif", pattern_map=tmp_path / "m.tif",
        preview=tmp_path / "v.png", report=tmp_path / "r.md", checkpoint=tmp_path / "c.pt",
        engines=tmp_path / "e", miou=50.0, timings={"train": 1.0},
    )  # fmt: skip
    overall = {"miou": 50.0, "mf1": 60.0, "pixel_accuracy": 70.0, "per_class_iou": {"water": 40.0}}
    summary = SimpleNamespace(format=lambda: "summary")
    report = render_report(config, result, overall, summary, "fp32", engines=one)
    assert "## Engines\n\n| pattern | precisions | checkpoint (sha256) | method | decoder |" in report
    assert report.index("## Engines") < report.index("## Per class IoU")
    assert "## Engines" not in render_report(config, result, overall, summary, "fp32")


def test_checkpoint_decoders_read_the_saved_training_config(tmp_path: Path) -> None:
    from stars_edge.checkpoint import CheckpointMeta, save_checkpoint
    from stars_edge.io import sha256_file
    from stars_edge.models import create_model

    bands = {"optical": 4, "sar": 2}
    model = create_model("tiny", bands, len(CLASS_NAMES), decoder="per_pattern")
    meta = CheckpointMeta(
        variant="tiny", method="stars", in_channels=bands, classes=len(CLASS_NAMES),
        class_names=tuple(CLASS_NAMES), specs={m: DEFAULT_SPECS[m] for m in bands}, tile_size=64,
        model_kwargs=model.config.to_dict(), config={"decoder": "per_pattern"},
    )  # fmt: skip
    path = save_checkpoint(tmp_path / "run.pt", model, meta)
    manifest = _manifest()
    manifest.model = dataclasses.replace(manifest.model, checkpoint_sha256=sha256_file(path))
    assert checkpoint_decoders(manifest, path) == {sha256_file(path): "per_pattern"}
    assert checkpoint_decoders(manifest, tmp_path / "missing.pt") == {}
