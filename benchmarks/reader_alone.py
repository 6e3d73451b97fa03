"""What the reader stage costs alone: every tile of a scene read and prepared from its GeoTIFFs on one
thread, nothing else running (issue 21).

In a run, the reader threads share two cores and their caches with the engines, so their CPU time
(``RunSummary.stage_cpu_seconds``) includes what that contention costs. Here the same calls
(``runtime.scheduling.prepare`` over the tile grid, the runtime's settings for files, a fresh GDAL handle
per repeat so each repeat decodes from a cold block cache, GDAL decoding on this thread) run alone, so the
difference to a run's reader CPU is contention and duplicated work, not the reading itself.

    python benchmarks/reader_alone.py --engines demo_out/engines --json out.json

Scene: the latency benchmark's Sentinel-2-like scene (``--scene``, ``--size`` px); the engines folder gives
the modalities and the cloud-edge settings; ``--tile`` defaults to the manifest's.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, scene_record
from benchmarks.latency_scenes import scene_paths
from stars_edge.io import write_json_atomic


def read_every_tile(
    engines: Path, paths: dict[str, Path], tile: int | None, overlap: int
) -> dict[str, float]:
    """Prepare every tile once, in order, on this thread; wall and CPU seconds, and CPU per stage."""
    from runtime import Predictor
    from runtime.gdal_env import gdal_cache_limit, tile_cache_bytes
    from runtime.raster_source import RasterSource
    from runtime.scheduling import Timer, prepare
    from runtime.tiling import TileGrid

    inputs: dict[str, Path] = {m: paths[m] for m in ("optical", "sar", "dsm") if m in paths}
    clouds = paths.get("cloud_mask")
    with Predictor(engines, backend="onnxruntime", precision="fp32") as predictor:
        size, overlap = predictor._tiling(tile, overlap)
        settings = predictor._settings(0.05, "files")
        modalities = predictor.manifest.modalities
    given = [*inputs.values(), *([clouds] if clouds else [])]
    with gdal_cache_limit(tile_cache_bytes(given, size)):
        source = RasterSource(inputs, modalities, clouds)
        try:
            grid = TileGrid(source.height, source.width, size, overlap)
            timer = Timer()
            wall, cpu = time.perf_counter(), time.process_time()
            for row in range(grid.rows):
                for col in range(grid.cols):
                    prepare(source, grid, row, col, settings, timer)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        finally:
            source.close()
    return {
        "tile": size,
        "tiles": len(grid),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "read_cpu_seconds": timer.cpu_seconds["read"],
        "preprocess_cpu_seconds": timer.cpu_seconds["preprocess"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", type=Path, required=True, help="engine folder (build-engines)")
    parser.add_argument("--scene", default="s2like", help="a latency benchmark scene (default s2like)")
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--tile", type=int, help="tile size (default: the manifest's)")
    parser.add_argument("--overlap", type=int, help="tile overlap (default: the runtime's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/stars_edge_reader_alone"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ["GDAL_NUM_THREADS"] = "1"  # decoding on this thread, where its CPU time is counted
    paths = scene_paths(args.workdir, args.size, 0, args.scene)
    load_start = load_average()
    runs: list[dict[str, Any]] = []
    for repeat in range(args.repeats):
        runs.append(read_every_tile(args.engines, paths, args.tile, args.overlap))
        run = runs[-1]
        print(
            f"{args.scene} {args.size} px, tile {run['tile']}, repeat {repeat + 1}: {run['tiles']} tiles, "
            f"wall {run['wall_seconds']:.2f} s, CPU {run['cpu_seconds']:.2f} s (read "
            f"{run['read_cpu_seconds']:.2f}, preprocess {run['preprocess_cpu_seconds']:.2f})",
            flush=True,
        )
    median = {k: statistics.median(r[k] for r in runs) for k in ("cpu_seconds", "read_cpu_seconds")}
    print(f"median CPU {median['cpu_seconds']:.2f} s, of it reading {median['read_cpu_seconds']:.2f} s")
    if args.json:
        record = scene_record(args.engines, load_start, scene=args.scene, size=args.size)
        write_json_atomic(args.json, {**record, "reader_alone": {"median": median, "runs": runs}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
