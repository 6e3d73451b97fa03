"""Latency, throughput and memory of the engines, side by side with PyTorch eager and the machine's peak.

    python benchmarks/latency.py --engines DIR [--checkpoint C] [--tile 512] [--batch 1,4] [--threads N]
                                 [--json OUT.json] [--quick] [--e2e-size 8192]

For every pattern x precision x backend in the manifest that can run here: warm-up, then the median and p90
of many runs, ms per tile, tiles/s, Mpx/s and achieved GFLOP/s as a fraction of the machine's measured sgemm
rate at the same thread count. Beside them, in the same run: PyTorch eager on the same checkpoint
(``--checkpoint``), and the end-to-end streaming runtime (``runtime.Predictor.predict_scene``) on synthetic
three-modality scenes of two sizes, in child processes so their peak RSS is their own. A GPU section times
TensorRT engines (and CUDA providers) where a GPU is present, and says why not where it is not. Writes JSON
plus a Markdown table beside it, and prints every target with its measured value and PASS/MISS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/latency.py`: make `benchmarks.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from benchmarks.common import (
    BenchmarkError,
    FlopCount,
    TimingStats,
    count_flops,
    e2e_lines,
    engine_table,
    fmt,
    gpu_lines,
    machine_info,
    measure_matmul_gflops,
    skipped_lines,
    targets_table,
    throughput,
    time_callable,
    verdict,
)
from stars_edge.errors import StarsEdgeError
from stars_edge.io import write_json_atomic, write_text_atomic
from stars_edge.manifest import EngineEntry, Manifest, load_manifest
from stars_edge.modalities import ALL_PATTERNS, Pattern

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
RESULT_SCHEMA = "stars-edge/latency/1"
FULL_PATTERN = ALL_PATTERNS[0]

#: Targets from the benchmark issue; each is evaluated on numbers measured in the same run.
TARGET_ORT_VS_EAGER = 1.5
TARGET_INT8_VS_FP32 = 2.0
TARGET_GFLOPS_FRACTION = 0.70
TARGET_EDGE_INT8_MPX = 3.0
TARGET_E2E_FRACTION = 0.85
TARGET_RSS_GROWTH = 0.10

Echo = Callable[[str], None]
#: FLOP counts per (pattern, precision, tile), shared by every backend timed in one run.
FlopCache = dict[tuple[str, str, int], FlopCount | None]


@dataclass(frozen=True)
class TimingPlan:
    """How long each configuration is measured: warm-up, then >= ``min_runs`` runs and >= ``min_seconds``."""

    warmup: int = 3
    min_runs: int = 10
    max_runs: int = 100
    min_seconds: float = 2.0

    @classmethod
    def quick(cls) -> TimingPlan:
        return cls(warmup=1, min_runs=3, max_runs=5, min_seconds=0.0)


@dataclass(frozen=True)
class BenchmarkPlan:
    """Everything one benchmark run measures; built from the command line by ``parse_plan``."""

    engines: Path
    checkpoint: Path | None = None
    tile: int = 512
    batches: tuple[int, ...] = (1, 4)
    threads: int = 2
    json_path: Path | None = None
    quick: bool = False
    e2e_sizes: tuple[int, ...] = (4096, 8192)
    e2e_tile: int | None = None
    e2e_overlap: int = 64
    e2e_batch: int = 1
    e2e_scene: str = "full"
    e2e_precision: str = "auto"
    workdir: Path = Path(tempfile.gettempdir()) / "stars_edge_bench"
    patterns: tuple[Pattern, ...] | None = None
    precisions: tuple[str, ...] | None = None
    matmul_size: int = 2048
    timing: TimingPlan = field(default_factory=TimingPlan)
    seed: int = 0


# --------------------------------------------------------------------------------------------------------
# Engine-only timing
# --------------------------------------------------------------------------------------------------------


def make_inputs(
    manifest: Manifest, pattern: Pattern, batch: int, tile: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Normalised-scale random inputs ``{modality: float32 (batch, bands, tile, tile)}`` for one pattern."""
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal((batch, manifest.modalities[name].bands, tile, tile), dtype=np.float32)
        for name in pattern
    }


def _flops_for(manifest: Manifest, entry: EngineEntry, tile: int, cache: FlopCache) -> FlopCount | None:
    """FLOPs of one tile through ``entry``: its own ONNX, or its pattern's ONNX for TensorRT engines.

    None when no graph can be counted (rows then carry no GFLOP/s rather than a wrong one).
    """
    key = (entry.pattern.name, entry.precision, tile)
    if key in cache:
        return cache[key]
    candidates = [manifest.engine_path(entry)] if entry.path.endswith(".onnx") else []
    candidates += [
        manifest.engine_path(e)
        for e in manifest.find(entry.pattern, backend="onnxruntime")
        if e.path.endswith(".onnx") and e.precision in (entry.precision, "fp32")
    ]
    count: FlopCount | None = None
    shapes = {item["name"]: [1, item["bands"], tile, tile] for item in entry.inputs}
    for path in candidates:
        try:
            count = count_flops(path, shapes)
        except Exception:  # an unreadable or unusual graph: try the next candidate, else FLOPs are unknown
            continue
        break
    cache[key] = count
    return count


def _row(
    *,
    pattern: Pattern,
    precision: str,
    backend: str,
    device: str,
    tile: int,
    batch: int,
    threads: int | None,
    stats: TimingStats,
    flops_per_tile: FlopCount | None,
    matmul_gflops: float | None,
    engine: str,
    gate: str | None = None,
) -> dict[str, Any]:
    """One result row: timing per call (one batch), per-tile throughput, achieved compute rate."""
    rates = throughput(stats.median_ms, batch, tile)
    gflops_per_call = flops_per_tile.flops * batch / 1e9 if flops_per_tile is not None else None
    achieved = gflops_per_call / (stats.median_ms / 1e3) if gflops_per_call is not None else None
    return {
        "pattern": pattern.name,
        "precision": precision,
        "backend": backend,
        "device": device,
        "engine": engine,
        "gate": gate,
        "tile": tile,
        "batch": batch,
        "threads": threads,
        "runs": stats.runs,
        "ms_median": stats.median_ms,
        "ms_p90": stats.p90_ms,
        "ms_mean": stats.mean_ms,
        "ms_min": stats.min_ms,
        "ms_stdev": stats.stdev_ms,
        **rates,
        "gflop_per_tile": flops_per_tile.flops / 1e9 if flops_per_tile is not None else None,
        "flops_complete": flops_per_tile.complete if flops_per_tile is not None else None,
        "achieved_gflops": achieved,
        "gflops_fraction": achieved / matmul_gflops if achieved is not None and matmul_gflops else None,
    }


def _selected_entries(manifest: Manifest, plan: BenchmarkPlan, backend: str) -> list[EngineEntry]:
    return [
        e
        for e in manifest.engines
        if e.backend == backend
        and (plan.patterns is None or e.pattern in plan.patterns)
        and (plan.precisions is None or e.precision in plan.precisions)
    ]


def benchmark_onnxruntime(
    manifest: Manifest,
    plan: BenchmarkPlan,
    matmul_gflops: float | None,
    flops_cache: FlopCache,
    echo: Echo = print,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    device: str = "cpu",
    skipped: list[str] | None = None,
) -> list[dict[str, Any]]:
    """Time every ONNX Runtime engine of the manifest through the runtime's own backend class.

    An engine that cannot load or run is recorded in ``skipped`` with the reason and the others go on.
    """
    from tqdm import tqdm

    from runtime.backends import OnnxRuntimeBackend

    entries = _selected_entries(manifest, plan, "onnxruntime")
    rows: list[dict[str, Any]] = []
    progress = tqdm(total=len(entries) * len(plan.batches), desc=f"onnxruntime {device}", unit="config")
    for entry in entries:
        try:
            backend = OnnxRuntimeBackend(
                manifest.engine_path(entry), threads=plan.threads, providers=providers
            )
        except StarsEdgeError as exc:
            _skip(skipped, f"{entry.describe()} ({device}): {exc}", echo)
            progress.update(len(plan.batches))
            continue
        try:
            rows += _engine_rows(
                backend,
                manifest,
                entry,
                plan,
                flops_cache,
                backend_name="onnxruntime",
                device=device,
                tile=plan.tile,
                threads=plan.threads,
                matmul_gflops=matmul_gflops if device == "cpu" else None,
                echo=echo,
                skipped=skipped,
                on_batch=lambda: progress.update(1),
            )
        finally:
            backend.close()
    progress.close()
    return rows


def _engine_rows(
    backend: Any,
    manifest: Manifest,
    entry: EngineEntry,
    plan: BenchmarkPlan,
    flops_cache: FlopCache,
    *,
    backend_name: str,
    device: str,
    tile: int,
    threads: int | None,
    matmul_gflops: float | None,
    echo: Echo,
    skipped: list[str] | None,
    on_batch: Callable[[], None] | None = None,
) -> list[dict[str, Any]]:
    """Time one loaded engine at every batch size of the plan; a failing batch is skipped with its reason."""
    flops = _flops_for(manifest, entry, tile, flops_cache)
    rows: list[dict[str, Any]] = []
    for batch in plan.batches:
        inputs = make_inputs(manifest, entry.pattern, batch, tile, plan.seed)
        if on_batch is not None:
            on_batch()
        try:
            stats = _time_backend(backend, inputs, plan.timing)
        except StarsEdgeError as exc:
            _skip(skipped, f"{entry.describe()} ({device}) batch {batch}: {exc}", echo)
            continue
        rows.append(
            _row(
                pattern=entry.pattern,
                precision=entry.precision,
                backend=backend_name,
                device=device,
                tile=tile,
                batch=batch,
                threads=threads,
                stats=stats,
                flops_per_tile=flops,
                matmul_gflops=matmul_gflops,
                engine=entry.path,
                gate=entry.gate,
            )
        )
    return rows


def _skip(skipped: list[str] | None, reason: str, echo: Echo) -> None:
    echo(f"skipped {reason}")
    if skipped is not None:
        skipped.append(reason)


def _time_backend(backend: Any, inputs: Mapping[str, np.ndarray], timing: TimingPlan) -> TimingStats:
    """Time ``backend.run(inputs)`` under ``timing`` (runtime backends return when results are ready)."""
    return time_callable(lambda: backend.run(inputs), **_timing_kwargs(timing))


def _timing_kwargs(timing: TimingPlan) -> dict[str, Any]:
    return {
        "warmup": timing.warmup,
        "min_runs": timing.min_runs,
        "max_runs": timing.max_runs,
        "min_seconds": timing.min_seconds,
    }


# --------------------------------------------------------------------------------------------------------
# PyTorch eager on the same checkpoint
# --------------------------------------------------------------------------------------------------------


def benchmark_pytorch(
    module_for: Callable[[Pattern], Any],
    manifest: Manifest,
    patterns: Sequence[Pattern],
    plan: BenchmarkPlan,
    matmul_gflops: float | None,
    flops_cache: FlopCache,
    device: str = "cpu",
) -> list[dict[str, Any]]:
    """Time ``module_for(pattern)`` (a torch module taking the pattern's inputs positionally) in eager mode.

    Same inputs, tile, batches and thread count as the engines; ``torch.inference_mode``. On CUDA the
    timing is closed by a device synchronisation so kernels are timed to completion.
    """
    import torch
    from tqdm import tqdm

    torch.set_num_threads(plan.threads)
    rows: list[dict[str, Any]] = []
    progress = tqdm(total=len(patterns) * len(plan.batches), desc=f"pytorch {device}", unit="config")
    synchronize = torch.cuda.synchronize if device == "cuda" else None
    for pattern in patterns:
        module = module_for(pattern).eval().to(device)
        fp32 = manifest.find(pattern, "fp32")
        flops = _flops_for(manifest, fp32[0], plan.tile, flops_cache) if fp32 else None
        for batch in plan.batches:
            arrays = make_inputs(manifest, pattern, batch, plan.tile, plan.seed)
            tensors = [torch.from_numpy(arrays[name]).to(device) for name in pattern]

            def forward(tensors: list[Any] = tensors, module: Any = module) -> None:
                with torch.inference_mode():
                    module(*tensors)

            stats = time_callable(forward, synchronize=synchronize, **_timing_kwargs(plan.timing))
            rows.append(
                _row(
                    pattern=pattern,
                    precision="fp32",
                    backend="pytorch",
                    device=device,
                    tile=plan.tile,
                    batch=batch,
                    threads=plan.threads,
                    stats=stats,
                    flops_per_tile=flops,
                    matmul_gflops=matmul_gflops if device == "cpu" else None,
                    engine=f"eager:{plan.checkpoint.name if plan.checkpoint else 'module'}",
                )
            )
            progress.update(1)
    progress.close()
    return rows


def checkpoint_modules(checkpoint: Path) -> Callable[[Pattern], Any]:
    """``pattern -> export_module(model, pattern)`` for the checkpoint's model (the engines' source)."""
    from stars_edge.checkpoint import load_checkpoint
    from stars_edge.models import export_module

    model, _meta = load_checkpoint(checkpoint)
    model.eval()
    return lambda pattern: export_module(model, pattern)


# --------------------------------------------------------------------------------------------------------
# GPU section
# --------------------------------------------------------------------------------------------------------


def gpu_info() -> dict[str, Any]:
    """Device name, driver and library availability; ``tensorrt_reason`` says why TensorRT cannot run."""
    info: dict[str, Any] = {"available": False, "devices": [], "tensorrt": None, "tensorrt_reason": None}
    try:
        completed = subprocess.run(
            [
                "nvidia-smi",
                "--query-gpu=name,driver_version,memory.total,compute_cap",
                "--format=csv,noheader",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    except (FileNotFoundError, subprocess.TimeoutExpired) as exc:
        info["reason"] = (
            f"no NVIDIA GPU ({'nvidia-smi not found' if isinstance(exc, FileNotFoundError) else exc})"
        )
    else:
        if completed.returncode == 0 and completed.stdout.strip():
            for line in completed.stdout.strip().splitlines():
                name, driver, memory, capability = (part.strip() for part in line.split(",", 3))
                info["devices"].append(
                    {"name": name, "driver": driver, "memory": memory, "compute_capability": capability}
                )
            info["available"] = True
        else:
            info["reason"] = f"no NVIDIA GPU (nvidia-smi: {completed.stderr.strip() or 'no devices'})"
    from export.tensorrt_build import tensorrt_status
    from runtime.backends import TensorRTBackend

    info["tensorrt"] = TensorRTBackend.version()
    if not TensorRTBackend.is_available():
        _target, reason = tensorrt_status()
        info["tensorrt_reason"] = reason or "the runtime's TensorRT backend cannot start (cuda-python or GPU)"
    try:
        import onnxruntime

        info["onnxruntime_providers"] = list(onnxruntime.get_available_providers())
    except ImportError:
        info["onnxruntime_providers"] = []
    return info


def benchmark_gpu(
    manifest: Manifest,
    plan: BenchmarkPlan,
    flops_cache: FlopCache,
    info: dict[str, Any],
    echo: Echo = print,
    skipped: list[str] | None = None,
) -> list[dict[str, Any]]:
    """TensorRT engines through the runtime's TensorRT backend, ONNX files on ONNX Runtime's CUDA provider,
    and PyTorch eager on CUDA; every call is synchronised (the backend waits on its stream, torch uses
    ``cuda.synchronize``), so times are completion times including host<->device copies for engines."""
    from runtime.backends import TensorRTBackend, gpu_compute_capability

    rows: list[dict[str, Any]] = []
    if info["tensorrt_reason"] is None:
        capability = gpu_compute_capability()
        version = TensorRTBackend.version()
        for entry in _selected_entries(manifest, plan, "tensorrt"):
            if entry.compute_capability != capability or entry.tensorrt_version != version:
                echo(
                    f"skip {entry.path}: built for sm{entry.compute_capability} / TensorRT "
                    f"{entry.tensorrt_version}, this is sm{capability} / TensorRT {version}"
                )
                continue
            # An engine's optimisation profile ends at the tile it was built for.
            tile = min(plan.tile, entry.tile_size)
            trt_backend = TensorRTBackend(manifest.engine_path(entry))
            try:
                rows += _engine_rows(
                    trt_backend,
                    manifest,
                    entry,
                    plan,
                    flops_cache,
                    backend_name="tensorrt",
                    device="cuda",
                    tile=tile,
                    threads=None,
                    matmul_gflops=None,
                    echo=echo,
                    skipped=skipped,
                )
            finally:
                trt_backend.close()
    else:
        echo(f"TensorRT not available: {info['tensorrt_reason']}")
    if "CUDAExecutionProvider" in info.get("onnxruntime_providers", []):
        rows += benchmark_onnxruntime(
            manifest, plan, None, flops_cache, echo, ("CUDAExecutionProvider",), "cuda", skipped
        )
    if plan.checkpoint is not None:
        import torch

        if torch.cuda.is_available():
            patterns = plan.patterns or manifest.patterns
            rows += benchmark_pytorch(
                checkpoint_modules(plan.checkpoint),
                manifest,
                patterns,
                plan,
                None,
                flops_cache,
                device="cuda",
            )
    return rows


# --------------------------------------------------------------------------------------------------------
# End to end: runtime.Predictor over a synthetic scene, in a child process for its own peak RSS
# --------------------------------------------------------------------------------------------------------


#: Synthetic end-to-end scenes: ``full`` has every modality valid everywhere (one engine per tile); ``gaps``
#: has clouds (flagged in ``cloud_mask.tif``) and a missing SAR swath, so tiles mix patterns per pixel.
E2E_SCENES: dict[str, dict[str, Any]] = {
    "full": {},
    "gaps": {"cloud_cover": 0.15, "sar_gap": 0.2},
}


def scene_paths(workdir: Path, size: int, seed: int, kind: str = "full") -> dict[str, Path]:
    """Write (once, cached in ``workdir``) a three-modality synthetic mosaic scene of ``size`` px.

    Returns the optical, SAR and DSM rasters, plus the cloud mask for scenes that have clouds.
    """
    from stars_edge.data.synthetic import write_mosaic_scene

    folder = workdir / (f"scene_{size}_seed{seed}" + ("" if kind == "full" else f"_{kind}"))
    done = folder / "complete.json"
    if done.is_file():
        return {k: Path(v) for k, v in json.loads(done.read_text()).items()}
    written = write_mosaic_scene(folder, size=size, block=min(1024, size), seed=seed, **E2E_SCENES[kind])
    keys = ("optical", "sar", "dsm", "cloud_mask") if kind != "full" else ("optical", "sar", "dsm")
    paths = {k: Path(getattr(written, k)) for k in keys if getattr(written, k) is not None}
    write_json_atomic(done, {k: str(v) for k, v in paths.items()})
    return paths


def _peak_rss_mib(ru_maxrss_mib: float) -> float:
    """This process's peak RSS: VmHWM of its own address space where Linux reports it.

    ``ru_maxrss`` is preserved across ``execve``, so a child started from a large parent inherits the
    parent's peak; VmHWM belongs to the new address space and is the child's own.
    """
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return ru_maxrss_mib


def e2e_child_main(spec_json: str) -> None:
    """Entry point of the child process: one ``predict_scene`` call, then its timings and own peak RSS."""
    import resource

    spec = json.loads(spec_json)
    from runtime import Predictor

    try:
        start = time.perf_counter()
        predictor = Predictor(
            spec["engines"], backend=spec["backend"], precision=spec["precision"], threads=spec["threads"]
        )
        loaded = time.perf_counter()
        summary = predictor.predict_scene(
            progress=True,
            batch=spec["batch"],
            optical=spec["optical"],
            sar=spec["sar"],
            dsm=spec["dsm"],
            cloud_mask=spec.get("cloud_mask"),
            out=spec["out"],
            pattern_map=spec["pattern_map"],
            tile=spec["tile"],
            overlap=spec["overlap"],
        )
        done = time.perf_counter()
    except StarsEdgeError as exc:
        print("E2E_ERROR " + str(exc).replace("\n", " "), flush=True)
        return
    result = {
        "load_s": loaded - start,
        "predict_s": done - loaded,
        "maxrss_mib": _peak_rss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "summary": summary.to_dict(),
    }
    print("E2E_RESULT " + json.dumps(result, default=str), flush=True)


def _run_e2e_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``e2e_child_main`` in a fresh interpreter; sample its RSS from here as a cross-check."""
    import psutil

    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from benchmarks.latency import e2e_child_main; e2e_child_main(sys.argv[2])"
    )
    command = [sys.executable, "-c", code, str(PROJECT_ROOT), json.dumps(spec)]
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        # stdout carries the result line; stderr (the runtime's progress bar, any traceback) goes to ours.
        child = subprocess.Popen(command, stdout=log, stderr=None, text=True)
        watched = psutil.Process(child.pid)
        sampled_peak = 0
        while child.poll() is None:
            try:
                sampled_peak = max(sampled_peak, watched.memory_info().rss)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        wall = time.perf_counter() - started
        log.seek(0)
        output = log.read()
    errors = [
        line.removeprefix("E2E_ERROR ") for line in output.splitlines() if line.startswith("E2E_ERROR ")
    ]
    if errors:
        raise BenchmarkError(f"end-to-end run on {spec['optical']} failed: {errors[-1]}")
    marker = [line for line in output.splitlines() if line.startswith("E2E_RESULT ")]
    if child.returncode != 0 or not marker:
        raise BenchmarkError(
            f"end-to-end child process exited with {child.returncode} and no result; its traceback is above"
        )
    result: dict[str, Any] = json.loads(marker[-1].removeprefix("E2E_RESULT "))
    result["child_wall_s"] = wall
    result["sampled_peak_rss_mib"] = sampled_peak / 2**20
    return result


def _engine_only_row(
    rows: Sequence[Mapping[str, Any]], pattern: str, precision: str, tile: int, batch: int
) -> Mapping[str, Any] | None:
    """The CPU ONNX Runtime engine-only row matching an end-to-end run's engine, tile and batch."""
    return next(
        (
            r
            for r in rows
            if r["pattern"] == pattern
            and r["precision"] == precision
            and r["backend"] == "onnxruntime"
            and r["device"] == "cpu"
            and r["tile"] == tile
            and r["batch"] == batch
        ),
        None,
    )


def benchmark_e2e(
    manifest: Manifest, plan: BenchmarkPlan, engine_rows: Sequence[Mapping[str, Any]], echo: Echo = print
) -> dict[str, Any]:
    """``predict_scene`` on synthetic scenes of each ``plan.e2e_sizes``: Mpx/s, stage times, peak RSS, and
    how the throughput compares with engine-only throughput of the same engines, tile and batch.

    Two comparisons: the raw ratio of scene Mpx/s to engine-only Mpx/s (overlapping tiles make the runtime
    compute some pixels twice, so this cannot reach 1 with overlap), and the engine-busy fraction: the
    engine-only time of the tiles the runtime actually ran, divided by its wall time (1 = zero overhead).
    """
    precision = plan.e2e_precision
    if precision == "auto":
        # The runtime needs an engine for every pattern a tile may fall into, in the one precision it runs.
        int8_everywhere = all(manifest.find(p, "int8", "onnxruntime") for p in ALL_PATTERNS)
        allowed = plan.precisions is None or "int8" in plan.precisions
        precision = "int8" if int8_everywhere and allowed else "fp32"
    tile = plan.e2e_tile or plan.tile
    section: dict[str, Any] = {
        "precision": precision,
        "backend": "onnxruntime",
        "tile": tile,
        "overlap": plan.e2e_overlap,
        "batch": plan.e2e_batch,
        "threads": plan.threads,
        "scene": plan.e2e_scene,
        "runs": [],
    }
    full = _engine_only_row(engine_rows, FULL_PATTERN.name, precision, tile, plan.e2e_batch)
    section["engine_only_mpx_per_s"] = full["mpx_per_s"] if full else None
    section["engine_only_ms_per_tile"] = full["ms_per_tile"] if full else None
    if full is None:
        echo(
            f"note: no engine-only row for {FULL_PATTERN} {precision} at tile {tile}, batch "
            f"{plan.e2e_batch}; end-to-end/engine-only ratios need --tile/--batch to include those"
        )
    for size in plan.e2e_sizes:
        echo(
            f"end-to-end: {size}x{size} px {plan.e2e_scene} scene ({precision}, tile {tile}, "
            f"overlap {plan.e2e_overlap})"
        )
        paths = scene_paths(plan.workdir, size, plan.seed, plan.e2e_scene)
        out_dir = plan.workdir / f"e2e_{size}"
        out_dir.mkdir(parents=True, exist_ok=True)
        spec = {
            "engines": str(manifest.root),
            "backend": "onnxruntime",
            "precision": precision,
            "threads": plan.threads,
            "tile": tile,
            "overlap": plan.e2e_overlap,
            "batch": plan.e2e_batch,
            **{m: str(p) for m, p in paths.items()},
            "out": str(out_dir / "prediction.tif"),
            "pattern_map": str(out_dir / "pattern_map.tif"),
        }
        child = _run_e2e_child(spec)
        summary = child["summary"]
        megapixels = size * size / 1e6
        run: dict[str, Any] = {
            "size": size,
            "megapixels": megapixels,
            "tiles": summary["tiles"],
            "engine_runs": summary["engine_runs"],
            "load_s": child["load_s"],
            "predict_s": child["predict_s"],
            "mpx_per_s": megapixels / child["predict_s"],
            "peak_rss_mib": child["maxrss_mib"],
            "sampled_peak_rss_mib": child["sampled_peak_rss_mib"],
            "stages": summary["stage_seconds"],
            "summary": summary,
        }
        if full is not None:
            run["fraction_of_engine_only"] = run["mpx_per_s"] / full["mpx_per_s"]
        per_pattern = {
            name: _engine_only_row(engine_rows, name, precision, tile, plan.e2e_batch)
            for name in summary["engine_runs"]
        }
        if per_pattern and all(row is not None for row in per_pattern.values()):
            engine_seconds = sum(
                count * row["ms_per_tile"] / 1e3
                for count, row in zip(summary["engine_runs"].values(), per_pattern.values(), strict=True)
                if row is not None
            )
            run["engine_seconds"] = engine_seconds
            run["engine_busy_fraction"] = engine_seconds / child["predict_s"]
            # > 1 when engine calls inside the pipeline run slower than alone (e.g. threads contend)
            inference = summary["stage_seconds"].get("inference")
            if inference and engine_seconds > 0:
                run["inference_stage_vs_engine_only"] = inference / engine_seconds
        section["runs"].append(run)
    return section


# --------------------------------------------------------------------------------------------------------
# Targets and rendering
# --------------------------------------------------------------------------------------------------------


def _find_row(
    rows: Sequence[Mapping[str, Any]],
    pattern: Pattern,
    precision: str,
    backend: str,
    batch: int | None = None,
) -> Mapping[str, Any] | None:
    """The fastest CPU row (in Mpx/s) for pattern/precision/backend, at ``batch`` when given."""
    matches = [
        r
        for r in rows
        if r["pattern"] == pattern.name
        and r["precision"] == precision
        and r["backend"] == backend
        and r["device"] == "cpu"
        and (batch is None or r["batch"] == batch)
    ]
    return max(matches, key=lambda r: r["mpx_per_s"]) if matches else None


def evaluate_targets(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value (None when not measured in this run) and PASS / MISS / N/A."""
    rows = result["rows"]
    batch = min((r["batch"] for r in rows), default=1)
    ort32 = _find_row(rows, FULL_PATTERN, "fp32", "onnxruntime", batch)
    eager = _find_row(rows, FULL_PATTERN, "fp32", "pytorch", batch)
    ort8 = _find_row(rows, FULL_PATTERN, "int8", "onnxruntime", batch)
    ort32_best = _find_row(rows, FULL_PATTERN, "fp32", "onnxruntime")
    ort8_best = _find_row(rows, FULL_PATTERN, "int8", "onnxruntime")
    variant = result.get("model", {}).get("variant", "?")
    targets: list[dict[str, Any]] = []

    def add(
        name: str, value: float | None, threshold: float, unit: str, detail: str, higher: bool = True
    ) -> None:
        targets.append(
            {
                "target": name,
                "threshold": threshold,
                "measured": value,
                "unit": unit,
                "verdict": verdict(value, threshold, higher),
                "detail": detail,
            }
        )

    add(
        "ORT FP32 >= 1.5x PyTorch eager",
        eager["ms_median"] / ort32["ms_median"] if ort32 and eager else None,
        TARGET_ORT_VS_EAGER,
        "x",
        f"{FULL_PATTERN} batch {batch}, eager/ORT median latency"
        + ("" if eager else " (no --checkpoint: eager not measured)"),
    )
    add(
        "INT8 >= 2x ORT FP32",
        ort32["ms_median"] / ort8["ms_median"] if ort32 and ort8 else None,
        TARGET_INT8_VS_FP32,
        "x",
        f"{FULL_PATTERN} batch {batch}, FP32/INT8 median latency on ONNX Runtime",
    )
    add(
        "FP32 achieved GFLOP/s >= 70 % of matmul rate",
        ort32_best["gflops_fraction"] if ort32_best else None,
        TARGET_GFLOPS_FRACTION,
        "fraction",
        f"{FULL_PATTERN}, best batch ({ort32_best['batch'] if ort32_best else '-'}), ONNX Runtime FP32 vs "
        f"{result['machine'].get('matmul', {}).get('gflops', float('nan')):.1f} GFLOP/s sgemm",
    )
    edge_detail = f"model variant {variant!r}"
    if ort8_best is None:
        edge_detail += ", no full-pattern int8 engine measured"
    else:
        edge_detail += f", best batch {ort8_best['batch']}"
        if variant != "edge":
            edge_detail += f" (the target is for the edge variant; here {ort8_best['mpx_per_s']:.2f} Mpx/s)"
    add(
        "edge model full pattern INT8 >= 3 Mpx/s",
        ort8_best["mpx_per_s"] if ort8_best and variant == "edge" else None,
        TARGET_EDGE_INT8_MPX,
        "Mpx/s",
        edge_detail,
    )
    e2e = result.get("e2e") or {}
    runs = e2e.get("runs", [])
    largest = max(runs, key=lambda r: r["size"]) if runs else None
    add(
        "end-to-end >= 85 % of engine-only",
        largest.get("engine_busy_fraction") if largest else None,
        TARGET_E2E_FRACTION,
        "fraction",
        (
            f"{largest['size']} px scene: engine-only time of its {sum(largest['engine_runs'].values())} "
            "engine runs / wall time; raw scene "
            f"Mpx/s ratio {largest.get('fraction_of_engine_only', float('nan')):.2f} "
            "(overlapping tiles re-compute pixels)"
        )
        if largest
        else "end-to-end not measured",
    )
    if len(runs) >= 2:
        small, large = min(runs, key=lambda r: r["size"]), max(runs, key=lambda r: r["size"])
        growth = large["peak_rss_mib"] / small["peak_rss_mib"] - 1.0
        detail = (
            f"peak RSS {large['size']} px {large['peak_rss_mib']:.0f} MiB vs {small['size']} px "
            f"{small['peak_rss_mib']:.0f} MiB"
        )
    else:
        growth, detail = None, "needs two end-to-end sizes"
    add(
        "peak RSS flat (largest vs smallest scene within 10 %)",
        growth,
        TARGET_RSS_GROWTH,
        "growth",
        detail,
        False,
    )
    return targets


def render_markdown(result: Mapping[str, Any]) -> str:
    """The result as Markdown: machine, engine table, end-to-end table, GPU section, targets."""
    machine = result["machine"]
    matmul = machine.get("matmul", {})
    lines = [
        f"# Latency benchmark ({result['created']})",
        "",
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, "
        f"{machine['threads']} threads, flags {', '.join(machine['cpu_flags']) or 'n/a'}; FP32 sgemm "
        f"{fmt(matmul.get('gflops'), 1)} GFLOP/s ({matmul.get('backend', '?')}, "
        f"n={matmul.get('size', '?')}); load average {machine.get('load_average_1m')} at start, "
        f"{machine.get('load_average_1m_end')} at end.",
        f"Model: `{result['model'].get('variant')}` / `{result['model'].get('method')}`, "
        f"engines `{result['engines']}`; tile {result['tile']} px. Times are per call (one batch); "
        f"medians of >= {result['timing']['min_runs']} runs after warm-up.",
        "",
        *engine_table(result["rows"]),
        *skipped_lines(result.get("skipped", [])),
        "",
        "## End to end",
        "",
        *e2e_lines(result.get("e2e")),
        "",
        "## GPU",
        "",
        *gpu_lines(result["gpu"]),
        "",
        "## Targets (measured in this run)",
        "",
        *targets_table(result["targets"]),
    ]
    return "\n".join(lines) + "\n"


def print_targets(targets: Sequence[Mapping[str, Any]], echo: Echo = print) -> None:
    for target in targets:
        measured = (
            "not measured" if target["measured"] is None else f"{target['measured']:.3f} {target['unit']}"
        )
        echo(f"[{target['verdict']:>4}] {target['target']}: {measured} ({target['detail']})")


# --------------------------------------------------------------------------------------------------------
# The whole run
# --------------------------------------------------------------------------------------------------------


def run_benchmark(plan: BenchmarkPlan, echo: Echo = print) -> dict[str, Any]:
    """Measure everything ``plan`` asks for and write the JSON and Markdown; returns the result dict."""
    manifest = load_manifest(plan.engines)
    echo(f"engines: {manifest.root} ({manifest.describe_engines()})")
    machine = machine_info(plan.threads)
    echo(f"measuring FP32 sgemm rate with {plan.threads} threads")
    rates = [measure_matmul_gflops(plan.threads, plan.matmul_size, 3 if plan.quick else 5, "numpy")]
    if machine["versions"].get("torch"):
        rates.append(measure_matmul_gflops(plan.threads, plan.matmul_size, 3 if plan.quick else 5, "torch"))
    best = max(rates, key=lambda r: r.gflops)
    machine["matmul"] = best.as_dict()
    machine["matmul_all"] = [r.as_dict() for r in rates]
    echo(", ".join(f"{r.backend} sgemm {r.gflops:.1f} GFLOP/s" for r in rates))

    flops_cache: FlopCache = {}
    skipped: list[str] = []
    rows = benchmark_onnxruntime(manifest, plan, best.gflops, flops_cache, echo, skipped=skipped)
    if plan.checkpoint is not None:
        patterns = [p for p in manifest.patterns if plan.patterns is None or p in plan.patterns]
        rows += benchmark_pytorch(
            checkpoint_modules(plan.checkpoint), manifest, patterns, plan, best.gflops, flops_cache
        )
    gpu = gpu_info()
    rows += benchmark_gpu(manifest, plan, flops_cache, gpu, echo, skipped)
    rows.sort(
        key=lambda r: (
            r["device"] != "cpu",
            ALL_PATTERNS.index(Pattern.parse(r["pattern"])),
            r["precision"],
            r["backend"],
            r["batch"],
        )
    )

    e2e: dict[str, Any]
    if plan.e2e_sizes:
        e2e = benchmark_e2e(manifest, plan, rows, echo)
    else:
        e2e = {"skipped": "disabled with --e2e-size 0", "runs": []}
    result: dict[str, Any] = {
        "schema": RESULT_SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "quick": plan.quick,
        "engines": str(manifest.root),
        "checkpoint": str(plan.checkpoint) if plan.checkpoint else None,
        "model": manifest.model.to_dict(),
        "tile": plan.tile,
        "batches": list(plan.batches),
        "timing": {
            "warmup": plan.timing.warmup,
            "min_runs": plan.timing.min_runs,
            "max_runs": plan.timing.max_runs,
            "min_seconds": plan.timing.min_seconds,
        },
        "machine": machine,
        "flops": {f"{k[0]}.{k[1]}.{k[2]}px": v.as_dict() for k, v in flops_cache.items() if v is not None},
        "rows": rows,
        "skipped": skipped,
        "e2e": e2e,
        "gpu": gpu,
    }
    if hasattr(os, "getloadavg"):  # the machine may be shared: say how busy it was when the run ended
        machine["load_average_1m_end"] = round(os.getloadavg()[0], 2)
    result["targets"] = evaluate_targets(result)
    json_path = plan.json_path or RESULTS_DIR / f"latency_{'gpu' if gpu['available'] else 'cpu'}.json"
    write_json_atomic(json_path, result)
    markdown = render_markdown(result)
    write_text_atomic(json_path.with_suffix(".md"), markdown)
    echo(markdown)
    print_targets(result["targets"], echo)
    echo(f"wrote {json_path} and {json_path.with_suffix('.md')}")
    return result


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError as exc:
        raise BenchmarkError(f"{option} takes comma-separated integers, got {text!r}") from exc
    if not values or any(v < 0 for v in values):
        raise BenchmarkError(f"{option} takes non-negative integers, got {text!r}")
    return values


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/latency.py",
        description="Engine latency/throughput per pattern x precision x backend, PyTorch eager, the "
        "machine's sgemm rate, and the end-to-end streaming runtime with its peak RSS.",
    )
    parser.add_argument("--engines", type=Path, required=True, help="Engine folder with manifest.json.")
    parser.add_argument(
        "--checkpoint", type=Path, help="Checkpoint the engines were built from; adds PyTorch eager rows."
    )
    parser.add_argument(
        "--tile", type=int, default=512, help="Tile size in px for engine timing (multiple of 32)."
    )
    parser.add_argument("--batch", default="1,4", help="Comma-separated batch sizes, e.g. 1,4.")
    parser.add_argument(
        "--threads", type=int, default=None, help="CPU threads for every backend (default: all usable cores)."
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="Output JSON (default benchmarks/results/latency_<cpu|gpu>.json); Markdown goes beside it.",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="Few runs, small sgemm and a small end-to-end scene (a smoke test, not a measurement).",
    )
    parser.add_argument(
        "--e2e-size",
        default=None,
        help="End-to-end scene size(s) in px, comma-separated; one value also runs half of it "
        "(default 8192, --quick 1024; 0 disables).",
    )
    parser.add_argument(
        "--e2e-tile", type=int, default=None, help="Tile size for the end-to-end run (default: --tile)."
    )
    parser.add_argument(
        "--e2e-batch", type=int, default=1, help="Tiles per engine call in the end-to-end run (default 1)."
    )
    parser.add_argument(
        "--e2e-scene",
        default="full",
        choices=tuple(E2E_SCENES),
        help="End-to-end scene: full (every modality valid) or gaps (clouds and a missing SAR swath, so "
        "tiles run several engines).",
    )
    parser.add_argument("--overlap", type=int, default=64, help="Tile overlap in px for the end-to-end run.")
    parser.add_argument(
        "--e2e-precision",
        default="auto",
        choices=("auto", "fp32", "fp16", "int8"),
        help="Engine precision for the end-to-end run (auto: int8 when every pattern has one, else fp32).",
    )
    parser.add_argument(
        "--patterns",
        default=None,
        help="Only these patterns (e.g. 'optical+sar+dsm,sar'); default all in the manifest.",
    )
    parser.add_argument(
        "--precision",
        default=None,
        help="Only these precisions, comma-separated (default: all in the manifest).",
    )
    parser.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="Where synthetic scenes and end-to-end outputs go (cached between runs).",
    )
    parser.add_argument("--seed", type=int, default=0, help="Seed for inputs and synthetic scenes.")
    return parser


def parse_plan(argv: Sequence[str] | None = None) -> BenchmarkPlan:
    """Turn command-line arguments into a validated ``BenchmarkPlan``."""
    from stars_edge.manifest import parse_precisions
    from stars_edge.modalities import parse_patterns

    args = build_parser().parse_args(argv)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = args.threads or usable
    if args.tile <= 0 or args.tile % 32:
        raise BenchmarkError(f"--tile {args.tile}: engines take multiples of 32 px, e.g. 256 or 512")
    batches = _int_list(args.batch, "--batch")
    if 0 in batches:
        raise BenchmarkError("--batch sizes must be at least 1")
    sizes: tuple[int, ...]
    if args.e2e_size is None:
        sizes = (512, 1024) if args.quick else (4096, 8192)
    else:
        given = _int_list(args.e2e_size, "--e2e-size")
        sizes = () if given == (0,) else (given if len(given) > 1 else (given[0] // 2, given[0]))
    plan = BenchmarkPlan(
        engines=args.engines,
        checkpoint=args.checkpoint,
        tile=args.tile,
        batches=batches,
        threads=int(threads or 1),
        json_path=args.json,
        quick=args.quick,
        e2e_sizes=tuple(sorted(set(sizes))),
        e2e_tile=args.e2e_tile,
        e2e_overlap=args.overlap,
        e2e_batch=args.e2e_batch,
        e2e_scene=args.e2e_scene,
        e2e_precision=args.e2e_precision,
        patterns=parse_patterns(args.patterns) if args.patterns else None,
        precisions=parse_precisions(args.precision) if args.precision else None,
        seed=args.seed,
    )
    if args.workdir is not None:
        plan = replace(plan, workdir=args.workdir)
    if args.quick:
        plan = replace(plan, timing=TimingPlan.quick(), matmul_size=1024)
    if args.checkpoint is not None and not args.checkpoint.is_file():
        raise BenchmarkError(
            f"--checkpoint {args.checkpoint} does not exist; pass the checkpoint the engines came from"
        )
    return plan


def main(argv: Sequence[str] | None = None) -> int:
    """Script entry point: domain errors become one line on stderr and exit code 1."""
    try:
        run_benchmark(parse_plan(argv))
    except StarsEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
