"""TensorRT engine building. The `tensorrt` tests need TensorRT and a CUDA GPU and skip elsewhere."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from export.onnx_export import export_onnx, simplify_onnx
from export.tensorrt_build import TensorRTTarget, engine_file_name, tensorrt_status
from stars_edge.errors import BackendUnavailableError
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
    cache = tmp_path / "timing.cache"
    engine = tmp_path / engine_file_name(Pattern.parse("optical+sar"), "fp32", target)
    build_tensorrt_engine(fp32_onnx, engine, BANDS, tile_size=64, timing_cache=cache)
    assert engine.stat().st_size > 0 and cache.stat().st_size > 0
    tensors = describe_engine(engine)
    assert tensors["optical"]["mode"] == "input" and tensors["logits"]["mode"] == "output"
    assert tensors["optical"]["shape"] == (-1, 4, -1, -1)
    # A second build reuses (and keeps) the same timing cache file.
    build_tensorrt_engine(fp32_onnx, tmp_path / "again.engine", BANDS, tile_size=64, timing_cache=cache)
    assert cache.stat().st_size > 0
