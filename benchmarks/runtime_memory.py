"""Peak RSS of ``Predictor.predict_scene`` as the scene grows in width and in both dimensions.

Each scene runs in its own child process (peak RSS: the child's ``VmHWM``; ``getrusage`` would report the
parent's high-water mark, which a forked child inherits across exec on Linux), with small 1x1
convolution engines so the runtime's own memory (carry, pending rows, GDAL caches, outputs) dominates, not
the engine's. Scenes: 1024 x 2048 vs 1024 x 32768 (width), 4096^2 vs 8192^2 (both dimensions); optical
(4 bands float32) + SAR (2 bands float32), deflate, 512 px blocks; class map, pattern map and uint8
probabilities; tile 512, overlap 64. Peak RSS does not depend on the machine's load, so this can run on a
busy machine; the timings it also prints do.

    python benchmarks/runtime_memory.py --out benchmarks/results/runtime_memory.json
    python benchmarks/runtime_memory.py --gdal-cachemax 16 \
        --out benchmarks/results/runtime_memory_cache16.json
    python benchmarks/runtime_memory.py --sizes 256x512,256x4096 --out /tmp/smoke.json   # smoke test
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
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SIZES = "1024x2048,1024x32768,4096x4096,8192x8192"
CHILD = """
import json, sys, time
from runtime import Predictor
engines, optical, sar, out = sys.argv[1:5]
started = time.perf_counter()
predictor = Predictor(engines, backend="onnxruntime", precision="fp32", threads=1)
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


def build_engines(folder: Path, classes: int = 7) -> Path:
    """1x1-conv engines for optical, sar and optical+sar, with their manifest (margin 0: 1x1 kernels)."""
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
        nodes.append(helper.make_node("Conv", [source, "w"], ["logits"], kernel_shape=[1, 1]))
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
    for name, bands, mean, amplitude in (("optical", 4, 0.12, 0.05), ("sar", 2, -12.0, 4.0)):
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
                        mean + amplitude * np.sin(yy / (37.0 + 11 * b) + xx / (53.0 + 7 * b))
                        for b in range(bands)
                    ]
                ).astype(np.float32)
                dataset.write(data, window=Window(0, top, width, rows))
        paths.append(path)
    return paths[0], paths[1]


def measure(
    sizes: list[tuple[int, int]], work: Path, gdal_cachemax: int | None = None
) -> list[dict[str, object]]:
    engines = build_engines(work / "engines")
    results = []
    for height, width in sizes:
        optical, sar = write_scene(work, height, width)
        out = work / f"out_{height}x{width}"
        out.mkdir(exist_ok=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
        if gdal_cachemax is not None:
            env["GDAL_CACHEMAX"] = str(gdal_cachemax)
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(engines), str(optical), str(sar), str(out)],
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
    """Peak RSS of each larger scene over its smaller pair (same height, or square)."""
    by_size = {(r["height"], r["width"]): float(r["peak_rss_mib"]) for r in results}  # type: ignore[arg-type]
    pairs = {
        "width 32768 / 2048": ((1024, 32768), (1024, 2048)),
        "8192^2 / 4096^2": ((8192, 8192), (4096, 4096)),
    }
    return {name: by_size[a] / by_size[b] for name, (a, b) in pairs.items() if a in by_size and b in by_size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated HxW scenes")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "runtime_memory.json")
    parser.add_argument(
        "--gdal-cachemax",
        type=int,
        default=None,
        help="GDAL_CACHEMAX (MB) for the runs; default: the runtime's sizing",
    )
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in item.split("x")) for item in args.sizes.split(",")]
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="stars-edge-memory-") as work:
        results = measure(sizes, Path(work), args.gdal_cachemax)  # type: ignore[arg-type]
    report = {
        "benchmark": "runtime peak RSS vs scene size",
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "gdal_cachemax_mb": args.gdal_cachemax,
        "parent_peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "wall_seconds": round(time.time() - started, 1),
        "results": results,
        "ratios": ratios(results),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["ratios"]))


def _cpu_flags() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                wanted = ("avx", "avx2", "avx512f", "avx512_vnni", "amx_tile", "fma", "f16c")
                return " ".join(f for f in line.split(":", 1)[1].split() if f in wanted)
    except OSError:
        pass
    return "unknown"


if __name__ == "__main__":
    main()
