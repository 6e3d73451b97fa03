"""Backends behind one protocol, backend choice, and the torch-free guarantee of the runtime."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from conftest import NO_TORCH_PRELUDE
from onnx import TensorProto, helper
from test_runtime_support import build_engines, conv_engine, random_weights

from runtime.backends import (
    Backend,
    OnnxRuntimeBackend,
    OpenVINOBackend,
    TensorRTBackend,
    open_backend,
    resolve_backend_name,
)
from runtime.backends.onnxruntime_backend import provider_options
from stars_edge.errors import ConfigError, DataError, ManifestError
from stars_edge.manifest import load_manifest
from stars_edge.modalities import Pattern

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engines(tmp_path_factory.mktemp("engines"), random_weights(classes=3), classes=3)


def test_onnxruntime_backend_runs_a_batch(engines: Path) -> None:
    backend = OnnxRuntimeBackend(engines / "optical+sar.fp32.onnx", threads=1)
    assert isinstance(backend, Backend)
    assert backend.input_names == ("optical", "sar") and "CPU" in backend.device
    rng = np.random.default_rng(0)
    batch = {"optical": rng.normal(size=(3, 4, 32, 64)), "sar": rng.normal(size=(3, 2, 32, 64))}
    logits = backend.run(batch)
    assert logits.shape == (3, 3, 32, 64) and logits.dtype == np.float32
    with pytest.raises(DataError, match="needs input"):
        backend.run({"optical": batch["optical"]})
    with pytest.raises(DataError, match="rejected inputs"):
        backend.run({"optical": batch["optical"][:, :3], "sar": batch["sar"]})
    backend.close()


@pytest.mark.parametrize("name", ["onnxruntime", "openvino"])
def test_each_item_of_a_batch_gets_the_bits_of_a_batch_of_one(engines: Path, name: str) -> None:
    """The runtime runs the remainder of a row's tiles or windows one at a time and batches of ``--batch``
    otherwise (``tile_inference.engine_calls``): the maps stay the same only while an item's logits do not
    depend on the batch it runs in."""
    if name == "openvino" and not OpenVINOBackend.is_available():
        pytest.skip("openvino is not installed")
    backend = open_backend(name, engines / "optical+sar.fp32.onnx", threads=1)
    rng = np.random.default_rng(4)
    batch = {
        "optical": rng.normal(size=(3, 4, 32, 64)).astype(np.float32),
        "sar": rng.normal(size=(3, 2, 32, 64)).astype(np.float32),
    }
    together = backend.run(batch)
    for item in range(3):
        alone = backend.run({k: np.ascontiguousarray(v[item : item + 1]) for k, v in batch.items()})
        np.testing.assert_array_equal(alone[0].view(np.uint32), together[item].view(np.uint32))
    backend.close()


def test_onnxruntime_backend_refuses_a_broken_file(tmp_path: Path) -> None:
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ManifestError, match="cannot be loaded"):
        OnnxRuntimeBackend(broken)


def test_onnxruntime_backend_requires_logits_output(tmp_path: Path) -> None:
    weight, bias = random_weights(classes=2)(Pattern.parse("sar"), 2)
    path = conv_engine(tmp_path / "sar.onnx", Pattern.parse("sar"), {"sar": 2}, weight, bias)
    with pytest.raises(ManifestError, match="expected 'scores'"):
        OnnxRuntimeBackend(path, output_name="scores")


def test_auto_picks_openvino_on_a_cpu_and_onnxruntime_on_request(engines: Path) -> None:
    manifest = load_manifest(engines)
    patterns = (Pattern.parse("sar"),)
    assert OpenVINOBackend.is_available(), "the dev extra installs openvino; these tests run it for real"
    expected = "tensorrt" if TensorRTBackend.is_available() else "openvino"
    assert resolve_backend_name("auto", manifest, patterns, "fp32") == expected
    assert resolve_backend_name("onnxruntime", manifest, patterns, "fp32") == "onnxruntime"
    assert resolve_backend_name("openvino", manifest, patterns, "fp32") == "openvino"
    with pytest.raises(ConfigError, match="unknown backend"):
        resolve_backend_name("tflite", manifest, patterns, "fp32")


def test_openvino_backend_matches_onnxruntime(engines: Path) -> None:
    path = engines / "optical+sar.fp32.onnx"
    backend = OpenVINOBackend(path, threads=1)
    assert isinstance(backend, Backend)
    assert backend.input_names == ("optical", "sar") and backend.device.startswith("openvino")
    assert "f32" in backend.device  # explicit: OpenVINO would otherwise run "fp32" in bf16 on AVX512-BF16/AMX
    rng = np.random.default_rng(2)
    for shape in ((1, 32, 32), (3, 64, 32)):  # dynamic batch and tile size
        batch = {
            "optical": rng.normal(size=(shape[0], 4, *shape[1:])).astype(np.float32),
            "sar": rng.normal(size=(shape[0], 2, *shape[1:])).astype(np.float32),
        }
        expected = OnnxRuntimeBackend(path, threads=1).run(batch)
        np.testing.assert_allclose(backend.run(batch), expected, rtol=1e-4, atol=1e-4)
    with pytest.raises(DataError, match="needs input"):
        backend.run({"optical": batch["optical"]})
    with pytest.raises(DataError, match="rejected inputs"):
        backend.run({"optical": batch["optical"][:, :3], "sar": batch["sar"]})
    backend.close()


def test_openvino_refuses_missing_output_and_broken_file(engines: Path, tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="expected 'scores'"):
        OpenVINOBackend(engines / "sar.fp32.onnx", output_name="scores")
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ManifestError, match="cannot be read by OpenVINO"):
        OpenVINOBackend(broken)


def test_openvino_loads_by_path_per_content_and_never_serves_a_former_content(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the file's sha256 (``content_id``) a cached model loads by its path, in a cache folder per
    content: an engine rebuilt in place with other weights gives its own outputs, not the former blob's
    (OpenVINO keys a path's cache by the path). A broken file or a missing output is refused as before."""
    from runtime.backends.openvino_backend import CACHE_ENV
    from stars_edge.io import sha256_file

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    pattern = Pattern(("sar",))
    path = tmp_path / "sar.onnx"
    batch = {"sar": np.random.default_rng(0).normal(size=(1, 2, 16, 16)).astype(np.float32)}
    outputs = []
    for scale in (1.0, 1.0, -3.0):  # the second load comes from the cache; the third is a rebuild in place
        weight = scale * np.arange(6, dtype=np.float32).reshape(3, 2)
        conv_engine(path, pattern, {"sar": 2}, weight, np.zeros(3, dtype=np.float32))
        engine = OpenVINOBackend(path, threads=1, content_id=sha256_file(path))
        outputs.append(engine.run(batch))
        engine.close()
        expected = np.einsum("oc,nchw->nohw", weight, batch["sar"])
        np.testing.assert_allclose(outputs[-1], expected, rtol=1e-5, atol=1e-5)
    assert len(list((tmp_path / "cache" / "openvino").iterdir())) == 2  # one folder per content
    with pytest.raises(ManifestError, match="expected 'scores'"):
        OpenVINOBackend(path, output_name="scores", content_id=sha256_file(path))
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not a model")
    with pytest.raises(ManifestError, match="cannot be read by OpenVINO"):
        OpenVINOBackend(broken, content_id=sha256_file(broken))


def _scaler_engine(path: Path) -> Path:
    """An engine ONNX Runtime runs but OpenVINO cannot load (ai.onnx.ml Scaler): the fallback case."""
    sar = helper.make_tensor_value_info("sar", TensorProto.FLOAT, ["N", 2, "H", "W"])
    logits = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2, "H", "W"])
    node = helper.make_node("Scaler", ["sar"], ["logits"], domain="ai.onnx.ml", offset=[0.0], scale=[2.0])
    graph = helper.make_graph([node], "scaler", [sar], [logits])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))
    return path


def test_failed_openvino_load_falls_back_to_onnxruntime_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = _scaler_engine(tmp_path / "sar.fp32.onnx")
    caplog.set_level(logging.WARNING, logger="stars_edge.runtime")
    first = open_backend("openvino", path, threads=1)
    second = open_backend("openvino", path, threads=1)
    assert isinstance(first, OnnxRuntimeBackend) and isinstance(second, OnnxRuntimeBackend)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "OpenVINO failed, using ONNX Runtime" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    sar = np.ones((1, 2, 8, 8), np.float32)
    np.testing.assert_allclose(first.run({"sar": sar}), 2 * sar)
    weight, bias = random_weights(classes=2)(Pattern.parse("sar"), 2)
    good = conv_engine(tmp_path / "good.onnx", Pattern.parse("sar"), {"sar": 2}, weight, bias)
    assert isinstance(open_backend("openvino", good, threads=1), OpenVINOBackend)


def test_onnxruntime_gpu_providers_get_caches_profiles_and_device(tmp_path: Path) -> None:
    """The options given to the TensorRT/CUDA providers (the providers themselves need a GPU build)."""
    options = provider_options(
        ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
        tmp_path / "optical+sar.int8.onnx",
        device_id=1,
        input_bands={"optical": 4, "sar": 2},
        tile=512,
    )
    trt, cuda, cpu = options
    assert trt["device_id"] == "1" and cuda["device_id"] == "1" and cpu == {}
    assert trt["trt_engine_cache_enable"] == "True" and trt["trt_timing_cache_enable"] == "True"
    assert trt["trt_engine_cache_path"] == str(tmp_path / "ort_tensorrt_cache")
    assert trt["trt_profile_min_shapes"] == "optical:1x4x32x32,sar:1x2x32x32"
    assert trt["trt_profile_opt_shapes"] == "optical:1x4x512x512,sar:1x2x512x512"
    assert trt["trt_profile_max_shapes"] == "optical:4x4x512x512,sar:4x2x512x512"


def test_predictor_runs_on_openvino(engines: Path) -> None:
    from runtime import Predictor

    rng = np.random.default_rng(0)
    arrays = {"sar": rng.normal(-12, 4, (2, 40, 40)), "optical": rng.normal(0.2, 0.1, (4, 40, 40))}
    reference, _ = Predictor(engines, backend="onnxruntime", threads=1).predict_arrays(
        arrays, tile=32, overlap=8
    )
    predictor = Predictor(engines, backend="openvino", threads=1)
    classes, _ = predictor.predict_arrays(arrays, tile=32, overlap=8)
    assert (classes == reference).mean() > 0.999


def test_tensorrt_is_available_is_safe_to_call() -> None:
    assert isinstance(TensorRTBackend.is_available(), bool)


def test_runtime_imports_and_predicts_without_torch(engines: Path) -> None:
    """A device without PyTorch: block torch entirely, then import the runtime and the CLI and predict."""
    script = (
        NO_TORCH_PRELUDE
        + f"""
import numpy as np
import runtime, runtime.predictor, runtime.backends, stars_edge.commands.run
from runtime import Predictor
predictor = Predictor({str(engines)!r}, backend="onnxruntime", threads=1)
rng = np.random.default_rng(0)
classes, patterns = predictor.predict_arrays({{"sar": rng.normal(-12, 4, (2, 40, 40))}}, tile=32, overlap=8)
assert classes.shape == (40, 40) and (patterns == 6).all()
assert "torch" not in sys.modules
print("ok")
"""
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().endswith("ok")


def test_cli_import_does_not_import_torch() -> None:
    code = "import sys, runtime, stars_edge.cli; assert 'torch' not in sys.modules, 'torch imported'"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]


@pytest.mark.tensorrt
@pytest.mark.gpu
def test_tensorrt_backend_matches_onnxruntime(engines: Path, tmp_path: Path) -> None:
    """Build a TensorRT engine from a conv ONNX on this GPU and compare it with ONNX Runtime."""
    import tensorrt as trt

    onnx_path = engines / "optical+sar.fp32.onnx"
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    assert parser.parse(onnx_path.read_bytes()), parser.get_error(0)
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, bands in (("optical", 4), ("sar", 2)):
        profile.set_shape(name, (1, bands, 32, 32), (2, bands, 64, 64), (4, bands, 128, 128))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    engine_path = tmp_path / "optical+sar.fp32.engine"
    engine_path.write_bytes(bytes(serialized))
    backend = TensorRTBackend(engine_path)
    rng = np.random.default_rng(1)
    batch = {
        "optical": rng.normal(size=(6, 4, 64, 64)).astype(np.float32),
        "sar": rng.normal(size=(6, 2, 64, 64)).astype(np.float32),
    }
    assert backend.max_batch == 4  # a batch of 6 runs as 4 + 2
    expected = OnnxRuntimeBackend(onnx_path).run(batch)
    np.testing.assert_allclose(backend.run(batch), expected, rtol=1e-3, atol=1e-3)
    backend.close()


def test_measure_latency_times_every_pattern(engines: Path) -> None:
    from runtime import Predictor

    predictor = Predictor(engines, backend="onnxruntime", threads=1)
    latencies = predictor.measure_latency(tile=32, runs=2, warmup=1)
    assert set(latencies) == {p.name for p in load_manifest(engines).patterns}
    assert all(value > 0 for value in latencies.values())
    assert set(predictor.measure_latency(tile=32, runs=1, patterns=["sar"])) == {"sar"}
    with pytest.raises(ManifestError, match="no int8 engine"):
        Predictor(engines, precision="int8").measure_latency(tile=32, runs=1)


def test_openvino_keeps_compiled_models_in_the_user_cache(
    engines: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Compiled once, loaded from the cache by the next run (a blob appears); an unwritable cache folder
    only means compiling from scratch."""
    from runtime.backends.openvino_backend import CACHE_ENV, OpenVINOBackend, compiled_model_cache

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    inputs = {"sar": np.random.default_rng(0).normal(size=(1, 2, 32, 32)).astype(np.float32)}
    first = OpenVINOBackend(engines / "sar.fp32.onnx", threads=1).run(inputs)
    assert list((tmp_path / "cache" / "openvino").glob("*.blob"))
    np.testing.assert_array_equal(OpenVINOBackend(engines / "sar.fp32.onnx", threads=1).run(inputs), first)
    (tmp_path / "file").write_text("not a folder")
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "file"))
    assert compiled_model_cache() is None
    OpenVINOBackend(engines / "sar.fp32.onnx", threads=1).run(inputs)
