"""End to end: ``runtime.Predictor`` streaming a synthetic scene, in a child process for its own peak RSS.

Scenes: ``full`` (every modality valid, one engine per tile), ``gaps`` (clouds and a missing SAR swath, so
tiles mix patterns per pixel), ``clouds`` (about 10 % cloud, flagged in the cloud mask) and ``s2like`` /
``s2like_clouds``: ``full`` / ``clouds`` stored the way Sentinel-2 products are, optical as uint16 digital
numbers with a 1e-4 scale, every raster DEFLATE-compressed with a predictor (horizontal differencing for
integers, floating-point for SAR and DSM) in 512 px internal tiles. Decoding then costs real CPU, which is
what the end-to-end target is about; GDAL decodes with ``GDAL_NUM_THREADS`` threads where the machine has
cores to spare (``--gdal-threads``). ``s2like`` also runs ``s2like_clouds`` at the largest size.

After each scene the same child measures its CPU floor and, up to ``--e2e-arrays-max-size``, the same scene
from in-memory arrays (``benchmarks.latency_floor``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.common import BenchmarkError, load_average, where_time_goes
from benchmarks.latency_floor import floor_timing, fraction_summary
from benchmarks.latency_plan import FULL_PATTERN, PROJECT_ROOT, BenchmarkPlan, Echo, timing_kwargs
from stars_edge.errors import StarsEdgeError
from stars_edge.io import write_json_atomic
from stars_edge.manifest import Manifest
from stars_edge.modalities import ALL_PATTERNS

#: Synthetic end-to-end scenes: ``full`` has every modality valid everywhere (one engine per tile); ``gaps``
#: has clouds (flagged in ``cloud_mask.tif``) and a missing SAR swath, so tiles mix patterns per pixel;
#: ``clouds`` has about 10 % cloud; the ``s2like`` kinds re-store another kind (``S2LIKE_SOURCES``).
E2E_SCENES: dict[str, dict[str, Any]] = {
    "full": {},
    "gaps": {"cloud_cover": 0.15, "sar_gap": 0.2},
    "clouds": {"cloud_cover": 0.10},
    "s2like": {},
    "s2like_clouds": {},
}
#: Sentinel-2-like scenes and the synthetic scene each one re-stores.
S2LIKE_SOURCES: dict[str, str] = {"s2like": "full", "s2like_clouds": "clouds"}
#: Scenes that also run a cloudy variant at the largest size (issue 21's targets need both).
CLOUDY_VARIANTS: dict[str, str] = {"s2like": "s2like_clouds"}
#: Sentinel-2 L2A stores reflectance as uint16 digital numbers: reflectance = DN * 1e-4.
S2_SCALE = 1e-4


def scene_paths(workdir: Path, size: int, seed: int, kind: str = "full") -> dict[str, Path]:
    """Write (once, cached in ``workdir``) a three-modality synthetic mosaic scene of ``size`` px.

    Returns the optical, SAR and DSM rasters, plus the cloud mask for scenes that have clouds.
    """
    from stars_edge.data.synthetic import write_mosaic_scene

    folder = workdir / (f"scene_{size}_seed{seed}" + ("" if kind == "full" else f"_{kind}"))
    done = folder / "complete.json"
    if done.is_file():
        return {k: Path(v) for k, v in json.loads(done.read_text()).items()}
    if kind in S2LIKE_SOURCES:
        paths = {
            m: store_sentinel2_like(p, folder / p.name, m)
            for m, p in scene_paths(workdir, size, seed, S2LIKE_SOURCES[kind]).items()
        }
        write_json_atomic(done, {k: str(v) for k, v in paths.items()})
        return paths
    written = write_mosaic_scene(folder, size=size, block=min(1024, size), seed=seed, **E2E_SCENES[kind])
    keys = ("optical", "sar", "dsm", "cloud_mask") if kind != "full" else ("optical", "sar", "dsm")
    paths = {k: Path(getattr(written, k)) for k in keys if getattr(written, k) is not None}
    write_json_atomic(done, {k: str(v) for k, v in paths.items()})
    return paths


def store_sentinel2_like(source: Path, target: Path, modality: str) -> Path:
    """Rewrite one raster as Sentinel-2 products are stored (see the module docstring), block by block; a
    cloud mask stays uint8 (DEFLATE, horizontal predictor), as a product's mask does."""
    import numpy as np
    import rasterio

    target.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(source) as src:
        profile = src.profile.copy()
        integer = modality == "optical"
        mask = modality == "cloud_mask"
        profile.update(
            driver="GTiff",
            tiled=True,
            blockxsize=512,
            blockysize=512,
            compress="deflate",
            predictor=2 if integer or mask else 3,
            zlevel=6,
            dtype="uint16" if integer else ("uint8" if mask else "float32"),
            nodata=0 if integer else src.nodata,
            BIGTIFF="IF_SAFER",
        )
        with rasterio.open(target, "w", **profile) as dst:
            if integer:
                dst.scales = (S2_SCALE,) * src.count
            for _, window in src.block_windows(1):
                data = src.read(window=window)
                if integer:
                    valid = np.isfinite(data) & (data != src.nodata if src.nodata is not None else True)
                    counts = np.clip(np.round(np.nan_to_num(data) / S2_SCALE), 1, 65535).astype(np.uint16)
                    data = np.where(valid, counts, 0).astype(np.uint16)
                dst.write(data, window=window)
    return target


def gdal_threads(setting: str, usable_cores: int) -> str:
    """``GDAL_NUM_THREADS`` for the child: ALL_CPUS where there are cores to spare, else 1 (``auto``)."""
    if setting != "auto":
        return setting
    return "ALL_CPUS" if usable_cores > 1 else "1"


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
    """Entry point of the child process: one ``predict_scene`` call, its timings and own peak RSS; then
    (``spec["floor"]``) the run's CPU floor and the arrays run (``benchmarks.latency_floor``)."""
    import resource

    spec = json.loads(spec_json)
    from runtime import Predictor

    def make_predictor() -> Predictor:
        # timing only: an engine the accuracy gate flagged is timed like the others (its verdict is in
        # the manifest and the engine rows), it is not what a user would ship
        return Predictor(
            spec["engines"],
            backend=spec["backend"],
            precision=spec["precision"],
            threads=spec["threads"],
            allow_flagged=True,
        )

    try:
        start = time.perf_counter()
        predictor = make_predictor()
        loaded = time.perf_counter()
        cpu = time.process_time()
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
            allow_out_of_range=bool(spec.get("allow_out_of_range", False)),
        )
        done = time.perf_counter()
        cpu_seconds = time.process_time() - cpu
        predictor.close()
        # the scene's own peak, before the floor's measurements load more engines and the arrays
        peak = _peak_rss_mib(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        if spec.get("scene_done_flag"):
            Path(spec["scene_done_flag"]).touch()
        result: dict[str, Any] = {
            "load_s": loaded - start,
            "predict_s": done - loaded,
            "cpu_s": cpu_seconds,
            "maxrss_mib": peak,
            "summary": summary.to_dict(),
        }
        if spec.get("floor"):
            from benchmarks.latency_floor import measure_floor, scene_files

            result.update(
                measure_floor(
                    make_predictor,
                    predictor.manifest,
                    result["summary"],
                    scene_files(spec),
                    spec,
                    done - loaded,
                )
            )
    except StarsEdgeError as exc:
        print("E2E_ERROR " + str(exc).replace("\n", " "), flush=True)
        return
    print("E2E_RESULT " + json.dumps(result, default=str), flush=True)


def _run_e2e_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``e2e_child_main`` in a fresh interpreter; sample its RSS from here as a cross-check."""
    import psutil

    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from benchmarks.latency_e2e import e2e_child_main; e2e_child_main(sys.argv[2])"
    )
    command = [sys.executable, "-c", code, str(PROJECT_ROOT), json.dumps(spec)]
    env = {**os.environ, "GDAL_NUM_THREADS": str(spec.get("gdal_threads", "1"))}
    started = time.perf_counter()
    with tempfile.TemporaryFile(mode="w+") as log:
        # stdout carries the result line; stderr (the runtime's progress bar, any traceback) goes to ours.
        child = subprocess.Popen(command, stdout=log, stderr=None, text=True, env=env)
        watched = psutil.Process(child.pid)
        sampled_peak = 0
        # sampled until the scene is done: the floor's measurements and the arrays run come after it
        scene_done = Path(spec["scene_done_flag"]) if spec.get("scene_done_flag") else None
        while child.poll() is None:
            if scene_done is None or not scene_done.exists():
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
    ``predict_arrays`` wall time on the scene loaded into memory). A scene with a cloudy variant
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
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    decoding = gdal_threads(plan.gdal_threads, usable)
    section: dict[str, Any] = {
        "precision": precision,
        "backend": backend,
        "gdal_num_threads": decoding,
        "tile": tile,
        "overlap": plan.e2e_overlap,
        "batch": plan.e2e_batch,
        "threads": plan.threads,
        "scene": plan.e2e_scene,
        "runs": [],
    }
    full = _engine_only_row(engine_rows, FULL_PATTERN.name, precision, tile, plan.e2e_batch, backend)
    section["engine_only_mpx_per_s"] = full["mpx_per_s"] if full else None
    section["engine_only_ms_per_tile"] = full["ms_per_tile"] if full else None
    if full is None:
        echo(
            f"note: no {backend} engine-only row for {FULL_PATTERN} {precision} at tile {tile}, batch "
            f"{plan.e2e_batch}; end-to-end/engine-only ratios need --tile/--batch to include those"
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
            "tile": tile,
            "overlap": plan.e2e_overlap,
            "batch": plan.e2e_batch,
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
            "mpx_per_s": megapixels / child["predict_s"],
            "peak_rss_mib": child["maxrss_mib"],
            "sampled_peak_rss_mib": child["sampled_peak_rss_mib"],
            "stages": summary["stage_seconds"],
            "load_average_1m": load_before,
            "load_average_1m_end": load_average(),
            "summary": summary,
        }
        if full is not None:
            run["fraction_of_engine_only"] = run["mpx_per_s"] / full["mpx_per_s"]
        per_pattern = {
            name: _engine_only_row(engine_rows, name, precision, tile, plan.e2e_batch, backend)
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
        if "floor" in child:
            run["engine_only"] = child["engine_only"]
            run["decode_once"] = child["decode_once"]
            run["floor"] = child["floor"]
            run["floor_fraction"] = child["floor"]["floor_fraction"]
        if "arrays" in child:
            run["arrays"] = child["arrays"]
            run["arrays_fraction"] = child["arrays"]["arrays_fraction"]
        elif not arrays:
            run["arrays_skipped"] = f"scene larger than --e2e-arrays-max-size {plan.e2e_arrays_max_size} px"
        section["runs"].append(run)
        for line in where_time_goes(run):
            echo(line)
    section["floor_fraction"] = fraction_summary(section["runs"], "floor_fraction")
    section["arrays_fraction"] = fraction_summary(section["runs"], "arrays_fraction")
    return section


def _resolved_backend(requested: str, manifest: Manifest, precision: str) -> str:
    """The backend the runtime will pick for a three-modality scene (so engine-only rows can be matched)."""
    from runtime.backends import resolve_backend_name

    return resolve_backend_name(requested, manifest, ALL_PATTERNS, precision)
