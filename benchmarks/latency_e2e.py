"""End to end: ``runtime.Predictor`` streaming a synthetic scene, in a child process for its own peak RSS.

Scenes (``benchmarks.latency_scenes``): ``full``, ``gaps``, ``clouds`` and the Sentinel-2-like ``s2like`` /
``s2like_clouds`` (compressed uint16 optical with a scale tag, so decoding costs real CPU). GDAL decodes with
``GDAL_NUM_THREADS`` threads where the machine has cores to spare (``--gdal-threads``). ``s2like`` also runs
``s2like_clouds`` at the largest size.

Each scene runs in a fresh child process (``benchmarks.latency_e2e_child``). After each scene the same child
measures its CPU floor and, up to ``--e2e-arrays-max-size``, the same scene from in-memory arrays
(``benchmarks.latency_floor``). This module plans the runs and compares them with the engine-only rows.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import load_average, where_time_goes
from benchmarks.latency_e2e_child import _peak_rss_mib, _run_e2e_child, e2e_child_main
from benchmarks.latency_engine_only import floor_timing
from benchmarks.latency_floor import fraction_summary
from benchmarks.latency_plan import FULL_PATTERN, BenchmarkPlan, Echo, timing_kwargs
from benchmarks.latency_scenes import (
    CLOUDY_VARIANTS,
    E2E_SCENES,
    S2_SCALE,
    S2LIKE_SOURCES,
    scene_paths,
    store_sentinel2_like,
)
from runtime.run_options import default_batch, default_streams
from stars_edge.manifest import Manifest
from stars_edge.modalities import ALL_PATTERNS

__all__ = [
    "CLOUDY_VARIANTS",
    "E2E_SCENES",
    "S2LIKE_SOURCES",
    "S2_SCALE",
    "_peak_rss_mib",
    "_run_e2e_child",
    "benchmark_e2e",
    "e2e_child_main",
    "gdal_threads",
    "scene_paths",
    "store_sentinel2_like",
]


def gdal_threads(setting: str, usable_cores: int) -> str:
    """``GDAL_NUM_THREADS`` for the child: ALL_CPUS where there are cores to spare, else 1 (``auto``)."""
    if setting != "auto":
        return setting
    return "ALL_CPUS" if usable_cores > 1 else "1"


def _engine_only_row(
    rows: Sequence[Mapping[str, Any]], pattern: str, precision: str, tile: int, batch: int, backend: str
) -> Mapping[str, Any] | None:
    """The CPU engine-only row matching an end-to-end run's backend, engine, tile and batch."""
    return next(
        (
            r
            for r in rows
            if r["pattern"] == pattern
            and r["precision"] == precision
            and r["backend"] == backend
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

    Comparisons: the raw ratio of scene Mpx/s to engine-only Mpx/s (overlapping tiles make the runtime
    compute some pixels twice, so this cannot reach 1 with overlap); the engine-busy fraction: the
    engine-only time of the tiles the runtime actually ran, divided by its wall time (1 = zero overhead);
    and, measured in the child (``benchmarks.latency_floor``), ``floor_fraction`` (the CPU floor: engine CPU
    plus decoding each block once, over the cores, / wall time) and ``arrays_fraction`` (engine-only time /
    ``predict_arrays`` wall time on the scene loaded into memory), each also for a second scene in the same
    process (``*_fraction_warm``: what a long-lived process gets). A scene with a cloudy variant
    (``CLOUDY_VARIANTS``) runs it too, at the largest size.
    """
    precision = plan.e2e_precision
    if precision == "auto":
        # The runtime needs an engine for every pattern a tile may fall into, in the one precision it runs.
        int8_everywhere = all(manifest.find(p, "int8", "onnxruntime") for p in ALL_PATTERNS)
        allowed = plan.precisions is None or "int8" in plan.precisions
        precision = "int8" if int8_everywhere and allowed else "fp32"
    tile = plan.e2e_tile or plan.tile
    backend = _resolved_backend(plan.e2e_backend, manifest, precision)
    batch = default_batch(backend) if plan.e2e_batch is None else plan.e2e_batch
    streams = default_streams(backend, plan.threads) if plan.e2e_streams is None else plan.e2e_streams
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    decoding = gdal_threads(plan.gdal_threads, usable)
    section: dict[str, Any] = {
        "precision": precision,
        "backend": backend,
        "gdal_num_threads": decoding,
        "tile": tile,
        "overlap": plan.e2e_overlap,
        "batch": batch,
        "batch_source": "the runtime's default" if plan.e2e_batch is None else "--e2e-batch",
        "streams": streams,
        "streams_source": "the runtime's default" if plan.e2e_streams is None else "--e2e-streams",
        "threads": plan.threads,
        "scene": plan.e2e_scene,
        "runs": [],
    }
    full = _engine_only_row(engine_rows, FULL_PATTERN.name, precision, tile, batch, backend)
    section["engine_only_mpx_per_s"] = full["mpx_per_s"] if full else None
    section["engine_only_ms_per_tile"] = full["ms_per_tile"] if full else None
    if full is None:
        echo(
            f"note: no {backend} engine-only row for {FULL_PATTERN} {precision} at tile {tile}, batch "
            f"{batch}; end-to-end/engine-only ratios need --tile/--batch to include those"
        )
    jobs = [(plan.e2e_scene, size) for size in plan.e2e_sizes]
    if plan.e2e_scene in CLOUDY_VARIANTS and plan.e2e_sizes:
        jobs.append((CLOUDY_VARIANTS[plan.e2e_scene], max(plan.e2e_sizes)))
    section["scenes"] = list(dict.fromkeys(scene for scene, _ in jobs))
    section["arrays_max_size"] = plan.e2e_arrays_max_size
    for scene, size in jobs:
        echo(
            f"end-to-end: {size}x{size} px {scene} scene ({precision}, tile {tile}, overlap "
            f"{plan.e2e_overlap}; load average {load_average()})"
        )
        paths = scene_paths(plan.workdir, size, plan.seed, scene)
        out_dir = plan.workdir / (f"e2e_{size}" if scene == plan.e2e_scene else f"e2e_{size}_{scene}")
        out_dir.mkdir(parents=True, exist_ok=True)
        arrays = 0 < size <= plan.e2e_arrays_max_size
        spec: dict[str, Any] = {
            "engines": str(manifest.root),
            "backend": backend,
            "gdal_threads": decoding,
            # the runtime applies the GeoTIFF scale tag (uint16 DN x 1e-4 -> reflectance), so the S2-like
            # scene's values are in the engines' range like the float scene's
            "allow_out_of_range": False,
            "precision": precision,
            "threads": plan.threads,
            "streams": streams,
            "tile": tile,
            "overlap": plan.e2e_overlap,
            "batch": batch,
            **{m: str(p) for m, p in paths.items()},
            "out": str(out_dir / "prediction.tif"),
            "pattern_map": str(out_dir / "pattern_map.tif"),
            "scene_done_flag": str(out_dir / "scene_done.flag"),
            "floor": True,
            "arrays": arrays,
            "timing": floor_timing(timing_kwargs(plan.timing)),
            "seed": plan.seed,
        }
        Path(spec["scene_done_flag"]).unlink(missing_ok=True)
        load_before = load_average()
        child = _run_e2e_child(spec)
        summary = child["summary"]
        megapixels = size * size / 1e6
        run: dict[str, Any] = {
            "scene": scene,
            "size": size,
            "megapixels": megapixels,
            "tiles": summary["tiles"],
            "engine_runs": summary["engine_runs"],
            "engine_pixels": summary.get("engine_pixels", {}),
            "load_s": child["load_s"],
            "predict_s": child["predict_s"],
            "cpu_s": child.get("cpu_s"),
            "predict_warm_s": child.get("warm_predict_s"),
            "cpu_warm_s": child.get("warm_cpu_s"),
            "mpx_per_s": megapixels / child["predict_s"],
            "peak_rss_mib": child["maxrss_mib"],
            "sampled_peak_rss_mib": child["sampled_peak_rss_mib"],
            "stages": summary["stage_seconds"],
            "stages_cpu": summary.get("stage_cpu_seconds") or {},
            "load_average_1m": load_before,
            "load_average_1m_end": load_average(),
            "summary": summary,
        }
        if full is not None:
            run["fraction_of_engine_only"] = run["mpx_per_s"] / full["mpx_per_s"]
        per_pattern = {
            name: _engine_only_row(engine_rows, name, precision, tile, batch, backend)
            for name in summary["engine_runs"]
        }
        if per_pattern and all(row is not None for row in per_pattern.values()):
            engine_seconds = sum(
                count * row["ms_per_tile"] / 1e3
                for count, row in zip(summary["engine_runs"].values(), per_pattern.values(), strict=True)
                if row is not None
            )
            _engine_time(run, engine_seconds, "engine rows x runs (a window counted as a whole tile)")
        if "floor" in child:
            run["engine_only"] = child["engine_only"]
            run["decode_once"] = child["decode_once"]
            run["floor"] = child["floor"]
            run["floor_fraction"] = child["floor"]["floor_fraction"]
            if "floor_warm" in child:
                run["floor_warm"] = child["floor_warm"]
                run["floor_fraction_warm"] = child["floor_warm"]["floor_fraction"]
            if child["engine_only"].get("wall_seconds"):
                _engine_time(
                    run, child["engine_only"]["wall_seconds"], "the run's engine calls, per input shape"
                )
        if "arrays" in child:
            run["arrays"] = child["arrays"]
            run["arrays_fraction"] = child["arrays"]["arrays_fraction"]
            run["arrays_fraction_warm"] = child["arrays"]["arrays_fraction_warm"]
        elif not arrays:
            run["arrays_skipped"] = f"scene larger than --e2e-arrays-max-size {plan.e2e_arrays_max_size} px"
        section["runs"].append(run)
        for line in where_time_goes(run):
            echo(line)
    section["floor_fraction"] = fraction_summary(section["runs"], "floor_fraction")
    section["arrays_fraction"] = fraction_summary(section["runs"], "arrays_fraction")
    # a long-lived process's second scene, beside the first scene's fractions the targets are on
    section["floor_fraction_warm"] = fraction_summary(section["runs"], "floor_fraction_warm")
    section["arrays_fraction_warm"] = fraction_summary(section["runs"], "arrays_fraction_warm")
    return section


def _resolved_backend(requested: str, manifest: Manifest, precision: str) -> str:
    """The backend the runtime will pick for a three-modality scene (so engine-only rows can be matched)."""
    from runtime.backends import resolve_backend_name

    return resolve_backend_name(requested, manifest, ALL_PATTERNS, precision)


def _engine_time(run: dict[str, Any], engine_seconds: float, source: str) -> None:
    """Record how long the engines alone take for ``run``'s engine calls, and what that is against the run's
    wall time and inference stage (> 1 when calls inside the pipeline run slower than alone)."""
    run["engine_seconds"] = engine_seconds
    run["engine_seconds_source"] = source
    run["engine_busy_fraction"] = engine_seconds / run["predict_s"]
    inference = run["stages"].get("inference")
    if inference and engine_seconds > 0:
        run["inference_stage_vs_engine_only"] = inference / engine_seconds
