"""The plan of one latency run and the row every measurement becomes (shared by the latency modules)."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import FlopCount, TimingStats, count_flops, throughput
from stars_edge.manifest import EngineEntry, Manifest
from stars_edge.modalities import ALL_PATTERNS, Pattern

PROJECT_ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = PROJECT_ROOT / "benchmarks" / "results"
RESULT_SCHEMA = "stars-edge/latency/2"
FULL_PATTERN = ALL_PATTERNS[0]
#: A run that starts with a 1-minute load average above this many runnable tasks per usable core is flagged:
#: its ratios are not fair (other jobs share the cores).
LOADED_PER_CORE = 0.5
#: Largest end-to-end scene also run from in-memory arrays by default (about 30 bytes per pixel: 7 float32
#: bands, masks and the outputs; 0.5 GB at 4096 px, 2 GB at 8192 px).
ARRAYS_MAX_SIZE = 4096

Echo = Callable[[str], None]
#: FLOP counts per (pattern, precision, tile), shared by every backend timed in one run.
FlopCache = dict[tuple[str, str, int], FlopCount | None]


@dataclass(frozen=True)
class TimingPlan:
    """How long each configuration is measured: warm-up, then >= ``min_runs`` runs and >= ``min_seconds``,
    spread over ``rounds`` interleaved rounds (the CPU comparison runs every configuration once per round)."""

    warmup: int = 3
    min_runs: int = 10
    max_runs: int = 100
    min_seconds: float = 2.0
    rounds: int = 5

    @classmethod
    def quick(cls) -> TimingPlan:
        return cls(warmup=1, min_runs=3, max_runs=5, min_seconds=0.0, rounds=2)


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
    e2e_batch: int | None = None  # None: the runtime's default for the backend
    e2e_streams: int | None = None  # None: the runtime's default for the backend (OpenVINO streams)
    e2e_scene: str = "full"
    #: Largest end-to-end scene also run from in-memory arrays (its arrays must fit in memory).
    e2e_arrays_max_size: int = ARRAYS_MAX_SIZE
    e2e_precision: str = "auto"
    e2e_backend: str = "auto"
    gdal_threads: str = "auto"
    workdir: Path = Path(tempfile.gettempdir()) / "stars_edge_bench"
    patterns: tuple[Pattern, ...] | None = None
    precisions: tuple[str, ...] | None = None
    backends: tuple[str, ...] = ("onnxruntime", "openvino")
    torch_modes: tuple[str, ...] = ("eager", "channels_last", "compile")
    matmul_size: int = 2048
    timing: TimingPlan = field(default_factory=TimingPlan)
    seed: int = 0


def make_inputs(
    manifest: Manifest, pattern: Pattern, batch: int, tile: int, seed: int = 0
) -> dict[str, np.ndarray]:
    """Normalised-scale random inputs ``{modality: float32 (batch, bands, tile, tile)}`` for one pattern."""
    return shape_inputs(manifest, pattern, (batch, tile, tile), seed)


def shape_inputs(
    manifest: Manifest, pattern: Pattern, shape: tuple[int, int, int], seed: int = 0
) -> dict[str, np.ndarray]:
    """``make_inputs`` of any call shape ``(batch, height, width)`` (a window under a cloud, say)."""
    batch, height, width = shape
    rng = np.random.default_rng(seed)
    return {
        name: rng.standard_normal((batch, manifest.modalities[name].bands, height, width), dtype=np.float32)
        for name in pattern
    }


def flops_for(manifest: Manifest, entry: EngineEntry, tile: int, cache: FlopCache) -> FlopCount | None:
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


def make_row(
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
    variant: str | None = None,
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
        "variant": variant,
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


def selected_entries(manifest: Manifest, plan: BenchmarkPlan, backend: str) -> list[EngineEntry]:
    return [
        e
        for e in manifest.engines
        if e.backend == backend
        and (plan.patterns is None or e.pattern in plan.patterns)
        and (plan.precisions is None or e.precision in plan.precisions)
    ]


def checkpoint_modules(checkpoint: Path) -> Callable[[Pattern], Any]:
    """``pattern -> export_module(model, pattern)`` for the checkpoint's model (the engines' source)."""
    from stars_edge.checkpoint import load_checkpoint
    from stars_edge.models import export_module

    model, _meta = load_checkpoint(checkpoint)
    model.eval()
    return lambda pattern: export_module(model, pattern)


def timing_kwargs(timing: TimingPlan) -> dict[str, Any]:
    return {
        "warmup": timing.warmup,
        "min_runs": timing.min_runs,
        "max_runs": timing.max_runs,
        "min_seconds": timing.min_seconds,
    }
