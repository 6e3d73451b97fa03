"""The TensorRT backend's wiring, exercised on CPU with stand-ins for ``tensorrt`` and ``cuda.bindings``.

The stand-ins implement just the documented calls the backend makes (name-based tensors, set_input_shape,
set_tensor_address, execute_async_v3, cudaMalloc/cudaMallocHost/cudaMemcpyAsync on one stream), with
"device" memory that is ordinary host memory. The fake engine is a 1x1 convolution described in JSON, so
results can be compared with the ONNX engines. This checks buffer handling, batch splitting, backend
choice and the end-to-end path; the real library is checked by the ``tensorrt``-marked test on a GPU.

The stand-ins are in ``tensorrt_fakes.py``; ``install_fakes`` is also imported from here by
``test_export_tensorrt.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tensorrt_fakes import FAKE_CAPABILITY, FAKE_VERSION, FakeCudaRuntime, install_fakes
from test_runtime_support import CHECKPOINT, build_engines, make_physical, random_weights

from stars_edge.errors import ConfigError, ManifestError
from stars_edge.io import sha256_file
from stars_edge.manifest import EngineEntry, engine_inputs, load_manifest, save_manifest
from stars_edge.modalities import DEFAULT_SPECS, Pattern, all_patterns

__all__ = ["install_fakes"]


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> FakeCudaRuntime:
    return install_fakes(monkeypatch.setitem)


def _write_fake_engine(
    path: Path, pattern: Pattern, weights: Any, max_batch: int = 4, tile: int = 64
) -> Path:
    bands = {m: DEFAULT_SPECS[m].bands for m in pattern}
    weight, bias = weights(pattern, sum(bands.values()))
    spec = {
        "inputs": list(pattern),
        "bands": bands,
        "weight": weight.tolist(),
        "bias": bias.tolist(),
        "max_batch": max_batch,
        "tile": tile,
    }
    path.write_text(json.dumps(spec))
    return path


def test_backend_splits_batches_and_frees_buffers(fake_gpu: FakeCudaRuntime, tmp_path: Path) -> None:
    from runtime.backends import OnnxRuntimeBackend, TensorRTBackend

    weights = random_weights(classes=3, seed=4)
    pattern = Pattern.parse("optical+sar")
    engine = TensorRTBackend(_write_fake_engine(tmp_path / "e.engine", pattern, weights))
    assert TensorRTBackend.is_available() and engine.max_batch == 4
    assert (
        engine.input_names == ("optical", "sar")
        and engine.device == f"tensorrt {FAKE_VERSION} on GPU 0 (compute capability {FAKE_CAPABILITY})"
    )
    onnx_folder = build_engines(tmp_path / "onnx", weights, classes=3, patterns=(pattern,))
    reference = OnnxRuntimeBackend(onnx_folder / "optical+sar.fp32.onnx")
    rng = np.random.default_rng(0)
    for batch, size in ((6, 32), (2, 64)):  # 6 > max batch: runs as 4 + 2; then a bigger tile regrows buffers
        inputs = {
            "optical": rng.normal(size=(batch, 4, size, size)).astype(np.float32),
            "sar": rng.normal(size=(batch, 2, size, size)).astype(np.float32),
        }
        np.testing.assert_allclose(engine.run(inputs), reference.run(inputs), rtol=1e-4, atol=1e-4)
    context = sys.modules["tensorrt"].engines[0].contexts[0]
    assert context.executions == 3
    assert len(fake_gpu.allocations) == 6  # pinned + device buffer for two inputs and the output
    engine.close()
    assert fake_gpu.allocations == {}


def test_backend_refuses_an_engine_it_cannot_deserialise(fake_gpu: FakeCudaRuntime, tmp_path: Path) -> None:
    from runtime.backends import TensorRTBackend

    broken = tmp_path / "broken.engine"
    broken.write_bytes(b"\x00not an engine")
    with pytest.raises(ManifestError, match="could not be deserialised"):
        TensorRTBackend(broken)


def _manifest_with_tensorrt(folder: Path, weights: Any, capability: str = FAKE_CAPABILITY) -> Path:
    build_engines(folder, weights, classes=3)
    manifest = load_manifest(folder)
    for pattern in all_patterns(("optical", "sar", "dsm")):
        name = f"{pattern}.fp32.trt{FAKE_VERSION}.sm{capability.replace('.', '')}.engine"
        _write_fake_engine(folder / name, pattern, weights)
        manifest.add(
            EngineEntry(
                pattern=pattern,
                precision="fp32",
                backend="tensorrt",
                path=name,
                sha256=sha256_file(folder / name),
                inputs=engine_inputs(pattern, DEFAULT_SPECS),
                tile_size=64,
                tensorrt_version=FAKE_VERSION,
                compute_capability=capability,
            )
        )
    save_manifest(manifest, folder)
    return folder


def test_auto_picks_tensorrt_built_for_this_gpu_and_matches_onnxruntime(
    fake_gpu: FakeCudaRuntime, tmp_path: Path
) -> None:
    from runtime import Predictor

    weights = random_weights(classes=3, seed=9)
    folder = _manifest_with_tensorrt(tmp_path / "engines", weights)
    inputs = make_physical((80, 70), seed=2)
    inputs["sar"][:, :30] = np.nan
    auto = Predictor(folder, backend="auto", expected_model_sha256=CHECKPOINT)
    classes, patterns = auto.predict_arrays(inputs, tile=64, overlap=16, batch=6)
    assert auto._engines.keys() == {"tensorrt"}
    expected = Predictor(folder, backend="onnxruntime").predict_arrays(inputs, tile=64, overlap=16)
    np.testing.assert_array_equal(patterns, expected[1])
    assert (classes == expected[0]).mean() > 0.999
    with pytest.raises(ConfigError, match="tiles up to 64"):
        auto.predict_arrays(inputs, tile=128, overlap=16)


def test_auto_skips_engines_built_for_another_gpu(fake_gpu: FakeCudaRuntime, tmp_path: Path) -> None:
    from runtime import Predictor

    folder = _manifest_with_tensorrt(tmp_path / "engines", random_weights(classes=3), capability="9.0")
    predictor = Predictor(folder, backend="auto")
    predictor.predict_arrays(make_physical((40, 40)), tile=32, overlap=8)
    assert predictor._engines.keys() == {"openvino"}  # the fastest CPU backend, not the foreign engines
    with pytest.raises(ManifestError, match=r"compute capability 8\.9"):
        Predictor(folder, backend="tensorrt").predict_arrays(make_physical((40, 40)), tile=32, overlap=8)
