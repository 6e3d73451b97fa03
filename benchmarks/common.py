"""Shared benchmark helpers: paths, machine description, FP32 matmul rate, timing statistics, verdicts.

Every number a benchmark prints is measured in the same run on the same machine; these helpers make the
measurements comparable: one timing protocol (warm-up, then many runs, median and p90), one FLOP
convention (``benchmarks/flops.py``) and one reference rate (the machine's measured sgemm GFLOP/s at the
same thread count), so an engine's achieved GFLOP/s can be stated as a fraction of what the machine can do.

The helpers live in modules by responsibility, all importable from here as before:

- this module: ``BenchmarkError`` (``benchmarks/errors.py``), the benchmarks' paths, timing statistics,
  machine description, load average, matmul rate, throughput and PASS/MISS verdicts;
- ``benchmarks/flops.py``: FLOP counting on ONNX graphs (``count_flops``, ``FlopCount``);
- ``benchmarks/markdown.py``: the Markdown tables of a latency result (``engine_table``, ``e2e_lines``...).

Studies (``studies/``) import from here; nothing under ``benchmarks/`` imports from ``studies/``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.errors import BenchmarkError
from benchmarks.flops import FlopCount, count_flops
from benchmarks.markdown import (
    MAIN_THREAD_STAGES,
    e2e_lines,
    engine_table,
    fmt,
    gpu_lines,
    skipped_lines,
    targets_table,
    where_time_goes,
)

__all__ = [
    "BENCHMARKS_DIR",
    "MAIN_THREAD_STAGES",
    "PROJECT_ROOT",
    "RELEVANT_CPU_FLAGS",
    "RESULTS_DIR",
    "TRACKED_PACKAGES",
    "BenchmarkError",
    "FlopCount",
    "MatmulRate",
    "TimingStats",
    "count_flops",
    "cpu_flags",
    "cpu_model",
    "e2e_lines",
    "engine_table",
    "fmt",
    "gpu_lines",
    "is_loaded",
    "load_average",
    "machine_info",
    "measure_matmul_gflops",
    "package_versions",
    "skipped_lines",
    "targets_table",
    "throughput",
    "time_callable",
    "verdict",
    "where_time_goes",
]

#: This folder, the repository root, and the one folder every benchmark and study writes its results to
#: (``benchmarks/report.py`` renders them).
BENCHMARKS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"

#: Libraries whose versions go into every result file (missing ones are recorded as absent, not skipped).
TRACKED_PACKAGES: tuple[str, ...] = (
    "numpy",
    "onnx",
    "onnxruntime",
    "onnxruntime-gpu",
    "onnxslim",
    "torch",
    "tensorrt",
    "cuda-python",
    "rasterio",
    "stars-edge",
)

#: CPU feature flags that decide which kernels ONNX Runtime / oneDNN can use (VNNI makes INT8 pay off).
RELEVANT_CPU_FLAGS: tuple[str, ...] = (
    "avx2",
    "fma",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "avx_vnni_int8",
    "avx512_bf16",
    "avx512_fp16",
    "amx_tile",
    "amx_int8",
    "amx_bf16",
    "amx_fp16",
)


# --------------------------------------------------------------------------------------------------------
# Timing statistics
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimingStats:
    """Summary of repeated wall-clock measurements, in milliseconds.

    The median is the headline number (robust to the odd scheduler hiccup on a shared machine) and p90
    says how bad a typical slow run is; mean/stdev are kept to show the spread.
    """

    runs: int
    median_ms: float
    p90_ms: float
    mean_ms: float
    min_ms: float
    max_ms: float
    stdev_ms: float

    @classmethod
    def from_seconds(cls, samples: Sequence[float]) -> TimingStats:
        """Summarise per-run durations given in seconds."""
        if len(samples) == 0:
            raise BenchmarkError("no timing samples to summarise; run the measurement at least once")
        values = np.asarray(samples, dtype=np.float64) * 1e3
        if not np.all(np.isfinite(values)) or np.any(values < 0):
            raise BenchmarkError(f"timing samples must be finite and non-negative, got {list(samples)}")
        return cls(
            runs=int(values.size),
            median_ms=float(np.median(values)),
            p90_ms=float(np.percentile(values, 90)),
            mean_ms=float(values.mean()),
            min_ms=float(values.min()),
            max_ms=float(values.max()),
            stdev_ms=float(values.std(ddof=1)) if values.size > 1 else 0.0,
        )

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def time_callable(
    run: Callable[[], object],
    *,
    warmup: int = 3,
    min_runs: int = 10,
    max_runs: int = 200,
    min_seconds: float = 2.0,
    synchronize: Callable[[], None] | None = None,
) -> TimingStats:
    """Time ``run`` after ``warmup`` untimed calls: at least ``min_runs`` runs and ``min_seconds`` of work.

    Stops at ``max_runs``. ``synchronize`` (e.g. a CUDA stream sync) is called before each clock read so an
    asynchronous device call is timed to completion, not to its launch.
    """
    if warmup < 0 or min_runs < 1 or max_runs < min_runs or min_seconds < 0:
        raise BenchmarkError(
            f"invalid timing plan warmup={warmup} min_runs={min_runs} max_runs={max_runs} "
            f"min_seconds={min_seconds}; need warmup >= 0 and 1 <= min_runs <= max_runs"
        )
    sync = synchronize or (lambda: None)
    for _ in range(warmup):
        run()
    sync()
    samples: list[float] = []
    started = time.perf_counter()
    while len(samples) < max_runs and (
        len(samples) < min_runs or time.perf_counter() - started < min_seconds
    ):
        begin = time.perf_counter()
        run()
        sync()
        samples.append(time.perf_counter() - begin)
    return TimingStats.from_seconds(samples)


# --------------------------------------------------------------------------------------------------------
# Machine description and reference matmul rate
# --------------------------------------------------------------------------------------------------------


def package_versions(names: Sequence[str] = TRACKED_PACKAGES) -> dict[str, str | None]:
    """Installed distribution versions (None when absent), read from metadata without importing them."""
    versions: dict[str, str | None] = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, or platform's best guess elsewhere."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The subset of ``RELEVANT_CPU_FLAGS`` this CPU reports (Linux only; empty elsewhere)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        return []
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if line.lower().startswith("flags"):
            present = set(line.split(":", 1)[1].split())
            return [flag for flag in RELEVANT_CPU_FLAGS if flag in present]
    return []


def load_average() -> float | None:
    """The 1-minute load average (runnable tasks), or None where the OS does not report it."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def is_loaded(load: float | None, usable_cores: int, per_core: float) -> bool:
    """True when ``load`` exceeds ``per_core`` runnable tasks per usable core: timings are not fair."""
    return load is not None and load > per_core * max(1, usable_cores)


def scene_parser(description: str | None, workdir: Path) -> argparse.ArgumentParser:
    """The arguments every scene benchmark shares: engines, backend and precision, the latency benchmark's
    scene and size, tile and batch (the issue-21 setting: 512 px, 4), the scenes' cache and ``--json``."""
    formatter = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=description, formatter_class=formatter)
    parser.add_argument("--engines", type=Path, required=True, help="engine folder (build-engines)")
    parser.add_argument("--backend", default="openvino", help="openvino or onnxruntime (default openvino)")
    parser.add_argument("--precision", default="int8", help="int8, fp16 or fp32 (default int8)")
    parser.add_argument("--scene", default="s2like", help="a latency benchmark scene (default s2like)")
    parser.add_argument("--size", type=int, default=4096, help="scene size in px (default 4096)")
    parser.add_argument("--tile", type=int, default=512, help="tile size in px (default 512)")
    parser.add_argument("--batch", type=int, default=4, help="tiles per engine call (default 4)")
    parser.add_argument("--workdir", type=Path, default=workdir, help=f"scene cache (default {workdir})")
    parser.add_argument("--json", type=Path, help="write the result here")
    return parser


def scene_record(engines: Path, load_start: float | None, **fields: Any) -> dict[str, Any]:
    """The head of a scene benchmark's JSON: its command line, the engines, ``fields`` (what ran), and the
    machine with the 1-minute load average at the start and now (the benchmark's end)."""
    from runtime.cpus import usable_cores

    machine = {**machine_info(usable_cores()), "load_start": load_start, "load_end": load_average()}
    return {"command": " ".join(sys.argv), "engines": str(engines), **fields, "machine": machine}


def machine_info(threads: int) -> dict[str, Any]:
    """What ran the benchmark: CPU, cores, memory, the thread count used, library versions."""
    import psutil

    try:
        affinity = len(os.sched_getaffinity(0))
    except AttributeError:
        affinity = os.cpu_count() or 1
    return {
        "hostname": platform.node(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "cpu_model": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "usable_cores": affinity,
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "threads": int(threads),
        "load_average_1m": load_average(),
        "versions": package_versions(),
        "runtime_kernels": _runtime_kernels(),
    }


def _runtime_kernels() -> str:
    """The runtime's per-pixel kernels for this run (``STARS_EDGE_KERNELS``: numpy or numba)."""
    from runtime.kernels import kernels_choice

    return kernels_choice()


_THREAD_ENV_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")

_MATMUL_CHILD = r"""
import json, sys, time
size, repeats, backend, threads = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if backend == "torch":
    import torch
    torch.set_num_threads(threads)
    a = torch.randn(size, size, dtype=torch.float32)
    b = torch.randn(size, size, dtype=torch.float32)
    mm = lambda: torch.mm(a, b)
else:
    import numpy as np
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size), dtype=np.float32)
    b = rng.standard_normal((size, size), dtype=np.float32)
    mm = lambda: a @ b
mm()
best = float("inf")
for _ in range(repeats):
    start = time.perf_counter()
    mm()
    best = min(best, time.perf_counter() - start)
print(json.dumps({"seconds": best}))
"""


@dataclass(frozen=True)
class MatmulRate:
    """Measured square FP32 matrix-multiply rate: the reference for 'what this machine can do'."""

    backend: str
    size: int
    threads: int
    gflops: float
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def measure_matmul_gflops(
    threads: int, size: int = 2048, repeats: int = 5, backend: str = "numpy"
) -> MatmulRate:
    """Best-of-``repeats`` sgemm rate (2*n^3 FLOPs) with ``threads`` threads, measured in a child process.

    A child process is the reliable way to pin BLAS threads (OpenBLAS reads its thread count at load), and
    it keeps the benchmark's own process free of a second thread pool.
    """
    if backend not in ("numpy", "torch"):
        raise BenchmarkError(f"matmul backend {backend!r} is not one of numpy, torch")
    if threads < 1 or size < 16 or repeats < 1:
        raise BenchmarkError(f"invalid matmul plan threads={threads} size={size} repeats={repeats}")
    env = dict(os.environ)
    env.update({name: str(threads) for name in _THREAD_ENV_VARS})
    command = [sys.executable, "-c", _MATMUL_CHILD, str(size), str(repeats), backend, str(threads)]
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False, timeout=600)
    if completed.returncode != 0:
        tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
        raise BenchmarkError(f"{backend} matmul measurement failed: {tail[0]}")
    seconds = float(json.loads(completed.stdout.strip().splitlines()[-1])["seconds"])
    return MatmulRate(backend, size, threads, 2.0 * size**3 / seconds / 1e9, seconds)


# --------------------------------------------------------------------------------------------------------
# Throughput helpers
# --------------------------------------------------------------------------------------------------------


def throughput(ms_per_call: float, batch: int, tile: int) -> dict[str, float]:
    """Tiles/s, Mpx/s and ms per tile for one call that processes ``batch`` tiles of ``tile`` x ``tile``."""
    if ms_per_call <= 0:
        raise BenchmarkError(f"a call cannot take {ms_per_call} ms; the measurement is broken")
    seconds = ms_per_call / 1e3
    return {
        "ms_per_tile": ms_per_call / batch,
        "tiles_per_s": batch / seconds,
        "mpx_per_s": batch * tile * tile / seconds / 1e6,
    }


def verdict(value: float | None, threshold: float, higher_is_better: bool = True) -> str:
    """PASS / MISS for a measured value against its target; N/A when it was not measured."""
    if value is None or not math.isfinite(value):
        return "N/A"
    ok = value >= threshold if higher_is_better else value <= threshold
    return "PASS" if ok else "MISS"
