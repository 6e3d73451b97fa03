"""Round-robin OpenVINO CPU latency of several ONNX files, so they compare on one machine state.

Separate ``benchmarks/latency.py`` runs of the same FP32 file differed by up to 1.8x on this shared VM, so
engines that must be compared (e.g. INT8 graphs with and without layers kept float) are timed here in one
process, interleaved: each round runs every file ``--per-round`` times, and the median over rounds is
reported with its ratio to the first file. Settings as the runtime's OpenVINO backend: one stream,
``--threads`` threads, latency hint, f32 inference precision (INT8 comes from the Q/DQ graph).

    python benchmarks/round_robin.py A.fp32.onnx A.int8.onnx B.int8.onnx --tile 512 --json out.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import load_average, machine_info
from stars_edge.io import write_json_atomic


def time_round_robin(
    files: list[Path], tile: int, threads: int, rounds: int, per_round: int
) -> dict[str, list[float]]:
    """Milliseconds per call of every file, one value per round."""
    import openvino as ov

    core = ov.Core()
    config = {
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_PRECISION_HINT": "f32",
    }
    compiled = [core.compile_model(core.read_model(str(f)), "CPU", config) for f in files]
    rng = np.random.default_rng(0)
    inputs = [
        [rng.standard_normal([1, int(i.get_partial_shape()[1].get_length()), tile, tile]).astype(np.float32)
         for i in model.inputs]
        for model in compiled
    ]  # fmt: skip
    for model, feed in zip(compiled, inputs, strict=True):
        for _ in range(5):
            model(feed)
    times: dict[str, list[float]] = {str(f): [] for f in files}
    for _ in range(rounds):
        for path, model, feed in zip(files, compiled, inputs, strict=True):
            start = time.perf_counter()
            for _ in range(per_round):
                model(feed)
            times[str(path)].append((time.perf_counter() - start) / per_round * 1000)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("files", type=Path, nargs="+", help="ONNX files; ratios are to the first")
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=4)
    parser.add_argument("--json", type=Path, help="write settings, machine and per-file medians here")
    args = parser.parse_args(argv)
    missing = [f for f in args.files if not f.is_file()]
    if missing:
        parser.error(f"no such file: {missing[0]}")
    load_start = load_average()
    times = time_round_robin(args.files, args.tile, args.threads, args.rounds, args.per_round)
    first = float(np.median(times[str(args.files[0])]))
    rows: list[dict[str, Any]] = []
    for path, values in times.items():
        median = float(np.median(values))
        rows.append(
            {
                "file": path,
                "median_ms": round(median, 3),
                "p90_ms": round(float(np.percentile(values, 90)), 3),
                "x_first": round(median / first, 3),
            }
        )
        print(f"{median:8.2f} ms  p90 {rows[-1]['p90_ms']:8.2f}  x{rows[-1]['x_first']:.3f}  {path}")
    print(f"load average {load_start} at start, {load_average()} at end")
    if args.json:
        settings = {k: v for k, v in vars(args).items() if k not in ("files", "json")}
        machine = {**machine_info(args.threads), "load_start": load_start, "load_end": load_average()}
        record = {"settings": {**settings, "command": " ".join(sys.argv)}, "machine": machine, "rows": rows}
        write_json_atomic(args.json, record)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
