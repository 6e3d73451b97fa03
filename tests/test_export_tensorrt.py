"""TensorRT engine building. The `tensorrt` tests need TensorRT and a CUDA GPU and skip elsewhere."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import NO_TORCH_PRELUDE

from export.onnx_export import export_onnx, simplify_onnx
from export.tensorrt_build import TensorRTTarget, engine_file_name, tensorrt_status, timing_cache_name
from stars_edge.errors import BackendUnavailableError, ConfigError, ExportError
from stars_edge.manifest import load_manifest
from stars_edge.modalities import Pattern
from stars_edge.models import create_model, export_module

BANDS = {"optical": 4, "sar": 2, "dsm": 1}


def test_engine_name_carries_version_and_compute_capability() -> None:
    target = TensorRTTarget(version="10.9.0.34", compute_capability="8.7")
    assert (
        engine_file_name(Pattern.parse("sar+optical"), "int8", target)
        == "optical+sar.int8.trt10.9.0.34.sm87.engine"
    )


def test_status_explains_why_tensorrt_is_unusable() -> None:
    target, reason = tensorrt_status()
    if target is not None:
        pytest.skip("TensorRT is usable on this machine")
    assert reason  # e.g. "the tensorrt Python package is not usable here (ModuleNotFoundError: ...)"


def test_building_without_tensorrt_raises_backend_unavailable(tmp_path: Path) -> None:
    from export.tensorrt_build import build_tensorrt_engine

    if tensorrt_status()[0] is not None:
        pytest.skip("TensorRT is usable on this machine")
    with pytest.raises(BackendUnavailableError, match="--backend onnxruntime"):
        build_tensorrt_engine(tmp_path / "x.onnx", tmp_path / "x.engine", BANDS, 64, tmp_path / "cache")


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=7).eval()
    pattern = Pattern.parse("optical+sar")
    path = tmp_path_factory.mktemp("trt") / f"{pattern}.fp32.onnx"
    export_onnx(export_module(model, pattern), pattern, BANDS, path)
    return simplify_onnx(path)


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_builds_strongly_typed_engine_with_shared_timing_cache(fp32_onnx: Path, tmp_path: Path) -> None:
    from export.tensorrt_build import build_tensorrt_engine, describe_engine

    target, _ = tensorrt_status()
    assert target is not None
    cache = tmp_path / timing_cache_name(target)
    assert target.tag in cache.name
    engine = tmp_path / engine_file_name(Pattern.parse("optical+sar"), "fp32", target)
    build_tensorrt_engine(fp32_onnx, engine, BANDS, tile_size=64, timing_cache=cache)
    assert engine.stat().st_size > 0 and cache.stat().st_size > 0
    tensors = describe_engine(engine)
    assert tensors["optical"]["mode"] == "input" and tensors["logits"]["mode"] == "output"
    assert tensors["optical"]["shape"] == (-1, 4, -1, -1)
    # A second build reuses (and keeps) the same timing cache file.
    build_tensorrt_engine(fp32_onnx, tmp_path / "again.engine", BANDS, tile_size=64, timing_cache=cache)
    assert cache.stat().st_size > 0


# ---------------------------------------------------------------------------------------------------------
# The builder's wiring with the TensorRT stand-ins of tensorrt_fakes (no TensorRT library here)
# ---------------------------------------------------------------------------------------------------------

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FAKE_TAG = "trt10.9.0.sm89"


@pytest.fixture
def onnx_folder(tmp_path: Path) -> Path:
    from test_runtime_support import build_engines, random_weights

    patterns = (Pattern.parse("sar"), Pattern.parse("optical+sar"))
    return build_engines(
        tmp_path / "engines",
        random_weights(classes=3, seed=5),
        3,
        patterns=patterns,
        precisions=("fp32", "int8"),
    )


def test_from_onnx_builds_gated_engines_on_the_target_without_torch(onnx_folder: Path) -> None:
    """`build-engines --from-onnx DIR --backend tensorrt` with torch blocked: engines, keyed cache, gate."""
    script = (
        NO_TORCH_PRELUDE
        + f"""
sys.path.insert(0, {str(PROJECT_ROOT / "tests")!r})
from test_runtime_tensorrt_fake import install_fakes
install_fakes()
import tensorrt
from stars_edge.cli import main
sys.argv = ["stars-edge", "build-engines", "--from-onnx", {str(onnx_folder)!r}, "--backend", "tensorrt"]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
assert "torch" not in sys.modules
types = [sorted(b["types"]) for b in tensorrt.builds]
print("TYPES", types)
"""
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = load_manifest(onnx_folder)
    engines = manifest.find("sar", backend="tensorrt") + manifest.find("optical+sar", backend="tensorrt")
    assert {(e.pattern.name, e.precision) for e in engines} == {
        (p, q) for p in ("sar", "optical+sar") for q in ("fp32", "int8")
    }
    for entry in engines:
        assert entry.path.endswith(f".{FAKE_TAG}.engine") and entry.tensorrt_version == "10.9.0"
        assert entry.accuracy is not None and entry.gate == "pass" and "measured_on" not in entry.accuracy
        assert entry.accuracy["agreement_with_fp32"] >= 99.9  # the engine itself ran on the gate tiles
    assert (onnx_folder / f"tensorrt.{FAKE_TAG}.timing.cache").is_file()
    assert not (onnx_folder / "tensorrt.timing.cache").exists()
    # fp32 sources build with float32 weights; int8 ones from the FP16-base copy (float16 weights)
    types_line = next(line for line in result.stdout.splitlines() if line.startswith("TYPES"))
    assert types_line.count("[1]") == 2 and types_line.count("[10]") == 2, types_line


def test_an_nncf_int8_file_gets_no_tensorrt_engine_but_a_note(
    onnx_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A CPU build's INT8 (NNCF's uint8 activations, the default there) taken to a GPU: TensorRT engines for
    the rest, and a note naming the rebuild that gives TensorRT INT8."""
    from test_runtime_tensorrt_fake import install_fakes

    from export.from_onnx import build_engines_from_onnx
    from stars_edge.manifest import save_manifest

    install_fakes(monkeypatch.setitem)
    manifest = load_manifest(onnx_folder)
    source = manifest.select("sar", "int8", "onnxruntime")
    manifest.add(dataclasses.replace(source, options={**source.options, "quantizer": "nncf"}))
    save_manifest(manifest, onnx_folder)
    report = build_engines_from_onnx(onnx_folder, log=lambda line: None)
    built = {
        (e.pattern.name, e.precision) for e in load_manifest(onnx_folder).engines if e.backend == "tensorrt"
    }
    assert ("sar", "int8") not in built and {("sar", "fp32"), ("optical+sar", "int8")} <= built
    assert any("sar int8" in note and "needs --quantizer ours" in note for note in report.notes), report.notes


def test_tensorrt_engine_keeps_a_flagged_verdict_when_it_cannot_run_here(
    onnx_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_runtime_tensorrt_fake import install_fakes

    from export.from_onnx import build_engines_from_onnx
    from runtime.backends import TensorRTBackend
    from stars_edge.manifest import save_manifest

    install_fakes(monkeypatch.setitem)
    manifest = load_manifest(onnx_folder)
    source = manifest.select("sar", "int8", "onnxruntime")
    flagged = {
        "miou": 10.0,
        "per_class_iou": {},
        "agreement_with_fp32": 80.0,
        "miou_drop": 5.0,
        "gate": "flagged",
    }
    manifest.add(dataclasses.replace(source, accuracy=flagged))  # type: ignore[arg-type]
    save_manifest(manifest, onnx_folder)
    monkeypatch.setattr(TensorRTBackend, "is_available", classmethod(lambda cls: False))
    report = build_engines_from_onnx(onnx_folder, log=lambda line: None)
    entry = load_manifest(onnx_folder).select("sar", "int8", "tensorrt")
    assert entry.gate == "flagged" and entry.accuracy is not None
    assert entry.accuracy["measured_on"] == source.path
    assert entry.describe() in report.flagged
    with pytest.raises(ConfigError, match="--backend tensorrt"):
        build_engines_from_onnx(onnx_folder, backend="onnxruntime")


@pytest.mark.parametrize(
    "call",
    [
        "parse_from_file",
        "add_optimization_profile",
        "create_timing_cache",
        "set_timing_cache",
        "build_serialized_network",
    ],
)
def test_every_builder_return_is_checked(
    call: str, onnx_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from test_runtime_tensorrt_fake import install_fakes

    from export.tensorrt_build import build_tensorrt_engine

    install_fakes(monkeypatch.setitem)
    sys.modules["tensorrt"].fail = call
    engine = tmp_path / "sar.engine"
    with pytest.raises(ExportError):
        build_tensorrt_engine(onnx_folder / "sar.fp32.onnx", engine, {"sar": 2}, 64, tmp_path / "cache")
    assert not engine.exists()


def test_build_engines_asking_for_absent_tensorrt_exits_1(onnx_folder: Path) -> None:
    if tensorrt_status()[0] is not None:
        pytest.skip("TensorRT is usable on this machine")
    command = [sys.executable, "-m", "stars_edge", "build-engines", "--from-onnx", str(onnx_folder)]
    result = subprocess.run(
        [*command, "--backend", "tensorrt"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1, result.stderr[-2000:]
    message = result.stderr.strip().splitlines()[-1]
    assert "--backend tensorrt cannot build engines here" in message and "--backend onnxruntime" in message


def test_fp16_base_graph_is_float16_inside_float32_outside_and_still_legal(tmp_path: Path) -> None:
    """The INT8 engine's FP16 base: Q/DQ kept (int8, zero points 0), float parts in FP16, IO float32."""
    import numpy as np
    import onnx
    from test_runtime_support import conv_engine, random_weights

    from export.gate import predict
    from export.quantize import quantize_int8, tensorrt_legality_problems
    from export.tensorrt_build import fp16_base_graph

    pattern = Pattern.parse("optical+sar")
    weight, bias = random_weights(classes=3, seed=1)(pattern, 6)
    fp32 = conv_engine(tmp_path / "p.fp32.onnx", pattern, {"optical": 4, "sar": 2}, weight, bias)
    rng = np.random.default_rng(0)
    tiles = {
        "optical": rng.normal(size=(8, 4, 32, 32)).astype(np.float32),
        "sar": rng.normal(size=(8, 2, 32, 32)).astype(np.float32),
    }
    int8 = quantize_int8(fp32, tmp_path / "p.int8.onnx", tiles, placement="conv")
    base = onnx.load(str(fp16_base_graph(int8, tmp_path / "p.int8.fp16base.onnx")))
    assert tensorrt_legality_problems(base) == []
    assert {i.type.tensor_type.elem_type for i in (*base.graph.input, *base.graph.output)} == {1}
    initializers = {i.name: i for i in base.graph.initializer}
    dq_scales = {
        initializers[n.input[1]].data_type for n in base.graph.node if n.op_type == "DequantizeLinear"
    }
    assert dq_scales == {onnx.TensorProto.FLOAT16}
    assert sum(n.op_type == "DequantizeLinear" for n in base.graph.node) >= 2
    agreement = (
        predict(tmp_path / "p.int8.fp16base.onnx", tiles).classes == predict(int8, tiles).classes
    ).mean()
    assert agreement > 0.97
