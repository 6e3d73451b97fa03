"""Vendor INT8 quantizers (``--quantizer nncf|modelopt``): same build, same gate, recorded in the manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx
import pytest
from int8_models import save_untrained_checkpoint, small

from export.build import BuildOptions, build_engines
from export.concat_split import convs_reading_concat
from export.gate import predict
from export.quantize import float_head_problems, tensorrt_legality_problems
from export.quantizers import QUANTIZERS, qdq_summary, quantizer_unavailable
from export.tiles import load_tiles
from stars_edge.errors import ConfigError
from stars_edge.manifest import load_manifest

PATTERN = "optical+sar"


def tiny_build(checkpoint: Path, out: Path, **overrides: Any) -> BuildOptions:
    """One two-modality pattern at FP32 and INT8: the export tests' small build (64 px tiles, 4 calibration
    and 2 gate tiles, no accuracy control)."""
    return small(checkpoint, out, **{"patterns": PATTERN, "precisions": ("fp32", "int8"), **overrides})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


def _gated_on_both_backends(entry: Any) -> None:
    accuracy = entry.accuracy
    assert accuracy is not None and accuracy["gate"] in ("pass", "flagged")
    by_backend = accuracy["by_backend"]
    assert set(by_backend) == {"onnxruntime", "openvino"}
    assert all(b["miou_drop"] is not None for b in by_backend.values()), by_backend


def test_nncf_writes_a_qdq_int8_that_onnxruntime_runs_and_the_gate_measures(
    checkpoint: Path, tmp_path: Path
) -> None:
    pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    report = build_engines(tiny_build(checkpoint, tmp_path, quantizer="nncf"))
    entry = load_manifest(tmp_path).select(PATTERN, "int8")
    assert entry.options["quantizer"] == "nncf"
    assert "calib_method" not in entry.options and "placement" not in entry.options  # ours only
    model = onnx.load(str(tmp_path / entry.path))
    summary = qdq_summary(model)
    assert summary["quantize_linear"] and summary["dequantize_linear"] and summary["quantized_convs"]
    # NNCF's own recipe: unsigned activations after ReLU, which is why TensorRT cannot take it
    assert summary["activation_zero_point_types"].get("UINT8"), summary
    assert entry.quantization["tensorrt_legal"] is False and entry.quantization["tensorrt_problems"]
    assert not convs_reading_concat(model), "the Concat -> Conv split must run before every quantizer"
    tiles = load_tiles("synthetic", report.manifest.modalities, 2, 64, "gate")
    assert predict(tmp_path / entry.path, tiles.select(("optical", "sar"))).classes.shape == (2, 64, 64)
    _gated_on_both_backends(entry)

    again = build_engines(tiny_build(checkpoint, tmp_path, quantizer="ours"))
    assert again.built == [f"{PATTERN} int8/onnxruntime"], "another quantizer must not be up to date"
    rebuilt = load_manifest(tmp_path).select(PATTERN, "int8")
    assert rebuilt.options["quantizer"] == "ours" and rebuilt.options["calib_method"] == "percentile"
    assert not qdq_summary(onnx.load(str(tmp_path / rebuilt.path)))["activation_zero_point_types"].get(
        "UINT8"
    )


def test_modelopt_from_its_own_venv_writes_a_tensorrt_legal_gated_int8(
    checkpoint: Path, tmp_path: Path
) -> None:
    reason = quantizer_unavailable("modelopt")
    if reason is not None:
        pytest.skip(reason)
    pytest.importorskip("openvino")
    build_engines(tiny_build(checkpoint, tmp_path, quantizer="modelopt"))
    entry = load_manifest(tmp_path).select(PATTERN, "int8")
    assert entry.options["quantizer"] == "modelopt"
    model = onnx.load(str(tmp_path / entry.path))
    assert tensorrt_legality_problems(model) == [] and not entry.quantization
    summary = qdq_summary(model)
    assert summary["quantized_convs"] and summary["quantize_linear"] == summary["dequantize_linear"]
    assert float_head_problems(model), "ModelOpt quantizes the classifier's input (ours keeps it float)"
    assert set(summary["activation_zero_point_types"]) == {"INT8"}
    _gated_on_both_backends(entry)


def test_unknown_quantizer_is_a_one_line_config_error_listing_the_valid_ones(
    checkpoint: Path, tmp_path: Path
) -> None:
    with pytest.raises(ConfigError) as caught:
        BuildOptions(checkpoint=checkpoint, out=tmp_path, quantizer="tflite")
    message = str(caught.value)
    assert message == "unknown --quantizer 'tflite'; choose ours, nncf, modelopt"
    assert QUANTIZERS == ("ours", "nncf", "modelopt")


def _flag_nncf_graphs(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate flags every INT8 graph with NNCF's uint8 activations (a 3-point drop) and passes ours."""
    import export.build as build_module

    real = build_module._Builder._measure

    def measure(builder: Any, pattern: Any, precision: str, path: Path, reference: Any) -> Any:
        accuracy = real(builder, pattern, precision, path, reference)
        if qdq_summary(onnx.load(str(path)))["activation_zero_point_types"].get("UINT8"):
            return {**accuracy, "miou_drop": 3.0, "gate": "flagged"}
        return {**accuracy, "miou_drop": 0.1, "gate": "pass"}

    monkeypatch.setattr(build_module._Builder, "_measure", measure)


def test_a_flagged_default_int8_falls_back_to_ours(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The default quantizer (NNCF on a CPU build) flagged by the gate: ours replaces that pattern's INT8,
    the manifest and the report say so, and a rerun finds it up to date."""
    pytest.importorskip("nncf")
    _flag_nncf_graphs(monkeypatch)
    report = build_engines(tiny_build(checkpoint, tmp_path))
    entry = load_manifest(tmp_path).select(PATTERN, "int8")
    assert entry.gate == "pass" and entry.int8_quantizer == "ours"
    assert entry.options["quantizer"] == "nncf"  # what was asked for: the rerun below is up to date
    assert (
        entry.quantization["fallback_from"] == "nncf"
        and "flagged nncf" in entry.quantization["fallback_reason"]
    )
    assert entry.quantization.get("tensorrt_legal") is not False  # ours' graph: TensorRT-legal
    assert not qdq_summary(onnx.load(str(tmp_path / entry.path)))["activation_zero_point_types"].get("UINT8")
    assert any("flagged nncf's INT8" in note for note in report.notes) and not report.flagged
    assert not list(tmp_path.glob("*.ours"))  # no scratch file left
    again = build_engines(tiny_build(checkpoint, tmp_path))
    assert not again.built


def test_an_explicit_quantizer_is_never_replaced(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("nncf")
    _flag_nncf_graphs(monkeypatch)
    report = build_engines(tiny_build(checkpoint, tmp_path, quantizer="nncf"))
    entry = load_manifest(tmp_path).select(PATTERN, "int8")
    assert (
        entry.gate == "flagged"
        and entry.int8_quantizer == "nncf"
        and "fallback_from" not in entry.quantization
    )
    assert report.flagged == [f"{PATTERN} int8/onnxruntime"]
    assert BuildOptions(checkpoint=checkpoint, out=tmp_path, quantizer="nncf").int8_fallback == ""
    assert BuildOptions(checkpoint=checkpoint, out=tmp_path, backend="tensorrt").int8_fallback == ""
    assert BuildOptions(checkpoint=checkpoint, out=tmp_path).int8_fallback == "ours"


def test_nncf_int8_for_tensorrt_is_refused_up_front(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"uint8 activations.*needs --quantizer ours"):
        BuildOptions(checkpoint=checkpoint, out=tmp_path, quantizer="nncf", backend="tensorrt")
    BuildOptions(
        checkpoint=checkpoint, out=tmp_path, quantizer="nncf", backend="tensorrt", precisions=("fp32",)
    )


def test_cli_passes_the_quantizer_and_documents_it(checkpoint: Path, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from stars_edge.commands.build_engines import build_engines as command

    app = typer.Typer()
    app.command("build-engines")(command)
    app.command("unused")(lambda: None)
    runner = CliRunner()
    help_text = runner.invoke(app, ["build-engines", "--help"], terminal_width=200).output
    assert "--quantizer" in help_text and "nncf" in help_text and "modelopt" in help_text
    small = ["--patterns", "sar", "--precision", "fp32", "--gate-tiles", "2", "--tile", "64", "--no-progress"]
    where = ["--checkpoint", str(checkpoint), "--out", str(tmp_path)]
    result = runner.invoke(app, ["build-engines", *where, "--quantizer", "qat", *small])
    assert isinstance(result.exception, ConfigError)
    assert "choose ours, nncf, modelopt" in str(result.exception)
