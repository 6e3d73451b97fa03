"""What two cores allow: the CPU floor's own work, each part alone and both at once (issue 21).

``floor_fraction`` (``benchmarks/latency_floor.py``) divides the CPU that the engines and decoding each need
*alone* by the cores, as if the two overlapped perfectly. This benchmark runs exactly that work, and nothing
of the runtime's own, to see how close any runtime could come:

- **engines**: the clean scene's whole-tile engine calls (its tile grid, batches formed per tile row as the
  runtime forms them) on seeded inputs, through ``runtime.engines.EngineSet`` with as many calls in flight
  as it has streams;
- **decoding**: every block of every input raster read once, as ``latency_floor.decode_once`` reads them,
  split over as many threads as the runtime has readers (each with a handle of its own);
- **both at once**: decoding on a thread of its own while the engine calls run.

Each in two arrangements: as the runtime runs them (the backend's default threads and streams, decoding on
one more thread) and one core each (the engines on one thread and one stream, decoding on the other core).
``bound`` = the floor (engine CPU alone + decoding CPU alone, over the cores) / the fastest wall time of both
at once: the largest ``floor_fraction`` that the floor's own work reaches on this machine, before a runtime
adds anything. Where it is below the issue's 0.8, the rest of the gap is the machine (two cores and their
caches shared by decoding and the engines), not the runtime.

    python benchmarks/contention.py --engines demo_out/engines --json out.json
"""

from __future__ import annotations

import functools
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, scene_parser, scene_record
from benchmarks.latency_floor import DECODE_CACHE_BYTES, scene_files
from benchmarks.latency_plan import make_inputs
from benchmarks.latency_scenes import scene_paths
from runtime.batch_buffers import row_groups
from runtime.cpus import usable_cores
from runtime.pipelining import Together
from runtime.run_options import default_streams
from runtime.tiling import TileGrid
from stars_edge.io import write_json_atomic
from stars_edge.manifest import Manifest, load_manifest
from stars_edge.modalities import Pattern

#: The arrangements of the floor's work: engine threads (None: the backend's default), streams (None:
#: ``default_streams``) and decoding threads (the runtime reads files on two).
ARRANGEMENTS: dict[str, dict[str, int | None]] = {
    "as the runtime runs them": {"threads": None, "streams": None, "decoders": 2},
    "decoding on one thread": {"threads": None, "streams": None, "decoders": 1},
    "one core each": {"threads": 1, "streams": 1, "decoders": 1},
}


def row_batches(columns: int, batch: int) -> list[int]:
    """Batch sizes of one tile row's whole-tile calls, as the runtime forms them (``row_groups`` of
    ``runtime.tile_inference``: groups of at most ``batch`` of sizes as equal as possible, each one call)."""
    return row_groups(columns, batch)


def engine_calls(height: int, width: int, tile: int, overlap: int, batch: int) -> dict[int, int]:
    """Calls per batch size that a scene of one pattern needs (``{batch size: calls}``)."""
    grid = TileGrid(height, width, tile, overlap)
    calls: dict[int, int] = {}
    for size in row_batches(grid.cols, batch):
        calls[size] = calls.get(size, 0) + grid.rows
    return calls


def timed(work: Callable[[], object]) -> dict[str, float]:
    """Wall and process-CPU seconds of ``work``."""
    wall, cpu = time.perf_counter(), time.process_time()
    work()
    return {"wall_seconds": time.perf_counter() - wall, "cpu_seconds": time.process_time() - cpu}


def run_engines(engines: Any, pattern: Pattern, inputs: Mapping[int, Any], calls: Mapping[int, int]) -> None:
    """The scene's engine calls, ``engines.concurrency`` at a time (a last partial round runs alone)."""
    in_flight = max(1, int(engines.concurrency))
    for size, count in calls.items():
        call = functools.partial(engines.run, pattern, inputs[size])
        rounds, rest = divmod(count, in_flight)
        with Together(call, in_flight) as together:
            for _ in range(rounds):
                together()
        for _ in range(rest):
            call()


def decode_share(files: Mapping[str, Path], share: int, shares: int) -> tuple[float, int]:
    """Read every ``shares``-th block window of every raster, from ``share`` on, through a handle of this
    thread's own (as each reader thread of the runtime has): this thread's CPU seconds and the block
    windows it read."""
    import rasterio

    started, windows = time.thread_time(), 0
    with rasterio.Env(GDAL_CACHEMAX=DECODE_CACHE_BYTES):
        for path in files.values():
            with rasterio.open(path) as dataset:
                for _, window in list(dataset.block_windows(1))[share::shares]:
                    dataset.read(window=window)
                    windows += 1
    return time.thread_time() - started, windows


class Decoders:
    """Decoding every block once, split over ``threads`` threads that start at construction."""

    def __init__(self, files: Mapping[str, Path], threads: int) -> None:
        self._done: list[tuple[float, int]] = []
        self._workers = [
            threading.Thread(target=self._decode, args=(files, k, threads), name=f"decode-{k}")
            for k in range(threads)
        ]
        for worker in self._workers:
            worker.start()

    def _decode(self, files: Mapping[str, Path], share: int, shares: int) -> None:
        self._done.append(decode_share(files, share, shares))

    def join(self) -> None:
        """Wait for the last block."""
        for worker in self._workers:
            worker.join()

    @property
    def cpu_seconds(self) -> float:
        """The decoding threads' CPU seconds (after ``join``)."""
        return sum(cpu for cpu, _ in self._done)

    @property
    def windows(self) -> int:
        """Block windows read, over every thread (after ``join``)."""
        return sum(windows for _, windows in self._done)


def both_at_once(run: Callable[[], None], decode: Callable[[], Decoders]) -> dict[str, float]:
    """Decoding on threads of its own while ``run`` runs here: the wall time until both are done, the
    process CPU, and the decoding threads' own CPU (the rest is the engines')."""
    wall, cpu = time.perf_counter(), time.process_time()
    decoders = decode()
    run()
    engines_done = time.perf_counter() - wall
    decoders.join()
    total_wall, total_cpu = time.perf_counter() - wall, time.process_time() - cpu
    decode_cpu = decoders.cpu_seconds
    return {
        "wall_seconds": total_wall,
        "cpu_seconds": total_cpu,
        "engines_done_seconds": engines_done,
        "decode_cpu_seconds": decode_cpu,
        "engine_cpu_seconds": total_cpu - decode_cpu,
        "windows": decoders.windows,
    }


def decode_alone(decode: Callable[[], Decoders]) -> None:
    """Decoding alone, to the last block."""
    decode().join()


def measure(
    manifest: Manifest,
    paths: Mapping[str, Path],
    backend: str,
    precision: str,
    tile: int,
    overlap: int,
    batch: int,
    repeats: int,
    size: int,
) -> dict[str, Any]:
    """Each arrangement: the engines alone, decoding alone, both at once (medians of ``repeats``), and the
    bound (see the module docstring)."""
    from runtime.engines import EngineSet

    pattern = Pattern.parse("+".join(m for m in ("optical", "sar", "dsm") if m in paths))
    calls = engine_calls(size, size, tile, overlap, batch)
    inputs = {b: make_inputs(manifest, pattern, b, tile) for b in calls}
    files = scene_files(paths)
    arrangements: dict[str, Any] = {}
    for name, setting in ARRANGEMENTS.items():
        threads, decoders = setting["threads"], int(setting["decoders"] or 1)
        decode = functools.partial(Decoders, files, decoders)
        streams = setting["streams"] or default_streams(backend, threads)
        engines = EngineSet(manifest, backend, precision, threads, allow_flagged=True, streams=streams)
        try:
            run = functools.partial(run_engines, engines, pattern, inputs, calls)
            run()  # loads the engine and compiles every call shape before anything is timed
            samples: dict[str, list[dict[str, float]]] = {"engines": [], "decoding": [], "both": []}
            for _ in range(repeats):
                samples["engines"].append(timed(run))
                samples["decoding"].append(timed(functools.partial(decode_alone, decode)))
                samples["both"].append(both_at_once(run, decode))
        finally:
            engines.close()
        medians = {
            part: {key: statistics.median(s[key] for s in rows) for key in rows[0]}
            for part, rows in samples.items()
        }
        arrangements[name] = {
            "threads": threads,
            "streams": streams,
            "decoding_threads": decoders,
            "median": medians,
            "runs": samples,
        }
    cores = usable_cores()
    runtime = arrangements["as the runtime runs them"]["median"]
    floor = (runtime["engines"]["cpu_seconds"] + runtime["decoding"]["cpu_seconds"]) / cores
    fastest = min(arrangements, key=lambda n: arrangements[n]["median"]["both"]["wall_seconds"])
    both_wall = arrangements[fastest]["median"]["both"]["wall_seconds"]
    return {
        "pattern": pattern.name,
        "engine_calls": {str(b): n for b, n in calls.items()},
        "cores": cores,
        "arrangements": arrangements,
        "floor_seconds": floor,
        "fastest_arrangement": fastest,
        "both_wall_seconds": both_wall,
        "bound": floor / both_wall,
    }


def main(argv: list[str] | None = None) -> int:
    parser = scene_parser(__doc__, Path("/tmp/stars_edge_contention"))
    parser.add_argument("--overlap", type=int, default=64, help="tile overlap in px (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats of each part (default 3)")
    args = parser.parse_args(argv)
    os.environ["GDAL_NUM_THREADS"] = "1"  # decoding on the thread that asks, where its CPU is counted
    paths = scene_paths(args.workdir, args.size, 0, args.scene)
    load_start = load_average()
    manifest = load_manifest(args.engines)
    result = measure(
        manifest,
        paths,
        args.backend,
        args.precision,
        args.tile,
        args.overlap,
        args.batch,
        args.repeats,
        args.size,
    )
    for name, arrangement in result["arrangements"].items():
        median = arrangement["median"]
        print(
            f"{name} (engine threads {arrangement['threads'] or 'default'}, streams "
            f"{arrangement['streams']}, decoding threads {arrangement['decoding_threads']}): "
            + "; ".join(
                f"{part} {m['wall_seconds']:.2f} s wall, {m['cpu_seconds']:.2f} CPU-s"
                for part, m in median.items()
            ),
            flush=True,
        )
    print(
        f"floor {result['floor_seconds']:.2f} s on {result['cores']} cores; both at once at best "
        f"{result['both_wall_seconds']:.2f} s ({result['fastest_arrangement']}): bound {result['bound']:.3f}"
    )
    if args.json:
        names = ("backend", "precision", "scene", "size", "tile", "overlap", "batch")
        record = scene_record(args.engines, load_start, **{name: getattr(args, name) for name in names})
        write_json_atomic(args.json, {**record, "contention": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
