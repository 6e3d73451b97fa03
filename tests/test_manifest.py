"""Manifest contract: round trip, refusal of missing/altered files and unknown schema, engine selection."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

from stars_edge.errors import ConfigError, ManifestError
from stars_edge.io import sha256_file
from stars_edge.manifest import (
    MANIFEST_NAME,
    SCHEMA_VERSION,
    EngineAccuracy,
    EngineEntry,
    Manifest,
    ModelInfo,
    engine_inputs,
    load_manifest,
    parse_precisions,
    save_manifest,
)
from stars_edge.modalities import DEFAULT_SPECS, Pattern


def _entry(
    folder: Path, pattern: str, precision: str, gate: str = "pass", backend: str = "onnxruntime"
) -> EngineEntry:
    parsed = Pattern.parse(pattern)
    name = (
        f"{parsed}.{precision}.onnx"
        if backend == "onnxruntime"
        else f"{parsed}.{precision}.trt10.9.sm89.engine"
    )
    file = folder / name
    file.write_bytes(f"{pattern}-{precision}-{backend}".encode())
    accuracy = EngineAccuracy(
        miou=61.5,
        per_class_iou={"background": 80.0, "building": None},
        agreement_with_fp32=99.1,
        miou_drop=0.2,
        gate=gate,  # type: ignore[typeddict-item]
    )
    return EngineEntry(
        pattern=parsed,
        precision=precision,  # type: ignore[arg-type]
        backend=backend,  # type: ignore[arg-type]
        path=name,
        sha256=sha256_file(file),
        inputs=engine_inputs(parsed, DEFAULT_SPECS),
        tile_size=128,
        accuracy=accuracy,
        tensorrt_version="10.9.0" if backend == "tensorrt" else None,
        compute_capability="8.9" if backend == "tensorrt" else None,
    )


def _manifest(folder: Path) -> Manifest:
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        model=ModelInfo("tiny", "stars", "ab" * 32, 2, ("background", "building")),
        modalities=dict(DEFAULT_SPECS),
        tile_size=128,
        tools={"onnx": "1.0"},
    )
    manifest.add(_entry(folder, "sar", "fp32"))
    quantized = _entry(folder, "sar", "int8", gate="flagged")
    manifest.add(
        dataclasses.replace(quantized, quantization={"float_layers": ["/dsm/Conv"], "control_target": 0.5})
    )
    manifest.add(_entry(folder, "optical+sar+dsm", "fp32"))
    manifest.add(_entry(folder, "optical+sar+dsm", "int8"))
    manifest.add(_entry(folder, "optical+sar+dsm", "fp16", backend="tensorrt"))
    return manifest


def test_round_trip_preserves_every_field(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    path = save_manifest(manifest, tmp_path)
    assert path == tmp_path / MANIFEST_NAME
    loaded = load_manifest(tmp_path)
    assert loaded == manifest
    assert loaded.to_dict() == manifest.to_dict()
    assert json.loads(path.read_text())["schema_version"] == SCHEMA_VERSION
    assert loaded.patterns == (Pattern.parse("optical+sar+dsm"), Pattern.parse("sar"))
    trt = loaded.select("optical+sar+dsm", backend="tensorrt")
    assert (trt.tensorrt_version, trt.compute_capability) == ("10.9.0", "8.9")
    assert loaded.engine_path(trt) == tmp_path.resolve() / trt.path
    assert load_manifest(path) == manifest  # the file path works as well as the folder
    assert loaded.select("sar", "int8").quantization["float_layers"] == ["/dsm/Conv"]
    assert "quantization" not in loaded.select("sar", "fp32").to_dict()  # written only when there is some


def test_altered_engine_is_refused(tmp_path: Path) -> None:
    save_manifest(_manifest(tmp_path), tmp_path)
    (tmp_path / "sar.int8.onnx").write_bytes(b"tampered")
    with pytest.raises(ManifestError, match=r"sar\.int8\.onnx.*altered"):
        load_manifest(tmp_path)
    assert load_manifest(tmp_path, verify=False).select("sar", "int8").precision == "int8"


def test_missing_engine_and_missing_manifest_are_refused(tmp_path: Path) -> None:
    save_manifest(_manifest(tmp_path), tmp_path)
    (tmp_path / "sar.fp32.onnx").unlink()
    with pytest.raises(ManifestError, match=r"sar\.fp32\.onnx is missing"):
        load_manifest(tmp_path)
    with pytest.raises(ManifestError, match="does not exist"):
        load_manifest(tmp_path / "nowhere")


def test_unknown_schema_version_and_bad_json_are_refused(tmp_path: Path) -> None:
    save_manifest(_manifest(tmp_path), tmp_path)
    data = json.loads((tmp_path / MANIFEST_NAME).read_text())
    data["schema_version"] = SCHEMA_VERSION + 1
    (tmp_path / MANIFEST_NAME).write_text(json.dumps(data))
    with pytest.raises(ManifestError, match="schema version"):
        load_manifest(tmp_path)
    (tmp_path / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ManifestError, match="not readable JSON"):
        load_manifest(tmp_path)


def test_select_prefers_unflagged_fp32_and_lists_what_exists(tmp_path: Path) -> None:
    manifest = _manifest(tmp_path)
    assert manifest.select("sar").precision == "fp32"
    assert manifest.select(Pattern.parse("sar"), "int8").gate == "flagged"
    assert manifest.select("optical+sar+dsm", "int8").input_names == ("optical", "sar", "dsm")
    with pytest.raises(ManifestError) as info:
        manifest.select("optical", "int8")
    message = str(info.value)
    assert "optical int8" in message and "sar (fp32/onnxruntime, int8/onnxruntime)" in message
    with pytest.raises(ManifestError, match="unknown precision"):
        manifest.select("sar", "int4")


def test_entries_must_match_pattern_and_specs(tmp_path: Path) -> None:
    entry = _entry(tmp_path, "sar", "fp32")
    with pytest.raises(ManifestError, match="do not match pattern"):
        EngineEntry(
            pattern=Pattern.parse("optical"),
            precision="fp32",
            backend="onnxruntime",
            path="x.onnx",
            sha256="0",
            inputs=entry.inputs,
            tile_size=128,
        )
    with pytest.raises(ManifestError, match="relative"):
        EngineEntry(
            pattern=entry.pattern,
            precision="fp32",
            backend="onnxruntime",
            path="/abs/x.onnx",
            sha256="0",
            inputs=entry.inputs,
            tile_size=128,
        )
    manifest = Manifest(
        model=ModelInfo("tiny", "stars", "0", 2, ("a", "b")),
        modalities={"optical": DEFAULT_SPECS["optical"]},
        tile_size=128,
    )
    with pytest.raises(ManifestError, match="no spec"):
        manifest.add(entry)


def test_parse_precisions() -> None:
    assert parse_precisions("int8,fp32") == ("fp32", "int8")
    assert parse_precisions(["fp16", "fp32"]) == ("fp32", "fp16")
    with pytest.raises(ConfigError, match="int4"):
        parse_precisions("fp32,int4")


def test_manifest_module_is_torch_free() -> None:
    import subprocess

    code = "import sys, stars_edge.manifest; sys.exit(1 if 'torch' in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
