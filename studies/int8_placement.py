"""Which INT8 Q/DQ placement is fastest on this CPU, and what do ONNX Runtime and INT8 buy over PyTorch?

For every pattern, in one process with the same thread count and 512x512 tiles, it times PyTorch eager,
ONNX Runtime FP32 and ONNX Runtime INT8 for each TensorRT-legal placement in ``export.quantize.PLACEMENTS``
(plus, as a reference that is *not* shipped, ONNX Runtime's CPU-preferred asymmetric uint8 quantisation,
which TensorRT cannot consume), and measures each INT8 graph's mIoU and agreement against FP32 on held-out
synthetic tiles. Prints a table and writes JSON.

    python studies/int8_placement.py                      # edge variant, briefly trained here
    python studies/int8_placement.py --checkpoint run/best.pt --patterns optical+sar+dsm,sar
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `studies.` and `benchmarks.` importable

from export.gate import predict
from export.onnx_export import export_onnx, simplify_onnx
from export.ort_utils import make_session
from export.quantize import DEFAULT_PLACEMENT, PLACEMENTS, TileCalibrationReader, quantize_int8
from export.tiles import TileSet, load_tiles
from stars_edge.data.synthetic import CLASS_NAMES, synthetic_specs
from stars_edge.io import write_json_atomic
from stars_edge.metrics import argmax_agreement, segmentation_scores
from stars_edge.modalities import ModalitySpec, Pattern, parse_patterns
from stars_edge.models import STARSModel, create_model, export_module
from studies.common import RESULTS_DIR

ASYMMETRIC_REFERENCE = "asymmetric-u8 (reference, not TensorRT-legal)"


def interleaved_median_ms(
    runs: dict[str, Callable[[], object]], repeats: int, warmup: int = 2
) -> dict[str, float]:
    """Median wall time (ms) of each callable, timed round-robin so load drift hits every variant alike."""
    for run in runs.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: statistics.median(values) for name, values in times.items()}


def brief_training(model: STARSModel, tiles: TileSet, steps: int, seed: int = 0) -> STARSModel:
    """A few hundred steps of plain cross-entropy over every pattern: enough for non-trivial logits."""
    from stars_edge.modalities import ALL_PATTERNS

    torch.manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    inputs = {m: torch.from_numpy(a) for m, a in tiles.inputs.items()}
    labels = torch.from_numpy(tiles.labels.astype(np.int64))
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for step in range(steps):
        batch = torch.randint(0, len(tiles), (8,), generator=generator)
        pattern = ALL_PATTERNS[step % len(ALL_PATTERNS)]
        logits = model({m: inputs[m][batch] for m in pattern if m in inputs})
        loss = torch.nn.functional.cross_entropy(logits, labels[batch], ignore_index=255)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 50 == 0:
            print(f"  train step {step}/{steps}: loss {loss.item():.3f}", flush=True)
    return model.eval()


def load_model(args: argparse.Namespace) -> tuple[STARSModel, dict[str, ModalitySpec], str]:
    if args.checkpoint:
        from stars_edge.checkpoint import load_checkpoint

        model, meta = load_checkpoint(args.checkpoint)
        return model, {m: meta.specs[m] for m in meta.in_channels}, f"checkpoint {args.checkpoint}"
    specs = synthetic_specs(4)
    model = create_model(args.variant, {m: s.bands for m, s in specs.items()}, classes=len(CLASS_NAMES))
    train_tiles = load_tiles("synthetic", specs, 64, 128, "calibration")
    print(
        f"training the {args.variant} variant briefly ({args.train_steps} steps on 128 px tiles)", flush=True
    )
    model = brief_training(model, train_tiles, args.train_steps)
    if args.save_checkpoint:
        from stars_edge.checkpoint import CheckpointMeta, save_checkpoint

        meta = CheckpointMeta(
            variant=args.variant,
            method="stars",
            in_channels={m: s.bands for m, s in specs.items()},
            classes=len(CLASS_NAMES),
            class_names=CLASS_NAMES,
            specs=specs,
            tile_size=args.tile,
        )
        print(f"saved {save_checkpoint(args.save_checkpoint, model, meta)} (reuse it with --checkpoint)")
    return model, specs, f"{args.variant} briefly trained here ({args.train_steps} steps)"


def quantize_asymmetric(source: Path, target: Path, tiles: dict[str, np.ndarray]) -> Path:
    """ONNX Runtime's CPU-preferred recipe (uint8 activations, Relu folded away) for comparison only."""
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(
        str(source),
        str(target),
        TileCalibrationReader(tiles),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        per_channel=True,
    )
    return target


def op_counts(optimized: Path) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in onnx.load(str(optimized)).graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


def benchmark_pattern(
    model: STARSModel,
    pattern: Pattern,
    specs: dict[str, ModalitySpec],
    calib: TileSet,
    held_out: TileSet,
    args: argparse.Namespace,
    work: Path,
) -> dict[str, Any]:
    bands = {m: s.bands for m, s in specs.items()}
    module = export_module(model, pattern)
    fp32 = work / f"{pattern}.fp32.onnx"
    export_onnx(module, pattern, bands, fp32, opset=args.opset)
    simplify_onnx(fp32)
    one_tile = {m: held_out.inputs[m][:1] for m in pattern}
    torch_inputs = tuple(torch.from_numpy(one_tile[m]) for m in pattern)

    eval_inputs = held_out.select(pattern.modalities)
    reference = predict(fp32, eval_inputs).classes
    fp32_miou = segmentation_scores(reference, held_out.labels, len(CLASS_NAMES)).miou
    graphs: dict[str, Path] = {}
    for name in [*args.placements, *([ASYMMETRIC_REFERENCE] if args.asymmetric_reference else [])]:
        target = work / f"{pattern}.int8.{name.split()[0]}.onnx"
        calib_inputs = calib.select(pattern.modalities)
        if name == ASYMMETRIC_REFERENCE:
            graphs[name] = quantize_asymmetric(fp32, target, calib_inputs)
        else:
            graphs[name] = quantize_int8(fp32, target, calib_inputs, method=args.calib_method, placement=name)

    def eager() -> object:
        with torch.inference_mode():
            return module(*torch_inputs)

    # PyTorch is timed on its own: its OpenMP workers and ONNX Runtime's pool, alternated, fight over the
    # cores (each side's idle workers spin) and the eager number would measure that fight, not PyTorch.
    timings = interleaved_median_ms({"eager": eager}, args.repeats)
    sessions = {"fp32": make_session(fp32, threads=args.threads, spin=False)}
    for name, path in graphs.items():
        optimized = path.with_suffix(".opt.onnx")
        sessions[name] = make_session(path, threads=args.threads, optimized_model_path=optimized, spin=False)

    def ort_run(session: Any) -> Callable[[], object]:
        return lambda: session.run(None, one_tile)

    timings.update(interleaved_median_ms({n: ort_run(s) for n, s in sessions.items()}, args.repeats))
    result: dict[str, Any] = {
        "pattern": str(pattern),
        "eager_ms": timings["eager"],
        "ort_fp32_ms": timings["fp32"],
        "ort_vs_eager": timings["eager"] / timings["fp32"],
        "fp32_miou": fp32_miou,
        "int8": {},
    }
    for name, path in graphs.items():
        classes = predict(path, eval_inputs).classes
        miou = segmentation_scores(classes, held_out.labels, len(CLASS_NAMES)).miou
        counts = op_counts(path.with_suffix(".opt.onnx"))
        result["int8"][name] = {
            "ms": timings[name],
            "speedup_vs_fp32": timings["fp32"] / timings[name],
            "miou": miou,
            "miou_lost": fp32_miou - miou,
            "agreement": argmax_agreement(classes, reference),
            "integer_ops": {k: v for k, v in counts.items() if k.startswith("QLinear")},
            "float_convs": counts.get("Conv", 0) + counts.get("FusedConv", 0),
        }
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", help="trained checkpoint; default: train --variant briefly here")
    parser.add_argument("--variant", default="edge", help="model variant when no checkpoint is given")
    parser.add_argument(
        "--train-steps", type=int, default=150, help="brief training steps without --checkpoint"
    )
    parser.add_argument("--save-checkpoint", help="save the briefly trained model here for later runs")
    parser.add_argument("--patterns", default="all", help="'all' or a comma-separated list of patterns")
    parser.add_argument("--placements", default=",".join(PLACEMENTS), help="comma-separated INT8 placements")
    parser.add_argument(
        "--asymmetric-reference",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time ONNX Runtime's asymmetric uint8 recipe (not TensorRT-legal)",
    )
    parser.add_argument("--tile", type=int, default=512, help="tile size for timing and accuracy")
    parser.add_argument(
        "--threads", type=int, default=2, help="intra-op threads for PyTorch and ONNX Runtime"
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed runs per measurement (median reported)")
    parser.add_argument("--calib-tiles", type=int, default=8, help="calibration tiles per pattern")
    parser.add_argument("--calib-method", default="minmax", help="minmax, entropy or percentile")
    parser.add_argument("--eval-tiles", type=int, default=4, help="held-out tiles for mIoU/agreement")
    parser.add_argument("--opset", type=int, default=17, help="ONNX opset")
    parser.add_argument("--out", default=str(RESULTS_DIR / "int8_placement.json"), help="JSON output path")
    args = parser.parse_args(argv)
    args.placements = [p.strip() for p in args.placements.split(",") if p.strip()]
    torch.set_num_threads(args.threads)

    model, specs, model_note = load_model(args)
    patterns = parse_patterns(args.patterns, available=tuple(specs))
    calib = load_tiles("synthetic", specs, args.calib_tiles, args.tile, "calibration")
    held_out = load_tiles("synthetic", specs, args.eval_tiles, args.tile, "gate")
    results = []
    with tempfile.TemporaryDirectory(prefix="int8_placement_") as tmp:
        for pattern in patterns:
            print(f"benchmarking {pattern} ...", flush=True)
            results.append(benchmark_pattern(model, pattern, specs, calib, held_out, args, Path(tmp)))

    print(f"\nmodel: {model_note}; tile {args.tile}px, {args.threads} threads, median of {args.repeats}")
    print(
        f"{'pattern':<16} {'eager':>8} {'ortFP32':>8} {'ort/eag':>7} | {'placement':<22} {'int8 ms':>8} "
        f"{'x FP32':>6} {'mIoU lost':>9} {'agree%':>7}"
    )
    for row in results:
        first = True
        for name, item in row["int8"].items():
            head = (
                f"{row['pattern']:<16} {row['eager_ms']:>8.1f} {row['ort_fp32_ms']:>8.1f} "
                f"{row['ort_vs_eager']:>7.2f}"
                if first
                else " " * 42
            )
            print(
                f"{head} | {name.split()[0]:<22} {item['ms']:>8.1f} {item['speedup_vs_fp32']:>6.2f} "
                f"{item['miou_lost']:>9.2f} {item['agreement']:>7.2f}"
            )
            first = False
    summary = {}
    for name in results[0]["int8"]:
        speedups = [row["int8"][name]["speedup_vs_fp32"] for row in results]
        summary[name] = float(np.exp(np.mean(np.log(speedups))))
    legal = {k: v for k, v in summary.items() if k != ASYMMETRIC_REFERENCE}
    fastest = max(legal, key=lambda k: legal[k])
    ort_gain = float(np.exp(np.mean(np.log([row["ort_vs_eager"] for row in results]))))
    print(f"\ngeometric mean ORT FP32 vs eager: {ort_gain:.2f}x")
    for name, value in summary.items():
        print(f"geometric mean INT8 vs FP32, {name}: {value:.2f}x")
    print(f"fastest TensorRT-legal placement: {fastest} (export default: {DEFAULT_PLACEMENT})")
    payload = {
        "model": model_note,
        "tile": args.tile,
        "threads": args.threads,
        "repeats": args.repeats,
        "cpu": platform.processor() or platform.machine(),
        "onnxruntime": __import__("onnxruntime").__version__,
        "torch": torch.__version__,
        "patterns": results,
        "geomean_int8_speedup": summary,
        "geomean_ort_vs_eager": ort_gain,
        "fastest_legal_placement": fastest,
        "default_placement": DEFAULT_PLACEMENT,
    }
    print(f"wrote {write_json_atomic(args.out, payload)}")


if __name__ == "__main__":
    main()
