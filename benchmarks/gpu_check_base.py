"""What every step of ``benchmarks/gpu_check.py`` shares: its sizes and timeouts, the run's settings and
deadline (``Check``), one step's outcome (``Step``), the error a step stops the run with (``StepFailed``),
and running one child command under a timeout with its output in a log (``run_command``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
#: Engine and calibration sizes: small enough for 21 TensorRT builds in a few minutes, large enough to matter.
TILE = 128
TRAIN_STEPS = 60
#: Seconds per step (each also capped by what is left of --budget).
#: Estimates, not measurements (no GPU has run this yet): the build is 21 TensorRT builds of the tiny model.
TIMEOUTS = {"probe": 60, "checkpoint": 90, "build-engines": 330, "pytest": 150, "latency": 150}
#: (backend, device) rows latency.py must produce on a GPU machine.
LATENCY_ROWS = {
    ("pytorch", "cuda"): "PyTorch eager on CUDA",
    ("onnxruntime", "cuda"): "ONNX Runtime, CUDA provider",
    ("onnxruntime-tensorrt", "cuda"): "ONNX Runtime, TensorRT provider",
    ("tensorrt", "cuda"): "native TensorRT through the runtime's backend",
}


class StepFailed(Exception):
    """A step found something broken; ``fix`` says what to do about it."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(message)
        self.fix = fix


@dataclass
class Step:
    """One step's outcome as it goes into the results file."""

    name: str
    status: str = "not run"  # passed | failed | not run
    seconds: float = 0.0
    message: str = ""
    fix: str = ""
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Check:
    """Where the run writes, what it was given, and its deadline."""

    out: Path
    work: Path
    checkpoint: Path | None
    deadline: float
    python: str = sys.executable
    inventory: dict[str, Any] = field(default_factory=dict)
    steps: list[Step] = field(default_factory=list)

    def timeout(self, step: str) -> float:
        left = self.deadline - time.monotonic()
        if left < 5:
            raise StepFailed(
                f"the run's budget is spent before step {step}",
                "rerun with a larger --budget, or look at the slow step's log in the results folder",
            )
        return min(TIMEOUTS.get(step, 60), left)


def run_command(command: Sequence[str], timeout: float, log: Path, env: dict[str, str] | None = None) -> str:
    """Run ``command`` in its own process group with ``timeout``; its output goes to ``log`` and is returned.

    A timeout kills the whole group (pytest and build-engines start children) and raises StepFailed.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), **(env or {})}
    with log.open("w") as sink:
        sink.write("$ " + " ".join(command) + "\n")
        sink.flush()
        process = subprocess.Popen(
            list(command),
            cwd=PROJECT_ROOT,
            stdout=sink,
            stderr=subprocess.STDOUT,
            env=environment,
            start_new_session=True,
        )
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise StepFailed(
                f"`{' '.join(command[:4])} ...` did not finish in {timeout:.0f} s (log: {log})",
                "see the log for the step it hung in; a first TensorRT build can be slow, raise --budget",
            ) from None
    output = log.read_text(errors="replace")
    if process.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-15:])
        raise StepFailed(f"`{' '.join(command[:4])} ...` exited {process.returncode}:\n{tail}", f"see {log}")
    return output
