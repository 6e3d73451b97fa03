"""Where ``Predictor.predict_arrays`` spends its time, stage by stage, with nothing overlapped (issue 21).

The runtime reads and prepares tiles on a reader thread while the main thread runs the engines and blends,
so a profile of a normal run shows contention, not work. Here the reader's work runs on the main thread
(``SerialReader`` stands in for ``runtime.scheduling.Prefetcher``: the same ``prepare`` calls, in the same
order, without the thread), the engines run one call at a time on the same thread (``streams=1``), and
``cProfile`` attributes every second of the one thread to a stage by the deepest frame of the stage's
module. The maps are the same bytes as a threaded run's (checked). ``--top N`` also prints the N functions
with the most own time.

    python benchmarks/arrays_profile.py --engines demo_out/engines --json out.json

Scene: the latency benchmark's Sentinel-2-like scene (``--scene s2like``, ``--size`` px), loaded into memory
as the runtime reads it; engines at ``--precision`` on ``--backend``, the runtime's default tile and batch.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, machine_info
from benchmarks.latency_floor import load_scene_arrays
from benchmarks.latency_scenes import scene_paths
from runtime.cpus import usable_cores
from stars_edge.io import write_json_atomic

#: Stage of a profiled function, by the file it lives in (first match wins; order matters).
STAGES: tuple[tuple[str, str], ...] = (
    ("engine calls", "runtime/backends/"),
    ("engine calls", "openvino"),
    ("engine calls", "onnxruntime"),
    ("engine calls", "runtime/engines.py"),
    ("blending and upsampling", "runtime/blending"),
    ("blending and upsampling", "runtime/stride4_"),
    ("blending and upsampling", "runtime/upsampling.py"),
    ("blending and upsampling", "runtime/pixels.py"),
    ("cutting tiles", "runtime/array_source.py"),
    ("cutting tiles", "runtime/kernels"),
    ("validity and normalisation", "runtime/validity.py"),
    ("validity and normalisation", "runtime/tile_source.py"),
    ("scheduling and batching", "runtime/scheduling.py"),
    ("scheduling and batching", "runtime/writing.py"),
    ("scheduling and batching", "runtime/tile_inference.py"),
    ("scheduling and batching", "runtime/batch_buffers.py"),
    ("input contract", "stars_edge/contract.py"),
)


class SerialReader:
    """``Prefetcher``'s interface, ``prepare`` run on the caller's thread, row-major from ``first_row``."""

    def __init__(
        self,
        source: Any,
        grid: Any,
        chunk: Any,
        first_row: int,
        settings: Any,
        timer: Any,
        depth: int,
        batch: int = 1,
    ):  # settings.readers is ignored: one thread
        from runtime.batch_buffers import GroupBuffers
        from runtime.scheduling import prepare

        columns = list(range(chunk.first_col, chunk.last_col + 1))
        buffers = self._buffers = GroupBuffers(columns, batch, grid.tile)

        def tiles() -> Generator[Any, None, None]:
            for row in range(first_row, grid.rows):
                for col in columns:
                    yield prepare(source, grid, row, col, settings, timer, buffers)

        self._tiles = tiles()

    def get(self) -> Any:
        return next(self._tiles)

    def recycle(self, tiles: Any) -> None:
        """As ``Prefetcher.recycle``: the blended group's engine-input buffers go back for later groups."""
        self._buffers.recycle([list(tile.inputs.values()) for tile in tiles])

    def close(self) -> None:
        self._tiles.close()


def stage_of(filename: str) -> str:
    """The stage a function of ``filename`` belongs to (``other``: Python and numpy glue of no stage)."""
    return next((stage for stage, part in STAGES if part in filename), "other")


def attribute(stats: pstats.Stats) -> dict[str, float]:
    """Seconds per stage: each function's own time (tottime), given to its stage, or, for a function of no
    stage (numpy, builtins), to the stage of the caller that spent the most time in it."""
    seconds: dict[str, float] = {}
    for (filename, _, _), (_, _, own, _, callers) in stats.stats.items():  # type: ignore[attr-defined]
        stage = stage_of(filename)
        if stage == "other" and callers:
            caller = max(callers.items(), key=lambda item: item[1][3])[0]
            stage = stage_of(caller[0])
        seconds[stage] = seconds.get(stage, 0.0) + own
    return dict(sorted(seconds.items(), key=lambda item: -item[1]))


def backend_runs(stats: pstats.Stats) -> int:
    """Calls of a backend's ``run`` the profile saw: the run's engine calls when they ran on the profiled
    thread, none when worker threads made them (calls in flight)."""
    return sum(
        calls
        for (filename, _, name), (_, calls, *_) in stats.stats.items()  # type: ignore[attr-defined]
        if "runtime/backends/" in filename and name == "run"
    )


def process_cpu_seconds() -> float:
    """User + system CPU time of this process, every thread (engine workers included)."""
    times = os.times()
    return times.user + times.system


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", type=Path, required=True)
    parser.add_argument("--backend", default="openvino")
    parser.add_argument("--precision", default="int8")
    parser.add_argument("--scene", default="s2like", help="a latency benchmark scene (default s2like)")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stars_edge_arrays_profile"))
    parser.add_argument("--json", type=Path)
    parser.add_argument("--top", type=int, default=0, help="also print the N functions with most own time")
    parser.add_argument("--tile", type=int, help="tile size (default: the runtime's, from the manifest)")
    parser.add_argument("--overlap", type=int, help="tile overlap (default: the runtime's)")
    args = parser.parse_args(argv)
    import runtime.writing
    from runtime import Predictor

    inputs, valid, clouds = load_scene_arrays(scene_paths(args.workdir, args.size, 0, args.scene))
    load_start = load_average()
    crop = (slice(None), slice(0, 512), slice(0, 512))
    tiling = {k: v for k, v in (("tile", args.tile), ("overlap", args.overlap)) if v is not None}
    with Predictor(args.engines, backend=args.backend, precision=args.precision) as predictor:
        predictor.predict_arrays({m: a[crop] for m, a in inputs.items()})  # engines loaded and compiled
        threaded, cpu = time.perf_counter(), process_cpu_seconds()
        want, _ = predictor.predict_arrays(inputs, valid=valid, cloud_mask=clouds, **tiling)
        threaded, cpu = time.perf_counter() - threaded, process_cpu_seconds() - cpu
    # one stream: the engine calls run on the main thread too, where cProfile sees them (with calls in
    # flight they run on worker threads and the main thread's profile shows only its wait)
    with Predictor(args.engines, backend=args.backend, precision=args.precision, streams=1) as predictor:
        predictor.predict_arrays({m: a[crop] for m, a in inputs.items()})
        threaded_reader = runtime.writing.Prefetcher
        runtime.writing.Prefetcher = SerialReader  # type: ignore[assignment,misc]
        try:
            profile = cProfile.Profile()
            serial = time.perf_counter()
            profile.enable()
            got, _ = predictor.predict_arrays(inputs, valid=valid, cloud_mask=clouds, **tiling)
            profile.disable()
            serial = time.perf_counter() - serial
        finally:
            runtime.writing.Prefetcher = threaded_reader  # type: ignore[misc]
    stats = pstats.Stats(profile)
    stages = attribute(stats)
    if args.top:
        stats.sort_stats("tottime").print_stats(args.top)
    total = sum(stages.values())
    for stage, seconds in stages.items():
        print(f"{seconds:7.3f} s  {100 * seconds / total:5.1f} %  {stage}")
    same = bool(np.array_equal(got, want))
    print(f"serial (profiled) {serial:.2f} s, threaded {threaded:.2f} s; same class map: {same}")
    cores = usable_cores()
    busy = cpu / threaded
    print(f"threaded run: {cpu:.2f} CPU-s over {threaded:.2f} s wall, {busy:.2f} of {cores} cores busy")
    if args.json:
        record = {
            "command": " ".join(sys.argv),
            "engines": str(args.engines),
            "backend": args.backend,
            "precision": args.precision,
            "scene": args.scene,
            "size": args.size,
            "tiling": tiling,
            "stage_seconds": stages,
            "serial_profiled_seconds": serial,
            "threaded_seconds": threaded,
            "threaded_cpu_seconds": cpu,
            "same_class_map": same,
            "engine_calls_profiled": backend_runs(stats),
            "machine": {**machine_info(usable_cores()), "load_start": load_start, "load_end": load_average()},
        }
        write_json_atomic(args.json, record)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
