"""Shared benchmark helpers: machine description, FP32 matmul rate, ONNX FLOP counting, timing statistics.

Every number a benchmark prints is measured in the same run on the same machine; these helpers make the
measurements comparable: one timing protocol (warm-up, then many runs, median and p90), one FLOP
convention (FLOPs = 2 x MACs of Conv/ConvTranspose/MatMul/Gemm and their quantized forms, counted from the
ONNX graph with shape inference at the benchmark's input size) and one reference rate (the machine's
measured sgemm GFLOP/s at the same thread count), so an engine's achieved GFLOP/s can be stated as a
fraction of what the machine can do.
The FLOP counter is torch-free (onnx only).
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stars_edge.errors import StarsEdgeError

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


class BenchmarkError(StarsEdgeError):
    """A benchmark cannot run as asked (bad option, missing input, a measurement that failed)."""


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
    }


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
# FLOP counting on ONNX graphs
# --------------------------------------------------------------------------------------------------------

#: op type -> (index of the data input, index of the weight input) for the ops whose MACs are counted.
_COUNTED_OPS: dict[str, tuple[int, int]] = {
    "Conv": (0, 1),
    "ConvInteger": (0, 1),
    "QLinearConv": (0, 3),
    "ConvTranspose": (0, 1),
    "MatMul": (0, 1),
    "MatMulInteger": (0, 1),
    "QLinearMatMul": (0, 3),
    "Gemm": (0, 1),
}


@dataclass
class FlopCount:
    """Multiply-accumulates of one ONNX graph at fixed input shapes; FLOPs = 2 x MACs.

    ``unresolved`` lists counted-op nodes whose shapes shape inference could not determine; when it is not
    empty the totals are a lower bound and ``complete`` is False.
    """

    macs_by_op: dict[str, int] = field(default_factory=dict)
    nodes_by_op: dict[str, int] = field(default_factory=dict)
    unresolved: list[str] = field(default_factory=list)
    input_shapes: dict[str, list[int]] = field(default_factory=dict)

    @property
    def macs(self) -> int:
        return sum(self.macs_by_op.values())

    @property
    def flops(self) -> int:
        return 2 * self.macs

    @property
    def complete(self) -> bool:
        return not self.unresolved

    def as_dict(self) -> dict[str, Any]:
        return {
            "macs": self.macs,
            "flops": self.flops,
            "gflops": self.flops / 1e9,
            "complete": self.complete,
            "macs_by_op": dict(self.macs_by_op),
            "nodes_by_op": dict(self.nodes_by_op),
            "unresolved": list(self.unresolved),
            "input_shapes": {k: list(v) for k, v in self.input_shapes.items()},
        }


def _fix_input_shapes(model: Any, input_shapes: Mapping[str, Sequence[int]]) -> Any:
    """A copy of ``model`` whose graph inputs have the given concrete shapes (dynamic dims resolved)."""
    import onnx

    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    initializer_names = {init.name for init in fixed.graph.initializer}
    graph_inputs = {inp.name: inp for inp in fixed.graph.input if inp.name not in initializer_names}
    unknown = sorted(set(input_shapes) - set(graph_inputs))
    if unknown:
        raise BenchmarkError(
            f"the ONNX graph has no input named {unknown[0]!r}; its inputs are {sorted(graph_inputs)}"
        )
    for name, shape in input_shapes.items():
        tensor_type = graph_inputs[name].type.tensor_type
        declared = len(tensor_type.shape.dim)
        if declared and declared != len(shape):
            raise BenchmarkError(
                f"input {name!r} has rank {declared}, a shape of rank {len(shape)} was given"
            )
        del tensor_type.shape.dim[:]
        for size in shape:
            tensor_type.shape.dim.add().dim_value = int(size)
    return fixed


def _known_shapes(model: Any) -> dict[str, list[int]]:
    """Every tensor name whose shape is fully known, from inputs, value_info, outputs and initializers."""
    shapes: dict[str, list[int]] = {}
    graph = model.graph
    for info in (*graph.input, *graph.value_info, *graph.output):
        if not info.type.HasField("tensor_type") or not info.type.tensor_type.HasField("shape"):
            continue
        dims = info.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[info.name] = [int(d.dim_value) for d in dims]
    for init in graph.initializer:
        shapes[init.name] = [int(d) for d in init.dims]
    for node in graph.node:
        if node.op_type == "Constant":
            for attribute in node.attribute:
                if attribute.name == "value":
                    shapes[node.output[0]] = [int(d) for d in attribute.t.dims]
    return shapes


def _node_macs(node: Any, shapes: Mapping[str, list[int]]) -> int | None:
    """MACs of one counted node, or None when a needed shape is unknown."""
    data_index, weight_index = _COUNTED_OPS[node.op_type]
    if len(node.input) <= max(data_index, weight_index):
        return None
    data = shapes.get(node.input[data_index])
    weight = shapes.get(node.input[weight_index])
    output = shapes.get(node.output[0])
    if node.op_type in ("Conv", "ConvInteger", "QLinearConv"):
        # Each output element: (Cin / group) * prod(kernel) MACs, and W is (Cout, Cin/group, k...).
        if output is None or weight is None:
            return None
        return math.prod(output) * math.prod(weight[1:])
    if node.op_type == "ConvTranspose":
        # Each input element feeds (Cout / group) * prod(kernel) outputs; W is (Cin, Cout/group, k...).
        if data is None or weight is None:
            return None
        return math.prod(data) * math.prod(weight[1:])
    if node.op_type == "Gemm":
        if output is None or data is None:
            return None
        trans_a = next((int(a.i) for a in node.attribute if a.name == "transA"), 0)
        inner = data[0] if trans_a else data[-1]
        return math.prod(output) * inner
    # MatMul family: numpy matmul semantics; the contracted dimension is A's last axis.
    if output is None or data is None or not data:
        return None
    return math.prod(output) * data[-1]


def _infer(model: Any, symbolic: bool) -> Any:
    import onnx

    if not symbolic:
        return onnx.shape_inference.infer_shapes(model, check_type=False, strict_mode=False, data_prop=True)
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    return SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=True)


def count_flops(model_or_path: Any, input_shapes: Mapping[str, Sequence[int]]) -> FlopCount:
    """Count MACs of Conv/ConvTranspose/MatMul/Gemm (and quantized forms) at the given input shapes.

    Shapes come from ONNX shape inference with data propagation; nodes it leaves unknown (e.g. a Resize
    whose size is computed at run time) are retried with ONNX Runtime's symbolic shape inference. A Q/DQ
    graph counts the same MACs as its float source: the Conv nodes are still there.
    """
    import onnx

    model = onnx.load(str(model_or_path)) if isinstance(model_or_path, str | os.PathLike) else model_or_path
    fixed = _fix_input_shapes(model, input_shapes)
    result = FlopCount(input_shapes={k: [int(v) for v in s] for k, s in input_shapes.items()})
    counted = [node for node in fixed.graph.node if node.op_type in _COUNTED_OPS]
    if any(node.op_type in ("If", "Loop", "Scan") for node in fixed.graph.node):
        result.unresolved.append("graph has control-flow subgraphs whose MACs are not counted")
    pending = counted
    for symbolic in (False, True):
        try:
            shapes = _known_shapes(_infer(fixed, symbolic))
        except Exception as exc:  # shape inference implementations raise a variety of errors
            if symbolic:
                break
            raise BenchmarkError(
                f"ONNX shape inference failed ({exc}); is the model a valid ONNX file?"
            ) from exc
        still_pending = []
        for node in pending:
            macs = _node_macs(node, shapes)
            if macs is None:
                still_pending.append(node)
                continue
            result.macs_by_op[node.op_type] = result.macs_by_op.get(node.op_type, 0) + macs
            result.nodes_by_op[node.op_type] = result.nodes_by_op.get(node.op_type, 0) + 1
        pending = still_pending
        if not pending:
            break
    result.unresolved.extend(f"{node.op_type} {node.name or node.output[0]}" for node in pending)
    return result


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


# --------------------------------------------------------------------------------------------------------
# Markdown tables shared by latency.py (its own .md) and report.py (REPORT.md)
# --------------------------------------------------------------------------------------------------------


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: fixed decimals for floats, empty for missing or non-finite values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def engine_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per timed configuration: latency per call, per tile, throughput and compute rate."""
    lines = [
        "| pattern | precision | backend | device | batch | ms median | ms p90 | ms / tile | tiles/s | Mpx/s "
        "| GFLOP/tile | GFLOP/s | of sgemm |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        fraction = row.get("gflops_fraction")
        cells = [
            f"`{row['pattern']}`",
            row["precision"],
            row["backend"] + (f" ({row['variant']})" if row.get("variant") else ""),
            row["device"],
            str(row["batch"]),
            fmt(row["ms_median"]),
            fmt(row["ms_p90"]),
            fmt(row["ms_per_tile"]),
            fmt(row["tiles_per_s"]),
            fmt(row["mpx_per_s"]),
            fmt(row.get("gflop_per_tile"), 3),
            fmt(row.get("achieved_gflops"), 1),
            "" if fraction is None else f"{100 * fraction:.1f} %",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def skipped_lines(skipped: Sequence[str]) -> list[str]:
    """Configurations that could not be timed, with the reason (empty when none were skipped)."""
    if not skipped:
        return []
    return ["", "Not timed:", "", *(f"- {reason}" for reason in skipped)]


def e2e_lines(e2e: Mapping[str, Any] | None) -> list[str]:
    """The end-to-end section: setup sentence and one line per scene size."""
    if not e2e or not e2e.get("runs"):
        return [f"Not measured: {(e2e or {}).get('skipped', 'no end-to-end section in this run')}."]
    lines = [
        f"`runtime.Predictor.predict_scene` on the `{e2e.get('scene', 'full')}` synthetic scene, "
        f"{e2e['precision']} on {e2e['backend']}, tile {e2e['tile']}, "
        f"GDAL_NUM_THREADS={e2e.get('gdal_num_threads', '1')}, "
        f"overlap {e2e['overlap']}, {e2e['threads']} threads, each scene size in its own child process; "
        f"engine-only {fmt(e2e.get('engine_only_mpx_per_s'))} Mpx/s "
        f"({fmt(e2e.get('engine_only_ms_per_tile'))} ms/tile, batch 1).",
        "",
        "| scene | px | tiles | load s | predict s | Mpx/s | of engine-only (raw) | engine busy "
        "| inference stage / engine-only | CPU floor fraction | arrays fraction | peak RSS MiB "
        "| sampled peak MiB | stages (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in e2e["runs"]:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in run.get("stages", {}).items())
        cells = [
            str(run.get("scene", e2e.get("scene", "full"))),
            str(run["size"]),
            str(run["tiles"]),
            fmt(run.get("load_s")),
            fmt(run["predict_s"]),
            fmt(run["mpx_per_s"]),
            fmt(run.get("fraction_of_engine_only")),
            fmt(run.get("engine_busy_fraction")),
            fmt(run.get("inference_stage_vs_engine_only")),
            fmt(run.get("floor_fraction"), 3),
            fmt(run.get("arrays_fraction"), 3),
            fmt(run["peak_rss_mib"], 0),
            fmt(run.get("sampled_peak_rss_mib"), 0),
            stages,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    details = [line for run in e2e["runs"] for line in where_time_goes(run)]
    if details:
        lines += [
            "",
            "Where the time goes (CPU floor, stages, engine-only vs the inference stage):",
            "",
            "```",
        ]
        lines += [line.removeprefix("  ") for line in details] + ["```"]
    return lines


#: Stages that run on the main thread (read and preprocess run in the reader thread, overlapping them).
MAIN_THREAD_STAGES: tuple[str, ...] = ("wait", "inference", "blend", "write")


def where_time_goes(run: Mapping[str, Any]) -> list[str]:
    """Lines that say where an end-to-end run's wall time went beyond its CPU floor and its engines."""
    floor = run.get("floor")
    engine = run.get("engine_only")
    if not floor or not engine:
        return []
    stages: Mapping[str, float] = run.get("stages") or {}
    wall = float(run["predict_s"])
    engine_cpu, decode_cpu = floor["engine_cpu_seconds"], floor["decode_cpu_seconds"]
    lines = [
        f"  {run.get('scene', '?')} {run['size']} px: wall {wall:.2f} s ({run['mpx_per_s']:.2f} Mpx/s); "
        f"CPU floor {floor['floor_seconds']:.2f} s = (engine-only CPU {engine_cpu:.2f} s + decode-once CPU "
        f"{decode_cpu:.2f} s) / {floor['cores']} cores -> floor_fraction {floor['floor_fraction']:.3f}",
    ]
    if run.get("cpu_s") is not None:
        needed = engine_cpu + decode_cpu
        lines.append(
            f"    the run used {run['cpu_s']:.2f} CPU-s, the floor's work {needed:.2f} CPU-s: "
            f"{run['cpu_s'] - needed:.2f} CPU-s more (decoding again, normalising, blending, writing, "
            "spinning threads)"
        )
    inference = stages.get("inference")
    main = sum(stages.get(s, 0.0) for s in MAIN_THREAD_STAGES)
    cells = ", ".join(f"{name} {seconds:.2f}" for name, seconds in stages.items())
    lines.append(f"    stages (s): {cells} (read and preprocess in the reader thread, overlapping the rest)")
    if inference is not None:
        lines.append(
            f"    inference stage {inference:.2f} s vs engine-only wall {engine['wall_seconds']:.2f} s: "
            f"{inference - engine['wall_seconds']:+.2f} s inside the pipeline (softmax, composing patterns, "
            "contention with the reader; engines load at their first call: "
            f"{sum(p['load_and_first_call_s'] for p in engine['per_pattern'].values()):.2f} s alone); main "
            f"thread outside its stages (start-up, range check, commit): {wall - main:.2f} s"
        )
    lines.append(f"    engine-only shapes: {engine['shapes']}")
    arrays = run.get("arrays")
    if arrays:
        differs = not arrays["pattern_pixels_match_file_run"]
        lines.append(
            f"    from arrays: predict_arrays {arrays['wall_seconds']:.2f} s ({arrays['cpu_seconds']:.2f} "
            f"CPU-s), engine-only {arrays['engine_wall_seconds']:.2f} s -> arrays_fraction "
            f"{arrays['arrays_fraction']:.3f}"
            + (" (WARNING: its pattern map differs from the file run's)" if differs else "")
        )
    elif run.get("arrays_skipped"):
        lines.append(f"    from arrays: not run ({run['arrays_skipped']})")
    return lines


def gpu_lines(gpu: Mapping[str, Any]) -> list[str]:
    """Which GPU and TensorRT ran, or why none did."""
    if gpu.get("available"):
        devices = "; ".join(
            f"{d['name']} (driver {d['driver']}, sm{d['compute_capability']}, {d['memory']})"
            for d in gpu["devices"]
        )
        lines = [f"{devices}; TensorRT {gpu.get('tensorrt') or 'absent'}."]
    else:
        lines = [f"No GPU in this run: {gpu.get('reason', 'not detected')}."]
    if gpu.get("tensorrt_reason"):
        lines.append(f"TensorRT not available: {gpu['tensorrt_reason']}.")
    return lines


def targets_table(targets: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each target with its measured value and verdict."""
    lines = ["| target | measured | verdict | how |", "| --- | ---: | --- | --- |"]
    for target in targets:
        measured = "" if target["measured"] is None else f"{target['measured']:.3f} {target['unit']}"
        lines.append(f"| {target['target']} | {measured} | **{target['verdict']}** | {target['detail']} |")
    return lines
