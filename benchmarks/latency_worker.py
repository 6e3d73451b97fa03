"""One engine in its own process, timed on request: the unit of the fair CPU benchmark.

The parent (``benchmarks.latency_engines``) starts one worker per configuration (ONNX Runtime FP32/INT8,
OpenVINO FP32/BF16/INT8, PyTorch eager / channels-last / torch.compile), so nothing else lives in the
process being timed, and asks each in turn for a few runs, round after round, so that whatever else loads
the machine hits every configuration alike. Protocol: one JSON object per line on stdin/stdout. The worker
answers ``{"ready": ...}`` or ``{"error": ...}`` after loading, then ``{"seconds": [...]}`` per ``time``
request and ``{"ops": {...}}`` per ``profile`` request (milliseconds per op type of one run).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

Runner = Callable[[Mapping[str, np.ndarray]], Any]


def make_arrays(bands: Mapping[str, int], batch: int, tile: int, seed: int) -> dict[str, np.ndarray]:
    """The same normalised-scale random inputs as ``benchmarks.latency_plan.make_inputs``."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal((batch, count, tile, tile), dtype=np.float32)
        for name, count in bands.items()
    }


class _OnnxRuntime:
    """ONNX Runtime CPU as the runtime configures it (full graph optimisation, intra-op threads)."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        import onnxruntime as ort

        self._ort = ort
        self.spec = spec
        self.session = self._session(profile=False)
        self.device = "onnxruntime CPU"

    def _session(self, profile: bool) -> Any:
        options = self._ort.SessionOptions()
        options.graph_optimization_level = self._ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        options.intra_op_num_threads = int(self.spec["threads"])
        options.inter_op_num_threads = 1
        if profile:
            options.enable_profiling = True
            options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
        return self._ort.InferenceSession(self.spec["path"], options, providers=["CPUExecutionProvider"])

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Any:
        return self.session.run(["logits"], dict(inputs))

    def profile(self, inputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        session = self._session(profile=True)
        runs = 4
        for _ in range(runs):
            session.run(["logits"], dict(inputs))
        events = json.loads(Path(session.end_profiling()).read_text())
        # The first run of a new session pays one-off costs: count only the nodes of the later runs.
        starts = sorted(e["ts"] for e in events if e.get("name") == "model_run")
        after = starts[1] if len(starts) > 1 else 0
        counted = max(1, len(starts) - 1)
        totals: dict[str, float] = {}
        for event in events:
            args = event.get("args", {})
            if (
                event.get("cat") == "Node"
                and "op_name" in args
                and event["name"].endswith("_kernel_time")
                and event["ts"] >= after
            ):
                totals[args["op_name"]] = totals.get(args["op_name"], 0.0) + event["dur"] / 1e3 / counted
        return dict(sorted(totals.items(), key=lambda item: -item[1]))


class _OpenVINO:
    """The runtime's OpenVINO backend, with per-layer performance counters for profiles."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        from runtime.backends import OpenVINOBackend

        self.backend = OpenVINOBackend(
            spec["path"],
            threads=int(spec["threads"]),
            precision_hint=spec.get("hint", "f32"),
            perf_counts=True,
        )
        self.device = self.backend.device

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Any:
        return self.backend.run(inputs)

    def profile(self, inputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        self.backend.run(inputs)
        return self.backend.profile()


class _PyTorch:
    """PyTorch as a user runs it: inference_mode, optionally channels-last and torch.compile."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        import torch

        from benchmarks.latency_plan import checkpoint_modules
        from stars_edge.modalities import Pattern

        torch.set_num_threads(int(spec["threads"]))
        self._torch = torch
        self.order = list(spec["bands"])
        module = checkpoint_modules(Path(spec["checkpoint"]))(Pattern.parse(spec["pattern"])).eval()
        self.channels_last = spec["mode"] in ("channels_last", "compile")
        if self.channels_last:
            module = module.to(memory_format=torch.channels_last)
        if spec["mode"] == "compile":
            module = torch.compile(module)
        self.module = module
        self.device = f"torch {torch.__version__} {spec['mode']}"

    def __call__(self, inputs: Mapping[str, np.ndarray]) -> Any:
        torch = self._torch
        tensors = [torch.from_numpy(inputs[name]) for name in self.order]
        if self.channels_last:
            tensors = [t.contiguous(memory_format=torch.channels_last) for t in tensors]
        with torch.inference_mode():
            return self.module(*tensors)

    def profile(self, inputs: Mapping[str, np.ndarray]) -> dict[str, float]:
        return {}


KINDS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "onnxruntime": _OnnxRuntime,
    "openvino": _OpenVINO,
    "pytorch": _PyTorch,
}


def _time(
    runner: Runner, inputs: Mapping[str, np.ndarray], warmup: int, runs: int, seconds: float
) -> list[float]:
    """``runs`` timed calls (more until ``seconds`` have passed, at most 4x ``runs``) after ``warmup``."""
    for _ in range(warmup):
        runner(inputs)
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < runs or (time.perf_counter() - start < seconds and len(samples) < 4 * runs):
        began = time.perf_counter()
        runner(inputs)
        samples.append(time.perf_counter() - began)
    return samples


def main() -> None:
    """Load the engine described by the last argument (JSON), then answer requests until ``quit``."""
    spec = json.loads(sys.argv[-1])
    out = sys.stdout
    sys.stdout = sys.stderr  # library chatter must not corrupt the protocol
    try:
        runner = KINDS[spec["kind"]](spec)
        runner(make_arrays(spec["bands"], 1, spec["tile"], spec["seed"]))  # compile / first-run costs
    except Exception as exc:  # any load failure is reported as one line and the parent skips the row
        out.write(json.dumps({"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"}) + "\n")
        out.flush()
        return
    out.write(json.dumps({"ready": runner.device, "pid": os.getpid()}) + "\n")
    out.flush()
    arrays: dict[int, dict[str, np.ndarray]] = {}
    for line in sys.stdin:
        request = json.loads(line)
        if request["cmd"] == "quit":
            break
        batch = int(request["batch"])
        if batch not in arrays:
            arrays[batch] = make_arrays(spec["bands"], batch, spec["tile"], spec["seed"])
        try:
            if request["cmd"] == "time":
                reply: dict[str, Any] = {
                    "seconds": _time(
                        runner, arrays[batch], request["warmup"], request["runs"], request["seconds"]
                    )
                }
            else:
                reply = {"ops": runner.profile(arrays[batch])}
        except Exception as exc:  # a batch the engine rejects: reported, the worker stays usable
            reply = {"error": f"{type(exc).__name__}: {str(exc).strip().splitlines()[0]}"}
        out.write(json.dumps(reply) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
