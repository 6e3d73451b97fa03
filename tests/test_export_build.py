"""build_engines end to end on the tiny variant: manifest, gate, up-to-date skipping, --strict, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
from int8_models import save_untrained_checkpoint, small

import export.accuracy_control as accuracy_control
import export.build as build_module
import export.build_precisions as precisions_module
from export.accuracy_control import quantized_convs
from export.build import BuildOptions, build_engines
from export.gate import Predictions
from stars_edge.data.synthetic import CLASS_NAMES, generate_dataset
from stars_edge.errors import ConfigError
from stars_edge.manifest import EngineAccuracy, load_manifest

PATTERNS = "optical+sar,dsm"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt")


@pytest.fixture(scope="module")
def stride32_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Translators at stride 32 only: a third of the quantized layers to quantize and rank."""
    return save_untrained_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny32.pt", translation_scales=(3,))


@pytest.fixture(scope="module")
def built(
    checkpoint: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, build_module.BuildReport]:
    out = tmp_path_factory.mktemp("engines")
    report = build_engines(small(checkpoint, out))
    return out, report


def test_build_writes_verified_manifest_with_accuracy(built: tuple[Path, build_module.BuildReport]) -> None:
    out, report = built
    manifest = load_manifest(out)  # verifies every file's sha256
    assert [e.describe() for e in manifest.engines] == [
        f"{p} {q}/onnxruntime" for p in ("optical+sar", "dsm") for q in ("fp32", "fp16", "int8")
    ]
    assert len(report.built) == 6 and not report.skipped
    entry = manifest.select("optical+sar", "int8")
    assert entry.path == "optical+sar.int8.onnx"
    assert entry.inputs == ({"name": "optical", "bands": 4}, {"name": "sar", "bands": 2})
    assert entry.accuracy is not None and set(entry.accuracy["per_class_iou"]) == set(CLASS_NAMES)
    assert entry.accuracy["gate"] in ("pass", "flagged")
    assert entry.options["quantizer"] == "nncf"  # a CPU build's default
    assert "calib_method" not in entry.options  # NNCF calibrates its own way
    assert manifest.select("dsm", "fp32").accuracy["agreement_with_fp32"] == 100.0  # type: ignore[index]
    assert manifest.model.checkpoint_sha256 and manifest.tile_size == 64
    assert {"onnx", "onnxruntime", "torch"} <= set(manifest.tools)


def test_rerun_skips_up_to_date_and_rebuilds_changed(
    checkpoint: Path, built: tuple[Path, build_module.BuildReport]
) -> None:
    out, _ = built
    again = build_engines(small(checkpoint, out))
    assert not again.built and len(again.skipped) == 6
    (out / "dsm.fp16.onnx").write_bytes(b"altered")
    changed = build_engines(small(checkpoint, out, quantizer="ours", calib_method="minmax"))
    assert sorted(changed.built) == [
        "dsm fp16/onnxruntime",
        "dsm int8/onnxruntime",
        "optical+sar int8/onnxruntime",
    ]
    manifest = load_manifest(out)
    assert manifest.select("dsm", "int8").options["calib_method"] == "minmax"
    assert manifest.select("dsm", "int8").options["quantizer"] == "ours"


def test_int8_accuracy_control_keeps_layers_float_and_records_them(
    stride32_checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A negative target forces accuracy control to act; what it did reaches the manifest and the file.
    Ranking every convolution is what takes the time, and ranking itself is covered in
    ``test_export_accuracy_control.py``: here the first 6 candidates are ranked."""
    monkeypatch.setattr(precisions_module, "CONTROL_MARGIN", -1.0)
    rank_all = accuracy_control.rank_layers
    monkeypatch.setattr(
        accuracy_control,
        "rank_layers",
        lambda quantize, candidates, *rest: rank_all(quantize, candidates[:6], *rest),
    )
    options = small(
        stride32_checkpoint,
        tmp_path,
        patterns="dsm",
        precisions=("int8",),
        control_tiles=4,
        max_float_layers=2,
    )
    lines: list[str] = []
    build_engines(options, log=lines.append)
    entry = load_manifest(tmp_path).select("dsm", "int8")
    assert entry.options["control_tiles"] == 4 and entry.options["max_float_layers"] == 2
    record = entry.quantization
    assert record["control_target"] == -1.0
    assert record["control_miou_drop_after"] <= record["control_miou_drop_before"]
    assert len(record["float_layers"]) <= 2
    assert any("ranked" in line or "float layer(s)" in line for line in lines), lines
    quantized = set(quantized_convs(onnx.load(str(tmp_path / entry.path))))
    assert quantized and not quantized & set(record["float_layers"])
    off = build_engines(small(stride32_checkpoint, tmp_path / "off", patterns="dsm", precisions=("int8",)))
    assert "float_layers" not in off.manifest.select("dsm", "int8").quantization


def test_int8_accuracy_control_off_with_a_note_when_the_source_is_too_small(
    checkpoint: Path, tmp_path: Path
) -> None:
    """Calibration takes the train split's 4 tiles; none are left for control: a note, not an error."""
    data = tmp_path / "data"
    generate_dataset(data, scenes=3, size=128, seed=5, progress=False)
    report = build_engines(
        small(checkpoint, tmp_path / "e", patterns="dsm", precisions=("int8",), calib_data=str(data)),
        control_tiles=32,
        gate_data=str(data),
    )
    assert any("INT8 accuracy control off" in note and "0 tile(s)" in note for note in report.notes)
    assert "float_layers" not in report.manifest.select("dsm", "int8").quantization


def test_int8_accuracy_control_off_with_a_note_when_the_control_tiles_have_no_labels(
    checkpoint: Path, tmp_path: Path
) -> None:
    """Unlabelled imagery still calibrates; control, which scores against labels, turns off with a note."""
    data = tmp_path / "unlabelled"
    generate_dataset(data, scenes=8, size=128, seed=5, progress=False)
    index = json.loads((data / "index.json").read_text())
    for scene in index["scenes"]:
        (data / scene["path"] / scene["files"].pop("label")).unlink()
    (data / "index.json").write_text(json.dumps(index))
    report = build_engines(
        small(
            checkpoint,
            tmp_path / "e",
            patterns="dsm",
            precisions=("int8",),
            calib_data=str(data),
            control_tiles=8,
            max_float_layers=2,
        )
    )
    assert any("INT8 accuracy control off" in n and "no labels" in n for n in report.notes), report.notes
    entry = report.manifest.select("dsm", "int8")
    assert "float_layers" not in entry.quantization and entry.accuracy is not None


def test_strict_refuses_a_flagged_precision(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_measure = build_module.gate.measure

    def int8_loses_five_points(
        prediction: Predictions | None, *args: object, **kwargs: object
    ) -> EngineAccuracy:
        accuracy = real_measure(prediction, *args, **kwargs)  # type: ignore[arg-type]
        if accuracy["miou_drop"] is not None and prediction is not args[0]:  # not the FP32 reference
            accuracy = EngineAccuracy(**{**accuracy, "miou_drop": 5.0, "gate": "flagged"})
        return accuracy

    monkeypatch.setattr(build_module.gate, "measure", int8_loses_five_points)
    lenient = build_engines(small(checkpoint, tmp_path / "a", patterns="sar", precisions=("fp32", "int8")))
    assert lenient.flagged == ["sar int8/onnxruntime"]
    assert load_manifest(tmp_path / "a").select("sar", "int8").gate == "flagged"

    strict = build_engines(
        small(checkpoint, tmp_path / "b", patterns="sar", precisions=("fp32", "int8"), strict=True)
    )
    assert strict.refused == ["sar int8/onnxruntime"]
    assert not (tmp_path / "b" / "sar.int8.onnx").exists()
    assert [e.precision for e in load_manifest(tmp_path / "b").engines] == ["fp32"]


def test_tensorrt_backend_without_tensorrt_is_an_error(checkpoint: Path, tmp_path: Path) -> None:
    """TensorRT asked for and absent: BackendUnavailableError (CLI exit 1), nothing written (issue 14)."""
    pytest.importorskip("onnxruntime")
    from export.tensorrt_build import tensorrt_status
    from stars_edge.errors import BackendUnavailableError

    if tensorrt_status()[0] is not None:
        pytest.skip("TensorRT is usable here; the tensorrt-marked tests cover it")
    with pytest.raises(BackendUnavailableError, match="--backend tensorrt cannot build engines here"):
        build_engines(small(checkpoint, tmp_path, patterns="sar", backend="tensorrt", precisions=("fp32",)))
    assert not list(tmp_path.glob("*.onnx"))


def test_default_quantizer_follows_the_build_target(checkpoint: Path, tmp_path: Path) -> None:
    """NNCF for CPU builds (the fastest INT8 there), ours for TensorRT (legal Q/DQ); ours-only options refused
    with a vendor quantizer instead of being ignored."""
    assert BuildOptions(checkpoint=checkpoint, out=tmp_path).quantizer == "nncf"
    assert BuildOptions(checkpoint=checkpoint, out=tmp_path, backend="tensorrt").quantizer == "ours"
    assert BuildOptions(checkpoint=checkpoint, out=tmp_path, quantizer="ours").calib_method == "percentile"
    for option, flag in (
        ({"calib_method": "minmax"}, "--calib-method"),
        ({"placement": "conv"}, "--int8-placement"),
    ):
        with pytest.raises(ConfigError, match=f"{flag} applies to --quantizer ours only; .* is nncf"):
            BuildOptions(checkpoint=checkpoint, out=tmp_path, **option)  # type: ignore[arg-type]
        ours = BuildOptions(checkpoint=checkpoint, out=tmp_path, quantizer="ours", **option)  # type: ignore[arg-type]
        assert ours.calib_method in ("minmax", "percentile") and ours.placement
    assert BuildOptions(checkpoint=checkpoint, out=tmp_path, precisions=("fp32",), calib_method="minmax")


def test_invalid_options_are_refused(checkpoint: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="calib-method"):
        BuildOptions(checkpoint=checkpoint, out=tmp_path, quantizer="ours", calib_method="kl")
    with pytest.raises(ConfigError, match="multiple of 32"):
        BuildOptions(checkpoint=checkpoint, out=tmp_path, tile=100)
    with pytest.raises(ConfigError, match="unknown modality"):
        build_engines(small(checkpoint, tmp_path, patterns="optical+lidar"))


def test_cli_builds_and_reports(checkpoint: Path, tmp_path: Path) -> None:
    import typer
    from typer.testing import CliRunner

    from stars_edge.commands.build_engines import build_engines as command

    app = typer.Typer()  # the command alone, so this test does not depend on the other commands importing
    app.command("build-engines")(command)
    app.command("unused")(lambda: None)  # two commands keep Typer from collapsing the app into one command
    result = CliRunner().invoke(
        app,
        [
            "build-engines",
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(tmp_path),
            "--patterns",
            "sar",
            "--precision",
            "fp32,int8",
            "--calib-tiles",
            "4",
            "--gate-tiles",
            "2",
            "--tile",
            "64",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "2 built" in result.output and "sar int8/onnxruntime" in result.output
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert [e["precision"] for e in manifest["engines"]] == ["fp32", "int8"]


def test_keyword_form_matches_the_options_form(checkpoint: Path, tmp_path: Path) -> None:
    report = build_engines(
        checkpoint=str(checkpoint),
        out=str(tmp_path),
        patterns="dsm",
        precisions=["fp32"],
        calib_tiles=4,
        gate_tiles=2,
        tile=64,
        progress=False,
    )
    assert report.built == ["dsm fp32/onnxruntime"]
    assert report.manifest_path == tmp_path / "manifest.json"


def test_manifest_records_the_input_contract_of_the_calibration_data(
    built: tuple[Path, build_module.BuildReport],
) -> None:
    """Units and quantiles per band, from the calibration source's physical values (not normalised)."""
    out, _ = built
    manifest = load_manifest(out)
    assert set(manifest.input_contract) == {"optical", "sar", "dsm"}
    sar = manifest.input_contract["sar"]
    assert sar.units == "dB" and [b.name for b in sar.bands] == ["vv", "vh"]
    assert sar.measured and "synthetic calibration scenes" in sar.source
    vv, vh = sar.bands
    assert vv.at(50.0) > vh.at(50.0)  # co-pol above cross-pol, in dB
    assert -25.0 < vh.at(50.0) < vv.at(50.0) < -5.0
    assert list(vv.quantiles) == sorted(vv.quantiles)
    raw = json.loads((out / "manifest.json").read_text())
    assert raw["input_contract"]["dsm"]["bands"][0]["name"] == "height"
