"""Engine-only timing on the CPU: the fair comparison in isolated, interleaved worker processes.

CPU fairness: every configuration (ONNX Runtime FP32/INT8, OpenVINO FP32/BF16/INT8, PyTorch eager,
channels-last and ``torch.compile``) runs alone in its own worker process (``benchmarks.latency_worker``);
the workers of one pattern are started together and asked for a few runs each, round after round, in a
rotating order, so a burst of outside load lands on all of them alike instead of on whichever ran last.

The in-process timing loop used for GPU engines (``benchmark_onnxruntime``, ``benchmark_pytorch``,
``_engine_rows``) is in ``benchmarks.latency_inprocess`` and re-exported here.
"""

from __future__ import annotations

import contextlib
import json
import math
import subprocess
import sys
import tempfile
import time
from typing import Any

from benchmarks.common import TimingStats
from benchmarks.latency_inprocess import _engine_rows, _skip, benchmark_onnxruntime, benchmark_pytorch
from benchmarks.latency_plan import (
    PROJECT_ROOT,
    BenchmarkPlan,
    Echo,
    FlopCache,
    flops_for,
    make_row,
    selected_entries,
)
from stars_edge.manifest import EngineEntry, Manifest
from stars_edge.modalities import Pattern

__all__ = [
    "SETTLE_SECONDS",
    "Worker",
    "_engine_rows",
    "benchmark_cpu_fair",
    "benchmark_onnxruntime",
    "benchmark_pytorch",
    "cpu_configs",
    "profile_config",
]

#: Pause between two workers' turns, so an idle thread pool that still spins does not overlap the next.
SETTLE_SECONDS = 0.05


class Worker:
    """One configuration loaded in its own process (see ``benchmarks.latency_worker``)."""

    def __init__(self, label: str, spec: dict[str, Any], timeout: float = 900.0) -> None:
        self.label = label
        self.spec = spec
        code = (
            "import sys; sys.path.insert(0, sys.argv[1]); from benchmarks.latency_worker import main; main()"
        )
        # The worker's stderr, shown when it dies; closed in close() (the worker outlives this call).
        self._log = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-c", code, str(PROJECT_ROOT), json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.timeout = timeout
        self.error: str | None = None
        self.device = ""
        hello = self._read()
        if "error" in hello:
            self.error = hello["error"]
        else:
            self.device = hello["ready"]

    def _read(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            code = self.process.wait()
            self._log.seek(0)
            last = [text for text in self._log.read().strip().splitlines() if text.strip()][-1:]
            return {"error": f"worker exited with code {code}" + (f": {last[0]}" if last else "")}
        reply: dict[str, Any] = json.loads(line)
        return reply

    def request(self, **request: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        return self._read()

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(BrokenPipeError, ValueError):
                self.request(cmd="quit")
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self._log.close()


def cpu_configs(
    manifest: Manifest, plan: BenchmarkPlan, pattern: Pattern
) -> list[tuple[str, dict[str, Any], dict[str, Any]]]:
    """``(label, worker spec, row fields)`` of every CPU configuration of ``pattern`` in this plan."""
    bands = {item["name"]: int(item["bands"]) for item in _any_entry(manifest, pattern).inputs}
    common = {"bands": bands, "tile": plan.tile, "threads": plan.threads, "seed": plan.seed}
    configs: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    entries = [e for e in selected_entries(manifest, plan, "onnxruntime") if e.pattern == pattern]
    for entry in entries:
        path = str(manifest.engine_path(entry))
        fields: dict[str, Any] = {"entry": entry, "precision": entry.precision}
        if "onnxruntime" in plan.backends:
            configs.append(
                (
                    f"{entry.describe()} (cpu)",
                    {**common, "kind": "onnxruntime", "path": path},
                    {**fields, "backend": "onnxruntime"},
                )
            )
        if "openvino" in plan.backends and entry.precision in ("fp32", "int8"):
            spec = {**common, "kind": "openvino", "path": path, "hint": "f32"}
            configs.append(
                (
                    f"{pattern} {entry.precision}/openvino (cpu)",
                    spec,
                    {**fields, "backend": "openvino", "variant": "f32"},
                )
            )
            if entry.precision == "fp32" and _has_bf16():
                configs.append(
                    (
                        f"{pattern} bf16/openvino (cpu)",
                        {**spec, "hint": "bf16"},
                        {**fields, "backend": "openvino", "precision": "bf16", "variant": "bf16"},
                    )
                )
    if plan.checkpoint is not None and (plan.precisions is None or "fp32" in plan.precisions):
        fp32 = next((e for e in entries if e.precision == "fp32"), None) or _any_entry(manifest, pattern)
        for mode in plan.torch_modes:
            spec = {
                **common,
                "kind": "pytorch",
                "checkpoint": str(plan.checkpoint),
                "pattern": pattern.name,
                "mode": mode,
            }
            fields = {"entry": fp32, "precision": "fp32", "backend": "pytorch", "variant": mode}
            configs.append((f"{pattern} fp32/pytorch {mode} (cpu)", spec, fields))
    return configs


def _any_entry(manifest: Manifest, pattern: Pattern) -> EngineEntry:
    return manifest.find(pattern)[0]


def _has_bf16() -> bool:
    """True when the CPU has native BF16 math (AVX512-BF16 or AMX): otherwise a BF16 row is emulation."""
    from benchmarks.common import cpu_flags

    return bool({"avx512_bf16", "amx_bf16"} & set(cpu_flags()))


def benchmark_cpu_fair(
    manifest: Manifest,
    plan: BenchmarkPlan,
    matmul_gflops: float | None,
    flops_cache: FlopCache,
    echo: Echo = print,
    skipped: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Every CPU configuration, one worker process each, repetitions interleaved per pattern."""
    patterns = [p for p in manifest.patterns if plan.patterns is None or p in plan.patterns]
    rows: list[dict[str, Any]] = []
    timing = plan.timing
    per_round = max(1, math.ceil(timing.min_runs / timing.rounds))
    seconds = timing.min_seconds / timing.rounds
    for pattern in patterns:
        configs = cpu_configs(manifest, plan, pattern)
        workers: list[tuple[Worker, dict[str, Any]]] = []
        for label, spec, fields in configs:
            echo(f"loading {label}")
            worker = Worker(label, spec)
            if worker.error is not None:
                _skip(skipped, f"{label}: {worker.error}", echo)
                worker.close()
                continue
            workers.append((worker, fields))
        try:
            for batch in plan.batches:
                samples: dict[int, list[float]] = {i: [] for i in range(len(workers))}
                failed: set[int] = set()
                for round_index in range(timing.rounds):
                    order = list(range(len(workers)))
                    shift = round_index % max(1, len(order))
                    for index in order[shift:] + order[:shift]:
                        if index in failed:
                            continue
                        reply = workers[index][0].request(
                            cmd="time",
                            batch=batch,
                            runs=per_round,
                            warmup=timing.warmup if round_index == 0 else 0,
                            seconds=seconds,
                        )
                        if "error" in reply:
                            failed.add(index)
                            _skip(skipped, f"{workers[index][0].label} batch {batch}: {reply['error']}", echo)
                        else:
                            samples[index] += reply["seconds"]
                        time.sleep(SETTLE_SECONDS)
                for index, (_worker, fields) in enumerate(workers):
                    if index in failed or not samples[index]:
                        continue
                    entry = fields["entry"]
                    rows.append(
                        make_row(
                            pattern=pattern,
                            precision=fields["precision"],
                            backend=fields["backend"],
                            device="cpu",
                            tile=plan.tile,
                            batch=batch,
                            threads=plan.threads,
                            stats=TimingStats.from_seconds(samples[index]),
                            flops_per_tile=flops_for(manifest, entry, plan.tile, flops_cache),
                            matmul_gflops=matmul_gflops,
                            engine=entry.path
                            if fields["backend"] != "pytorch"
                            else f"{fields['variant']}:{plan.checkpoint}",
                            gate=entry.gate if fields["backend"] != "pytorch" else None,
                            variant=fields.get("variant"),
                        )
                    )
        finally:
            for worker, _fields in workers:
                worker.close()
    return rows


def profile_config(
    manifest: Manifest, plan: BenchmarkPlan, pattern: Pattern, backend: str, precision: str, batch: int
) -> dict[str, float] | str:
    """Milliseconds per op type of one run of a configuration (ORT profiling / OpenVINO perf counts)."""
    for label, spec, fields in cpu_configs(manifest, plan, pattern):
        if fields["backend"] == backend and fields["precision"] == precision:
            worker = Worker(label, spec)
            try:
                if worker.error is not None:
                    return worker.error
                reply = worker.request(cmd="profile", batch=batch)
            finally:
                worker.close()
            return reply.get("ops") or reply.get("error", "no profile")
    return f"no {backend} {precision} configuration for {pattern}"
