"""`make gpu-check` on a machine without a GPU: the inventory is complete, the run stops at the first step
that needs a GPU with what to fix, exits non-zero, and the results file says so."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
INVENTORY = ("nvidia_smi", "torch", "tensorrt", "cuda_python", "packages", "tensorrt_name_lists")


def test_gpu_check_stops_at_the_first_gpu_step_with_what_to_fix(tmp_path: Path) -> None:
    if subprocess.run(["sh", "-c", "nvidia-smi -L"], capture_output=True, check=False).returncode == 0:
        pytest.skip("this machine has a GPU: run `make gpu-check` itself")
    out = tmp_path / "results"
    result = subprocess.run(
        [sys.executable, "benchmarks/gpu_check.py", "--out", str(out), "--work", str(tmp_path / "work")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 1, output[-3000:]
    # the inventory is printed, all of it, before any step
    for label in ("nvidia-smi", "torch", "tensorrt", "cuda-python", "onnxruntime", "TensorRT name lists"):
        assert f"\n  {label} " in output, label
    assert output.index("gpu-check inventory:") < output.index("gpu-check step requirements")
    assert "gpu-check FAILED at step requirements" in output
    assert "- no NVIDIA GPU: nvidia-smi not found" in output
    assert "what to fix:" in output and "run `make gpu-check` on a machine with an NVIDIA GPU" in output

    data = json.loads((out / "gpu_check.json").read_text())
    assert data["verdict"] == "failed" and data["failed_step"] == "requirements"
    assert set(INVENTORY) <= set(data["inventory"])
    assert data["inventory"]["torch"]["installed"] and not data["inventory"]["torch"]["cuda_available"]
    assert data["inventory"]["cuda_python"]["devices"] == 0
    statuses = {step["name"]: step["status"] for step in data["steps"]}
    assert statuses == {
        "inventory": "passed",
        "requirements": "failed",
        "checkpoint": "not run",
        "build-engines": "not run",
        "pytest": "not run",
        "int8-gate": "not run",
        "latency": "not run",
    }
    markdown = (out / "gpu_check.md").read_text()
    assert "**failed** at step `requirements`" in markdown and "**What to fix**" in markdown
    assert not (tmp_path / "work").exists()  # nothing was trained or built
