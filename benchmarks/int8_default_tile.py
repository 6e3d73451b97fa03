"""INT8 against ONNX Runtime FP32 at the runtime's default tile, interleaved in one process (issue 21).

Single engine calls at 256 px vary by up to 1.6x between runs on a shared VM, so the configurations compared
here run round-robin in one process: each round times every (backend, precision, batch) of the full pattern's
engine, with the runtime's own engine settings (``runtime.engines.EngineSet``), and the median over rounds
is reported per tile. Engines with several streams (OpenVINO's default) are timed with a call in flight per
stream (``Predictor.measure_latency``); so that the baseline gets the same, ONNX Runtime FP32 is also timed
as two single-thread sessions calls in flight at once (``onnxruntime fp32 2x1``), and "best of each" takes
its faster form. Ratios: same batch, best of each, and what the runtime runs by default
(``runtime.run_options.default_batch`` per backend).

    python benchmarks/int8_default_tile.py --engines demo_out/engines --json out.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, machine_info
from benchmarks.latency_plan import FULL_PATTERN as FULL
from runtime.cpus import usable_cores
from stars_edge.io import write_json_atomic

#: (backend, precision, threads, calls in flight; None: the runtime's) timed, by label. Each INT8 one against
#: the best ONNX Runtime FP32 one (ONNX Runtime's INT8 is worth running only with NNCF's uint8 activations).
CONFIGS: dict[str, tuple[str, str, int | None, int | None]] = {
    "openvino int8": ("openvino", "int8", None, None),
    "onnxruntime int8": ("onnxruntime", "int8", None, None),
    "onnxruntime fp32": ("onnxruntime", "fp32", None, None),
    "onnxruntime fp32 2x1": ("onnxruntime", "fp32", 1, 2),
    "openvino fp32": ("openvino", "fp32", None, None),
}


def time_interleaved(
    engines_dir: Path, tile: int | None, batches: tuple[int, ...], rounds: int, calls: int
) -> tuple[int, dict[str, list[float]]]:
    """Milliseconds per tile of every configuration, one median per round (``Predictor.measure_latency``:
    two warm-up calls, then ``calls`` timed ones); and the tile used."""
    from runtime import Predictor

    predictors = {
        label: Predictor(
            engines_dir, backend=backend, precision=precision, threads=threads, allow_flagged=True
        )
        for label, (backend, precision, threads, _) in CONFIGS.items()
    }
    tile = next(iter(predictors.values())).manifest.tile_size if tile is None else tile
    times: dict[str, list[float]] = {}
    try:
        for _ in range(rounds):
            for label, predictor in predictors.items():
                for batch in batches:
                    ms = predictor.measure_latency(
                        tile, runs=calls, warmup=2, batch=batch, patterns=[FULL], in_flight=CONFIGS[label][3]
                    )
                    times.setdefault(f"{label} batch {batch}", []).append(ms[FULL.name] / batch)
    finally:
        for predictor in predictors.values():
            predictor.close()
    return tile, times


def ratios(ms: dict[str, float], batches: tuple[int, ...]) -> dict[str, float]:
    """INT8 speed-ups over ONNX Runtime FP32: OpenVINO's per batch (the runtime's forms), best of each (every
    form timed of either, ONNX Runtime's two-in-flight form included when timed) and at each backend's
    default batch; the best INT8 of any backend timed; ONNX Runtime's INT8 over its own FP32 at its default
    batch (when timed)."""
    from runtime.run_options import default_batch

    def at(label: str, batch: int) -> float:
        return ms[f"{label} batch {batch}"]

    result = {f"batch {b}": at("onnxruntime fp32", b) / at("openvino int8", b) for b in batches}
    best_int8 = min(at("openvino int8", b) for b in batches)
    baselines = [key for key in ms if key.startswith("onnxruntime fp32")]
    result["best of each"] = min(ms[key] for key in baselines) / best_int8
    ov, ort = default_batch("openvino"), default_batch("onnxruntime")
    if ov in batches and ort in batches:
        result["runtime defaults"] = at("onnxruntime fp32", ort) / at("openvino int8", ov)
    int8 = [key for key in ms if " int8 batch " in key]
    result["best INT8 of any backend"] = min(ms[key] for key in baselines) / min(ms[key] for key in int8)
    if ort in batches and f"onnxruntime int8 batch {ort}" in ms:
        result["onnxruntime int8 over its fp32"] = at("onnxruntime fp32", ort) / at("onnxruntime int8", ort)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--engines", type=Path, required=True, help="engine folder with FP32 and INT8 engines"
    )
    parser.add_argument("--tile", type=int, default=None, help="tile in px (default: the manifest's)")
    parser.add_argument("--batch", default="1,4", help="comma-separated batch sizes (default 1,4)")
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--calls", type=int, default=15, help="timed calls per configuration and round")
    parser.add_argument("--json", type=Path, help="write settings, machine, medians and ratios here")
    args = parser.parse_args(argv)
    if not (args.engines / "manifest.json").is_file():
        parser.error(f"{args.engines}: no manifest.json; pass a folder written by stars-edge build-engines")
    batches = tuple(int(b) for b in args.batch.split(","))
    load_start = load_average()
    tile, times = time_interleaved(args.engines, args.tile, batches, args.rounds, args.calls)
    medians = {key: round(float(np.median(values)), 3) for key, values in times.items()}
    for key, value in medians.items():
        print(f"{value:8.3f} ms per tile  {key}")
    speedups = {key: round(value, 3) for key, value in ratios(medians, batches).items()}
    for key, value in speedups.items():
        print(f"INT8 vs ONNX Runtime FP32, {key}: {value:.2f}x")
    print(f"tile {tile}; load average {load_start} at start, {load_average()} at end")
    if args.json:
        machine = {**machine_info(usable_cores()), "load_start": load_start, "load_end": load_average()}
        settings = {"tile": tile, "batches": list(batches), "rounds": args.rounds, "calls": args.calls}
        record = {
            "command": " ".join(sys.argv),
            "engines": str(args.engines),
            "settings": settings,
            "machine": machine,
            "ms_per_tile": medians,
            "int8_speedup_over_ort_fp32": speedups,
        }
        write_json_atomic(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
