"""The TensorRT backend's CUDA side against the real cuda-python (the dev extra installs it; it imports on a
machine without a GPU and answers ``cudaErrorInsufficientDriver``): where no GPU is usable it must say so
plainly and never crash; and every cuda-python runtime name the project uses must exist in the installed
package (collected by AST, like the TensorRT names of ``test_tensorrt_api_surface``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cuda.bindings import runtime as cudart

from export.tensorrt_api.surface import (
    collect_project,
    collect_source,
    missing_installed_names,
    supported_names,
    union_index,
)
from export.tensorrt_build import tensorrt_status
from runtime.backends import TensorRTBackend, cuda_status, gpu_compute_capability
from runtime.backends.tensorrt_backend import _check
from stars_edge.errors import BackendUnavailableError

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_gpu() -> str:
    """The cuda-python error name of this machine's missing driver/GPU (skips where a GPU is usable)."""
    err, count = cudart.cudaGetDeviceCount()
    if err == cudart.cudaError_t.cudaSuccess and count:
        pytest.skip("a CUDA GPU is usable on this machine")
    return str(cudart.cudaGetErrorName(err)[1].decode())


def test_cuda_status_says_no_driver_or_gpu_is_present(no_gpu: str) -> None:
    count, reason = cuda_status()
    assert count == 0
    assert reason.startswith("no CUDA GPU is usable: CUDA call cudaGetDeviceCount failed with " + no_gpu)
    if no_gpu == "cudaErrorInsufficientDriver":  # this project's CPU machines
        assert "no NVIDIA driver is loaded" in reason


def test_tensorrt_backend_reports_why_it_cannot_run_and_does_not_crash(no_gpu: str, tmp_path: Path) -> None:
    reason = TensorRTBackend.unavailable_reason()
    assert (
        reason is not None
        and f"no CUDA GPU is usable: CUDA call cudaGetDeviceCount failed with {no_gpu}" in reason
    )
    assert TensorRTBackend.is_available() is False
    with pytest.raises(BackendUnavailableError, match=f"TensorRT is not usable here: .*{no_gpu}"):
        TensorRTBackend(tmp_path / "absent.engine")
    assert gpu_compute_capability() is None
    with pytest.raises(BackendUnavailableError, match=f"CUDA call cudaSetDevice failed with {no_gpu}"):
        _check(cudart.cudaSetDevice(0), "cudaSetDevice")
    target, status = tensorrt_status()
    assert target is None and f"cudaDeviceGetAttribute failed with {no_gpu}" in status


def test_every_cuda_runtime_name_the_project_uses_exists_in_cuda_python() -> None:
    uses = [u for u in collect_project(PROJECT_ROOT, union_index(supported_names())) if u.module == "cudart"]
    # both spellings are followed: `from cuda.bindings import runtime as cudart`, `_cudart()`/self._cudart
    assert {
        "cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor",
        "cudaMemcpyKind.cudaMemcpyHostToDevice",
        "cudaMemcpyAsync",
        "cudaStreamSynchronize",
        "cudaGetDeviceCount",
    } <= {u.name for u in uses}
    assert missing_installed_names(uses, "cudart") == []


def test_a_cuda_runtime_name_cuda_python_lacks_is_reported() -> None:
    source = """
import importlib
def _cudart():
    return importlib.import_module("cuda.bindings.runtime")
class Copier:
    def __init__(self):
        self._cudart = _cudart()
    def copy(self, dst, src, count, stream):
        self._cudart.cudaMemcpyAsyncPeer2(dst, src, count, stream)
        return self._cudart.cudaMemcpyKind.cudaMemcpyHostToNowhere
"""
    uses = collect_source(source, "snippet.py", {})
    problems = missing_installed_names(uses, "cudart")
    assert [p.split(" does not exist")[0] for p in problems] == [
        "snippet.py:9: cuda.bindings.runtime.cudaMemcpyAsyncPeer2",
        "snippet.py:10: cuda.bindings.runtime.cudaMemcpyKind.cudaMemcpyHostToNowhere",
    ]
