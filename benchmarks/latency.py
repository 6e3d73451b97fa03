"""Latency, throughput and memory of the engines, side by side with PyTorch and the machine's peak.

    python benchmarks/latency.py --engines DIR [--checkpoint C] [--tile 512] [--batch 1,4] [--threads N]
                                 [--json OUT.json] [--quick] [--e2e-size 8192] [--e2e-scene s2like]

What runs, and where it lives:

- ``benchmarks/latency_engines.py``: the fair CPU comparison. Each configuration (ONNX Runtime FP32/INT8,
  OpenVINO FP32/BF16/INT8, PyTorch eager / channels-last / torch.compile) in its own worker process
  (``latency_worker.py``), repetitions interleaved across configurations round by round.
- ``benchmarks/latency_gpu.py``: TensorRT engines, ONNX Runtime CUDA, PyTorch CUDA where a GPU is present.
- ``benchmarks/latency_e2e.py``: ``runtime.Predictor.predict_scene`` on a synthetic scene (also stored
  Sentinel-2-like: uint16 + scale, DEFLATE with predictor), per-stage times, peak RSS.
- ``benchmarks/latency_targets.py``: the targets with PASS/MISS, the Markdown, op profiles of misses.

The machine's load average is recorded at the start and the end; a run that starts on a loaded machine
(more than 0.5 runnable tasks per usable core) is flagged in the JSON, the Markdown and every target.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/latency.py`: make `benchmarks.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    BenchmarkError,
    is_loaded,
    load_average,
    machine_info,
    measure_matmul_gflops,
)
from benchmarks.latency_e2e import E2E_SCENES, benchmark_e2e, e2e_child_main, scene_paths
from benchmarks.latency_engines import (
    benchmark_cpu_fair,
    benchmark_onnxruntime,
    benchmark_pytorch,
    profile_config,
)
from benchmarks.latency_gpu import benchmark_gpu, gpu_info
from benchmarks.latency_plan import (
    ARRAYS_MAX_SIZE,
    LOADED_PER_CORE,
    RESULT_SCHEMA,
    RESULTS_DIR,
    BenchmarkPlan,
    Echo,
    FlopCache,
    TimingPlan,
    checkpoint_modules,
    make_inputs,
)
from benchmarks.latency_targets import MISS_PROFILES, evaluate_targets, print_targets, render_markdown
from stars_edge.errors import StarsEdgeError
from stars_edge.io import write_json_atomic, write_text_atomic
from stars_edge.manifest import load_manifest
from stars_edge.modalities import ALL_PATTERNS, Pattern

__all__ = [
    "E2E_SCENES",
    "RESULT_SCHEMA",
    "BenchmarkPlan",
    "TimingPlan",
    "benchmark_cpu_fair",
    "benchmark_e2e",
    "benchmark_gpu",
    "benchmark_onnxruntime",
    "benchmark_pytorch",
    "checkpoint_modules",
    "e2e_child_main",
    "evaluate_targets",
    "gpu_info",
    "main",
    "make_inputs",
    "parse_plan",
    "render_markdown",
    "run_benchmark",
    "scene_paths",
]


def run_benchmark(plan: BenchmarkPlan, echo: Echo = print) -> dict[str, Any]:
    """Measure everything ``plan`` asks for and write the JSON and Markdown; returns the result dict."""
    manifest = load_manifest(plan.engines)
    machine = machine_info(plan.threads)
    machine["loaded"] = is_loaded(machine["load_average_1m"], machine["usable_cores"], LOADED_PER_CORE)
    if machine["loaded"]:
        echo(
            f"WARNING: load average {machine['load_average_1m']} on {machine['usable_cores']} cores: the "
            "machine is busy, this run's timings and ratios will be flagged as not fair"
        )
    echo(
        f"machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, {plan.threads} threads; "
        f"CPU flags: {', '.join(machine['cpu_flags']) or 'n/a'}; load average {machine['load_average_1m']}"
    )
    echo(f"engines: {manifest.root} ({manifest.describe_engines()})")
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
    rows = benchmark_cpu_fair(manifest, plan, best.gflops, flops_cache, echo, skipped)
    gpu = gpu_info()
    rows += benchmark_gpu(manifest, plan, flops_cache, gpu, echo, skipped)
    rows.sort(
        key=lambda r: (
            r["device"] != "cpu",
            ALL_PATTERNS.index(Pattern.parse(r["pattern"])),
            r["precision"],
            r["backend"],
            r.get("variant") or "",
            r["batch"],
        )
    )
    e2e: dict[str, Any]
    if plan.e2e_sizes:
        e2e = benchmark_e2e(manifest, plan, rows, echo)
    else:
        e2e = {"skipped": "disabled with --e2e-size 0", "runs": []}
    machine["load_average_1m_end"] = load_average()
    result: dict[str, Any] = {
        "schema": RESULT_SCHEMA,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(sys.argv),
        "quick": plan.quick,
        "engines": str(manifest.root),
        "checkpoint": str(plan.checkpoint) if plan.checkpoint else None,
        "model": manifest.model.to_dict(),
        "manifest_engines": [
            {
                "pattern": e.pattern.name,
                "precision": e.precision,
                "backend": e.backend,
                "accuracy": e.accuracy,
            }
            for e in manifest.engines
        ],
        "tile": plan.tile,
        # the tile the runtime uses when none is given (the manifest's), for the default-tile INT8 target
        "default_tile": manifest.tile_size,
        "batches": list(plan.batches),
        "timing": {
            "warmup": plan.timing.warmup,
            "min_runs": plan.timing.min_runs,
            "max_runs": plan.timing.max_runs,
            "min_seconds": plan.timing.min_seconds,
            "rounds": plan.timing.rounds,
        },
        "machine": machine,
        "flops": {f"{k[0]}.{k[1]}.{k[2]}px": v.as_dict() for k, v in flops_cache.items() if v is not None},
        "rows": rows,
        "skipped": skipped,
        "e2e": e2e,
        "gpu": gpu,
    }
    result["targets"] = evaluate_targets(result)
    result["profiles"] = _profile_misses(manifest, plan, result["targets"], echo)
    json_path = plan.json_path or RESULTS_DIR / f"latency_{'gpu' if gpu['available'] else 'cpu'}.json"
    write_json_atomic(json_path, result)
    markdown = render_markdown(result)
    write_text_atomic(json_path.with_suffix(".md"), markdown)
    echo(markdown)
    print_targets(result["targets"], echo)
    echo(f"wrote {json_path} and {json_path.with_suffix('.md')}")
    return result


def _profile_misses(
    manifest: Any, plan: BenchmarkPlan, targets: Sequence[dict[str, Any]], echo: Echo
) -> dict[str, Any]:
    """Op-level profiles (ORT profiling, OpenVINO perf counts) of the configurations behind missed targets."""
    from stars_edge.modalities import ALL_PATTERNS as patterns

    full = patterns[0]
    if full not in manifest.patterns or (plan.patterns is not None and full not in plan.patterns):
        return {}
    profiles: dict[str, Any] = {}
    for target in targets:
        if target["verdict"] != "MISS":
            continue
        for backend, precision in MISS_PROFILES.get(target["target"], ()):
            key = f"{full} {precision}/{backend}"
            if key in profiles or backend not in plan.backends:
                continue
            echo(f"profiling {key} (missed: {target['target']})")
            profiles[key] = profile_config(manifest, plan, full, backend, precision, min(plan.batches))
    return profiles


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError as exc:
        raise BenchmarkError(f"{option} takes comma-separated integers, got {text!r}") from exc
    if not values or any(v < 0 for v in values):
        raise BenchmarkError(f"{option} takes non-negative integers, got {text!r}")
    return values


def _names(text: str, allowed: tuple[str, ...], option: str) -> tuple[str, ...]:
    names = tuple(v for v in text.replace(" ", "").split(",") if v)
    unknown = [v for v in names if v not in allowed]
    if unknown or not names:
        raise BenchmarkError(f"{option} takes {', '.join(allowed)}; got {text!r}")
    return names


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
        "--e2e-batch",
        type=int,
        default=None,
        help="Tiles per engine call in the end-to-end run (default: what the runtime uses on its backend, "
        "runtime.run_options.default_batch: 4 on OpenVINO, 1 elsewhere; --batch must include it for the "
        "engine-only comparison).",
    )
    parser.add_argument(
        "--e2e-streams",
        type=int,
        default=None,
        help="OpenVINO streams (engine calls in flight) in the end-to-end run and its engine-only timing "
        "(default: what the runtime uses, runtime.run_options.default_streams: 2 on OpenVINO, 1 elsewhere).",
    )
    parser.add_argument(
        "--e2e-scene",
        default="full",
        choices=tuple(E2E_SCENES),
        help="End-to-end scene: full (every modality valid), gaps (clouds and a missing SAR swath, so "
        "tiles run several engines), clouds (about 10 %% cloud), s2like (full stored like Sentinel-2: uint16 "
        "+ scale tag, DEFLATE; also runs s2like_clouds at the largest size) or s2like_clouds.",
    )
    parser.add_argument(
        "--e2e-arrays-max-size",
        type=int,
        default=ARRAYS_MAX_SIZE,
        help="Largest end-to-end scene also run from in-memory arrays for arrays_fraction (default "
        f"{ARRAYS_MAX_SIZE}; its arrays take about 30 bytes per pixel; 0 skips the arrays runs).",
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
    parser.add_argument(
        "--e2e-backend",
        default="auto",
        choices=("auto", "onnxruntime", "openvino", "tensorrt"),
        help="Backend of the end-to-end run (auto: what the runtime picks on this machine).",
    )
    parser.add_argument(
        "--gdal-threads",
        default="auto",
        help="GDAL_NUM_THREADS for end-to-end decoding (auto: ALL_CPUS when more than one core is usable).",
    )
    parser.add_argument(
        "--backends",
        default="onnxruntime,openvino",
        help="CPU backends to time (comma-separated: onnxruntime, openvino); PyTorch rows need --checkpoint.",
    )
    parser.add_argument(
        "--torch-modes",
        default=None,
        help="PyTorch variants (eager, channels_last, compile; default all, --quick: eager,channels_last).",
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
    if args.e2e_arrays_max_size < 0:
        raise BenchmarkError(
            f"--e2e-arrays-max-size takes a size in px (0: no arrays run), got {args.e2e_arrays_max_size}"
        )
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
        e2e_streams=args.e2e_streams,
        e2e_scene=args.e2e_scene,
        e2e_arrays_max_size=args.e2e_arrays_max_size,
        e2e_precision=args.e2e_precision,
        e2e_backend=args.e2e_backend,
        gdal_threads=args.gdal_threads,
        backends=_names(args.backends, ("onnxruntime", "openvino"), "--backends"),
        torch_modes=_names(
            args.torch_modes or ("eager,channels_last" if args.quick else "eager,channels_last,compile"),
            ("eager", "channels_last", "compile"),
            "--torch-modes",
        ),
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
