"""Peak RSS of ``Predictor.predict_scene`` as the scene grows in width and in both dimensions.

Each scene runs in its own child process (peak RSS: the child's ``VmHWM``; ``getrusage`` would report the
parent's high-water mark, which a forked child inherits across exec on Linux), with small 1x1
convolution engines so the runtime's own memory (carry, pending rows, GDAL caches, outputs) dominates, not
the engine's. Scenes: 1024 x 2048 and 1024 x 8192 vs 1024 x 32768 (width), 4096^2 vs 8192^2 (both
dimensions); optical (4 bands float32) + SAR (2 bands float32), deflate, 512 px blocks; class map,
pattern map and uint8 probabilities; tile 512, overlap 64. Peak RSS does not depend on the machine's load,
so this can run on a busy machine; the timings it also prints do.

    python benchmarks/runtime_memory.py --out benchmarks/results/runtime_memory.json
    python benchmarks/runtime_memory.py --gdal-cachemax 16 \
        --out benchmarks/results/runtime_memory_cache16.json
    python benchmarks/runtime_memory.py --quick   # smoke test: 256x512 and 256x4096, written to the temp dir

The JSON records the command, whether it was a ``--quick`` smoke run, the machine (``machine_info``) and
the 1-minute load average sampled before the first scene is written (``load_average_1m``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as `python benchmarks/runtime_memory.py`: make `benchmarks.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, machine_info
from stars_edge.io import write_json_atomic

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = "1024x2048,1024x8192,1024x32768,4096x4096,8192x8192"
#: ``--quick``: two small scenes that check the harness end to end in seconds (numbers not measurements).
QUICK_SIZES = "256x512,256x4096"
CHILD = """
import json, sys, time
from runtime import Predictor
engines, optical, sar, out, readers = sys.argv[1:6]
started = time.perf_counter()
predictor = Predictor(engines, backend="onnxruntime", precision="fp32", threads=1,
                      readers=int(readers) if readers else None)
summary = predictor.predict_scene(
    optical=optical, sar=sar, out=out + "/pred.tif", pattern_map=out + "/pat.tif",
    probabilities=out + "/prob.tif", tile=512, overlap=64, progress=False,
)
# VmHWM, not ru_maxrss: getrusage keeps the high-water mark of the forking parent across exec on Linux
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(json.dumps({"peak_rss_mib": hwm / 1024,
                  "seconds": time.perf_counter() - started, "chunks": summary.chunks,
                  "engine_runs": summary.engine_runs}))
"""


def build_engines(folder: Path, classes: int = 7, logits_stride: int = 4) -> Path:
    """1x1-conv engines for optical, sar and optical+sar, with their manifest (margin 0: 1x1 kernels); with
    ``logits_stride`` 4 (what ``build-engines`` ships by default) they end in a 4x4 average pool, so the run
    blends at stride 4 like a real engine's."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from stars_edge.io import sha256_file
    from stars_edge.manifest import EngineEntry, Manifest, ModelInfo, engine_inputs, save_manifest
    from stars_edge.modalities import DEFAULT_SPECS, Pattern

    specs = {m: DEFAULT_SPECS[m] for m in ("optical", "sar")}
    folder.mkdir(parents=True, exist_ok=True)
    manifest = Manifest(
        model=ModelInfo("bench-conv", "stars", "b" * 64, classes, tuple(f"c{i}" for i in range(classes))),
        modalities=specs,
        tile_size=512,
        context_margin=0,
        logits_stride=logits_stride,
    )
    rng = np.random.default_rng(0)
    for name in ("optical", "sar", "optical+sar"):
        pattern = Pattern.parse(name)
        bands = sum(specs[m].bands for m in pattern)
        inputs = [
            helper.make_tensor_value_info(m, TensorProto.FLOAT, ["N", specs[m].bands, "H", "W"])
            for m in pattern
        ]
        output = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", classes, "H", "W"])
        weight = rng.normal(size=(classes, bands, 1, 1)).astype(np.float32)
        nodes = []
        source = pattern.modalities[0]
        if len(pattern) > 1:
            nodes.append(helper.make_node("Concat", list(pattern), ["x"], axis=1))
            source = "x"
        conv_out = "logits" if logits_stride == 1 else "full"
        nodes.append(helper.make_node("Conv", [source, "w"], [conv_out], kernel_shape=[1, 1]))
        if logits_stride != 1:
            size = [logits_stride, logits_stride]
            nodes.append(
                helper.make_node("AveragePool", ["full"], ["logits"], kernel_shape=size, strides=size)
            )
        graph = helper.make_graph(nodes, name, inputs, [output], [numpy_helper.from_array(weight, "w")])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 9
        path = folder / f"{name}.fp32.onnx"
        onnx.save(model, str(path))
        manifest.add(
            EngineEntry(
                pattern=pattern,
                precision="fp32",
                backend="onnxruntime",
                path=path.name,
                sha256=sha256_file(path),
                inputs=engine_inputs(pattern, specs),
                tile_size=512,
            )
        )
    save_manifest(manifest, folder)
    return folder


def write_scene(folder: Path, height: int, width: int) -> tuple[Path, Path]:
    """Smooth, plausible optical and SAR rasters written in row bands (the writer's memory stays small)."""
    import rasterio
    from affine import Affine
    from rasterio.windows import Window

    transform = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5000000.0)
    paths = []
    # per-band means the input contract accepts: reflectance, and SAR in dB with vv above vh
    for name, means, amplitude in (("optical", (0.12,) * 4, 0.05), ("sar", (-10.0, -17.0), 3.0)):
        bands = len(means)
        path = folder / f"{name}_{height}x{width}.tif"
        profile = {
            "driver": "GTiff", "height": height, "width": width, "count": bands, "dtype": "float32",
            "crs": "EPSG:32631", "transform": transform, "tiled": True, "blockxsize": 512, "blockysize": 512,
            "compress": "deflate", "nodata": float("nan"),
        }  # fmt: skip
        with rasterio.open(path, "w", **profile) as dataset:
            xx = np.arange(width, dtype=np.float32)
            for top in range(0, height, 512):
                rows = min(512, height - top)
                yy = np.arange(top, top + rows, dtype=np.float32)[:, None]
                data = np.stack(
                    [
                        means[b] + amplitude * np.sin(yy / (37.0 + 11 * b) + xx / (53.0 + 7 * b))
                        for b in range(bands)
                    ]
                ).astype(np.float32)
                dataset.write(data, window=Window(0, top, width, rows))
        paths.append(path)
    return paths[0], paths[1]


def measure(
    sizes: list[tuple[int, int]],
    work: Path,
    gdal_cachemax: int | None = None,
    logits_stride: int = 4,
    readers: int | None = None,
) -> list[dict[str, object]]:
    """Peak RSS per scene, each predicted in a fresh child so one scene's high-water mark cannot leak into
    the next. ``readers``: reader threads (None: the runtime's default from files)."""
    engines = build_engines(work / "engines", logits_stride=logits_stride)
    results = []
    for height, width in sizes:
        optical, sar = write_scene(work, height, width)
        out = work / f"out_{height}x{width}"
        out.mkdir(exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        if gdal_cachemax is not None:
            env["GDAL_CACHEMAX"] = str(gdal_cachemax)
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(engines), str(optical), str(sar), str(out), str(readers or "")],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"run {height}x{width} failed:\n{done.stderr}")
        row = {"height": height, "width": width, **json.loads(done.stdout.strip().splitlines()[-1])}
        print(json.dumps(row), flush=True)
        results.append(row)
        for path in (optical, sar, *out.iterdir()):
            path.unlink()
    return results


def ratios(results: list[dict[str, object]]) -> dict[str, float]:
    """Peak RSS of each larger scene over its smaller pair (same height, or square). Widths past the column
    chunk (``runtime.predictor.CHUNK_WIDTH``, 4096 px) hold one chunk's carry and GDAL cache, so memory
    grows with the width up to it (``width 32768 / 2048``) and not beyond (``width 32768 / 8192``)."""
    by_size = {(r["height"], r["width"]): float(r["peak_rss_mib"]) for r in results}  # type: ignore[arg-type]
    pairs = {
        "width 32768 / 2048": ((1024, 32768), (1024, 2048)),
        "width 32768 / 8192": ((1024, 32768), (1024, 8192)),
        "8192^2 / 4096^2": ((8192, 8192), (4096, 4096)),
    }
    return {name: by_size[a] / by_size[b] for name, (a, b) in pairs.items() if a in by_size and b in by_size}


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``HxW,HxW`` into (height, width) pairs, refusing anything else so a typo fails before any work."""
    sizes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise SystemExit(f"--sizes: {item!r} is not HxW with positive integers (e.g. 1024x2048)")
        sizes.append((int(parts[0]), int(parts[1])))
    return sizes


def build_parser() -> argparse.ArgumentParser:
    """The command line; a function so tests can parse the same options the script does."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", default=None, help=f"comma-separated HxW scenes (default {DEFAULT_SIZES})")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="result JSON (default benchmarks/results/runtime_memory.json; with --quick: in the temp dir)",
    )
    parser.add_argument(
        "--gdal-cachemax",
        type=int,
        default=None,
        help="GDAL_CACHEMAX (MB) for the runs; default: the runtime's sizing",
    )
    parser.add_argument(
        "--logits-stride",
        type=int,
        choices=(1, 4),
        default=4,
        help="engines returning stride-4 logits (default, as build-engines ships) or full-resolution ones",
    )
    parser.add_argument(
        "--readers",
        type=int,
        default=None,
        help="reader threads per run (default: the runtime's, from files)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: scenes {QUICK_SIZES} unless --sizes is given (numbers not measurements)",
    )
    return parser


def run(args: argparse.Namespace, command: str) -> dict[str, Any]:
    """Measure every scene and return the result, machine and start load sampled before any work.

    The load is read first: once scenes are written and children run, the benchmark's own processes count
    in it, and it could no longer say whether other work shared the cores.
    """
    start_load = load_average()
    machine = machine_info(threads=1)
    machine["load_average_1m"] = start_load
    sizes = parse_sizes(args.sizes or (QUICK_SIZES if args.quick else DEFAULT_SIZES))
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="stars-edge-memory-") as work:
        results = measure(sizes, Path(work), args.gdal_cachemax, args.logits_stride, args.readers)
    return {
        "benchmark": "runtime peak RSS vs scene size",
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "quick": bool(args.quick),
        "cpu_flags": machine["cpu_flags"],
        "cores": os.cpu_count(),
        "load_average_1m": start_load,
        "machine": machine,
        "gdal_cachemax_mb": args.gdal_cachemax,
        "readers": args.readers,
        "logits_stride": args.logits_stride,
        "parent_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wall_seconds": round(time.time() - started, 1),
        "results": results,
        "ratios": ratios(results),
    }


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark and write its JSON atomically (a killed run never leaves a half-written file)."""
    args = build_parser().parse_args(argv)
    command = " ".join(["python benchmarks/runtime_memory.py", *(argv if argv is not None else sys.argv[1:])])
    if args.out is None:
        args.out = (
            Path(tempfile.gettempdir()) / "stars_edge_runtime_memory_quick.json"
            if args.quick
            else ROOT / "benchmarks" / "results" / "runtime_memory.json"
        )
    report = run(args, command)
    write_json_atomic(args.out, report)
    print(json.dumps(report["ratios"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
