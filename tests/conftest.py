"""Shared pytest configuration: opt-in ``slow`` tests, ``gpu``/``tensorrt`` tests that skip cleanly."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--run-slow", action="store_true", default=False, help="run tests marked slow")


def _cuda_available() -> bool:
    if importlib.util.find_spec("torch") is not None:
        import torch

        return bool(torch.cuda.is_available())
    return os.path.exists("/dev/nvidia0")


def _tensorrt_available() -> bool:
    if importlib.util.find_spec("tensorrt") is None:
        return False
    try:
        import tensorrt  # noqa: F401
    except Exception:
        return False
    return _cuda_available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    run_slow = config.getoption("--run-slow")
    gpu = tensorrt = None
    for item in items:
        if "slow" in item.keywords and not run_slow:
            item.add_marker(pytest.mark.skip(reason="slow test: opt in with --run-slow"))
        if "gpu" in item.keywords:
            gpu = _cuda_available() if gpu is None else gpu
            if not gpu:
                item.add_marker(pytest.mark.skip(reason="no CUDA GPU on this machine"))
        if "tensorrt" in item.keywords:
            tensorrt = _tensorrt_available() if tensorrt is None else tensorrt
            if not tensorrt:
                item.add_marker(pytest.mark.skip(reason="TensorRT or a CUDA GPU is not available here"))


@pytest.fixture(autouse=True, scope="session")
def _single_thread_torch() -> None:
    """Tests run on 2 shared cores: one intra-op thread keeps them predictable."""
    if importlib.util.find_spec("torch") is not None:
        import torch

        torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _kernels_default_per_test(monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``run-batch`` worker in this process (``processes=False`` clusters, ``borrow_predictor``) makes the
    compiled kernels the process's default (``runtime.kernels.prefer_compiled``): each test starts from the
    runtime's own default and leaves it behind."""
    import runtime.kernels

    monkeypatch.setattr(runtime.kernels, "_default", None)


@pytest.fixture
def shared_data() -> Path:
    """The real sample imagery in ../shared/data; tests using it skip where it is absent (fresh clones)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (only present in the project workspace)")
    return SHARED_DATA


#: Prelude of a child-process script that makes ``import torch`` fail: the runtime, the batch code and the
#: engine build from ONNX must work on a device without PyTorch.
NO_TORCH_PRELUDE = """\
import sys
class _NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is blocked in this test")
        return None
sys.meta_path.insert(0, _NoTorch())
"""
