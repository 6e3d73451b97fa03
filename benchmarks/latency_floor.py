"""How close an end-to-end run comes to what the machine allows (issue 21): the CPU floor and the arrays run.

Both run inside the end-to-end child process (``benchmarks.latency_e2e.e2e_child_main``), after
``predict_scene`` has returned and its peak RSS was read:

- **Engine-only time of the runs the scene needed**: each engine call shape of the run timed alone
  (``benchmarks/latency_engine_only.py``).
- **Decoding every block once.** Every block window of every input raster (cloud mask included) is read once
  with rasterio into its stored dtype, from a freshly opened dataset (an empty block cache), and its process
  CPU time is taken: the least decompression any reader of these files must do.
- **CPU floor** = (engine-only CPU + decode-once CPU) / usable cores; ``floor_fraction`` = floor / the
  run's wall time. 1 means the run is as fast as its engines and its decoder allow on these cores.
- **Arrays run.** The scene's rasters are loaded into memory as the runtime sees them (physical values: the
  GeoTIFF scale/offset applied; validity from the files' masks and the cloud mask), then
  ``Predictor.predict_arrays`` alone is timed; ``arrays_fraction`` = engine-only wall time of the same engine
  runs / its wall time (nothing to decode: the on-board case). ``predict_arrays`` returns no summary, so the
  engine runs are the file run's; its pattern map is checked against the file run's pattern pixels.
- **Warm runs.** The file scene again in the same process (``floor_fraction_warm``) and ``predict_arrays``
  called again on its predictor (``arrays_fraction_warm``): what a long-lived process (``run-batch``
  workers, an on-board loop) gets from its second scene on, with the backend imported, the engines loaded
  and every call shape seen. Reported beside the fractions, which stay those of a process's first scene.
- **Rows run.** The same arrays handed over ``ROW_BLOCK`` rows at a time through ``Predictor.predict_rows``
  (the on-board streaming case): its wall time, the most input rows it held, and whether its maps are the
  arrays run's bytes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.latency_engine_only import engine_only
from runtime.cpus import usable_cores
from stars_edge.manifest import Manifest
from stars_edge.modalities import ALL_PATTERNS, MODALITIES

if TYPE_CHECKING:
    pass

#: GDAL block cache while decoding once: far more than one block window of every band (a fresh dataset
#: starts empty, so nothing is served from an earlier read).
DECODE_CACHE_BYTES = 256 * 2**20
#: Rows per block when the arrays run is repeated as a sensor's stream (``Predictor.predict_rows``).
ROW_BLOCK = 128


def decode_once(paths: Mapping[str, str | os.PathLike[str]]) -> dict[str, Any]:
    """Process CPU and wall seconds to read every block window of every raster once, in its stored dtype."""
    import rasterio

    rasters: dict[str, dict[str, Any]] = {}
    cpu_total = wall_total = 0.0
    with rasterio.Env(GDAL_CACHEMAX=DECODE_CACHE_BYTES):
        for name, path in paths.items():
            with rasterio.open(path) as dataset:
                windows = [window for _, window in dataset.block_windows(1)]
                wall, cpu = time.perf_counter(), time.process_time()
                for window in windows:
                    dataset.read(window=window)
                cpu_seconds = time.process_time() - cpu
                wall_seconds = time.perf_counter() - wall
                structure = dataset.tags(ns="IMAGE_STRUCTURE")
                rasters[name] = {
                    "block_windows": len(windows),
                    "bands": dataset.count,
                    "dtype": dataset.dtypes[0],
                    "compression": structure.get("COMPRESSION", "NONE"),
                    "cpu_seconds": cpu_seconds,
                    "wall_seconds": wall_seconds,
                }
            cpu_total += cpu_seconds
            wall_total += wall_seconds
    return {
        "rasters": rasters,
        "blocks": sum(r["block_windows"] * r["bands"] for r in rasters.values()),
        "cpu_seconds": cpu_total,
        "wall_seconds": wall_total,
    }


def cpu_floor(
    engine: Mapping[str, Any], decode: Mapping[str, Any], wall_seconds: float, cores: int
) -> dict[str, Any]:
    """The CPU floor of a run and its fraction of the run's wall time (1 = as fast as the machine allows)."""
    floor = (float(engine["cpu_seconds"]) + float(decode["cpu_seconds"])) / cores
    return {
        "engine_cpu_seconds": float(engine["cpu_seconds"]),
        "decode_cpu_seconds": float(decode["cpu_seconds"]),
        "cores": cores,
        "floor_seconds": floor,
        "wall_seconds": wall_seconds,
        "floor_fraction": floor / wall_seconds,
    }


def load_scene_arrays(
    paths: Mapping[str, str | os.PathLike[str]],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], np.ndarray | None]:
    """The scene as the runtime reads it: float32 physical values (scale/offset applied, as
    ``runtime.sources`` does), validity from each file's mask, and the cloud mask (> 0 = cloud)."""
    import rasterio

    inputs: dict[str, np.ndarray] = {}
    valid: dict[str, np.ndarray] = {}
    clouds: np.ndarray | None = None
    for name, path in paths.items():
        with rasterio.open(path) as dataset:
            if name == "cloud_mask":
                clouds = (dataset.read(1) > 0) & (dataset.read_masks(1) > 0)
                continue
            if name not in MODALITIES:
                continue
            data = dataset.read(out_dtype="float32")
            valid[name] = (dataset.read_masks() > 0).all(axis=0)
            scale = np.asarray(dataset.scales, dtype=np.float32).reshape(-1, 1, 1)
            offset = np.asarray(dataset.offsets, dtype=np.float32).reshape(-1, 1, 1)
            if np.any(scale != 1.0) or np.any(offset != 0.0):
                data = data * scale + offset
            inputs[name] = data
    return inputs, valid, clouds


def pattern_counts(pattern_map: np.ndarray) -> dict[str, int]:
    """Pixels per pattern name (``none`` for 0) of a pattern map, as ``RunSummary.pattern_pixels`` counts."""
    counts = np.bincount(pattern_map.ravel(), minlength=len(ALL_PATTERNS) + 1)
    names = {"none": int(counts[0])}
    names.update({p.name: int(counts[p.index]) for p in ALL_PATTERNS if counts[p.index]})
    return names


def arrays_run(
    make_predictor: Callable[[], Any],
    paths: Mapping[str, str | os.PathLike[str]],
    options: Mapping[str, Any],
    file_pattern_pixels: Mapping[str, int],
) -> dict[str, Any]:
    """Load the scene into memory, then time ``predict_arrays`` alone (a fresh predictor: engines load
    lazily inside the call, as they do inside ``predict_scene``), and a second call on the same predictor
    (warm: whether it gives the same maps is recorded too)."""
    loaded = time.perf_counter()
    inputs, valid, clouds = load_scene_arrays(paths)
    load_seconds = time.perf_counter() - loaded
    predictor = make_predictor()
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        _classes, pattern_map = predictor.predict_arrays(inputs, valid=valid, cloud_mask=clouds, **options)
        cpu_seconds = time.process_time() - cpu
        wall_seconds = time.perf_counter() - wall
        wall, cpu = time.perf_counter(), time.process_time()
        warm_classes, warm_patterns = predictor.predict_arrays(
            inputs, valid=valid, cloud_mask=clouds, **options
        )
        warm_cpu_seconds = time.process_time() - cpu
        warm_wall_seconds = time.perf_counter() - wall
    finally:
        predictor.close()
    counts = pattern_counts(pattern_map)
    return {
        "load_s": load_seconds,
        "array_bytes": int(sum(a.nbytes for a in inputs.values())),
        "wall_seconds": wall_seconds,
        "cpu_seconds": cpu_seconds,
        "warm_wall_seconds": warm_wall_seconds,
        "warm_cpu_seconds": warm_cpu_seconds,
        "warm_same_maps": bool(
            np.array_equal(warm_classes, _classes) and np.array_equal(warm_patterns, pattern_map)
        ),
        "pattern_pixels": counts,
        "pattern_pixels_match_file_run": counts == {k: int(v) for k, v in file_pattern_pixels.items()},
        "rows": rows_run(make_predictor, inputs, valid, clouds, options, _classes, pattern_map),
    }


def rows_run(
    make_predictor: Callable[[], Any],
    inputs: Mapping[str, np.ndarray],
    valid: Mapping[str, np.ndarray],
    clouds: np.ndarray | None,
    options: Mapping[str, Any],
    classes: np.ndarray,
    pattern_map: np.ndarray,
) -> dict[str, Any]:
    """The same scene handed over as a sensor would, ``ROW_BLOCK`` rows at a time, through
    ``Predictor.predict_rows``: wall time, the most input rows held, and whether its maps are
    ``predict_arrays``' bytes."""
    from runtime import RowBlock

    height, width = classes.shape
    blocks = (
        RowBlock(
            {m: a[:, top : top + ROW_BLOCK] for m, a in inputs.items()},
            {m: v[top : top + ROW_BLOCK] for m, v in valid.items()},
            None if clouds is None else clouds[top : top + ROW_BLOCK],
        )
        for top in range(0, height, ROW_BLOCK)
    )
    predictor = make_predictor()
    same = True
    try:
        wall, cpu = time.perf_counter(), time.process_time()
        stream = predictor.predict_rows(blocks, height, width, **options)
        for result in stream:
            rows = slice(result.start, result.start + result.classes.shape[0])
            same &= bool(
                np.array_equal(result.classes, classes[rows])
                and np.array_equal(result.patterns, pattern_map[rows])
            )
        cpu_seconds = time.process_time() - cpu
        wall_seconds = time.perf_counter() - wall
    finally:
        predictor.close()
    return {
        "block_rows": ROW_BLOCK,
        "wall_seconds": wall_seconds,
        "cpu_seconds": cpu_seconds,
        "peak_input_rows": stream.peak_rows,
        "same_maps_as_arrays": same,
    }


def measure_floor(
    predictor_factory: Callable[[], Any],
    manifest: Manifest,
    summary: Mapping[str, Any],
    paths: Mapping[str, str | os.PathLike[str]],
    spec: Mapping[str, Any],
    wall_seconds: float,
    warm_wall_seconds: float | None = None,
) -> dict[str, Any]:
    """Engine-only time of the run's engine runs, decode-once time, the CPU floor (of the first scene, and
    of the second where ``warm_wall_seconds`` is given), and (when asked) the arrays run; everything the
    end-to-end child adds to its result for issue 21."""
    engine = engine_only(
        manifest,
        str(summary["backend"]),
        str(spec["precision"]),
        spec.get("threads"),
        summary["engine_runs"],
        summary.get("engine_pixels") or {},
        int(spec["tile"]),
        int(spec["batch"]),
        spec["timing"],
        int(spec.get("seed", 0)),
        summary.get("engine_shapes"),
        streams=int(spec.get("streams") or 1),
    )
    decode = decode_once(paths)
    result: dict[str, Any] = {
        "engine_only": engine,
        "decode_once": decode,
        "floor": cpu_floor(engine, decode, wall_seconds, usable_cores()),
    }
    if warm_wall_seconds is not None:
        result["floor_warm"] = cpu_floor(engine, decode, warm_wall_seconds, usable_cores())
    if spec.get("arrays"):
        options = {
            "tile": int(spec["tile"]),
            "overlap": int(spec["overlap"]),
            "batch": int(spec["batch"]),
            "allow_out_of_range": bool(spec.get("allow_out_of_range", False)),
        }
        arrays = arrays_run(predictor_factory, paths, options, summary["pattern_pixels"])
        arrays["engine_wall_seconds"] = engine["wall_seconds"]
        arrays["arrays_fraction"] = engine["wall_seconds"] / arrays["wall_seconds"]
        arrays["arrays_fraction_warm"] = engine["wall_seconds"] / arrays["warm_wall_seconds"]
        arrays["rows"]["rows_fraction"] = engine["wall_seconds"] / arrays["rows"]["wall_seconds"]
        result["arrays"] = arrays
    return result


def fraction_summary(runs: Sequence[Mapping[str, Any]], key: str) -> dict[str, float]:
    """``{scene: fraction}`` of the largest run of each scene that has ``key`` (``floor_fraction`` /
    ``arrays_fraction``)."""
    best: dict[str, Mapping[str, Any]] = {}
    for run in runs:
        if run.get(key) is None:
            continue
        scene = str(run.get("scene"))
        if scene not in best or run["size"] > best[scene]["size"]:
            best[scene] = run
    return {scene: float(run[key]) for scene, run in best.items()}


def scene_files(paths: Mapping[str, Any]) -> dict[str, Path]:
    """The input rasters of a scene spec (modalities and cloud mask), the ones decoding must cover."""
    return {k: Path(paths[k]) for k in (*MODALITIES, "cloud_mask") if paths.get(k)}
