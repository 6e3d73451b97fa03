"""INT8 quantizers compared through the build's own accuracy gate: ours vs OpenVINO's NNCF vs NVIDIA ModelOpt.

For each quantizer, ``build_engines`` writes FP32 + INT8 for every pattern into its own folder (same
calibration, control and gate tiles, same gate budget), and the table reports per pattern the mIoU each INT8
graph loses against FP32 on ONNX Runtime and on OpenVINO, its argmax agreement, the layers accuracy control
kept float, and the Q/DQ placement (QuantizeLinear / DequantizeLinear counts, convolutions run INT8, and
which of them differ from ours).

    python studies/quantizers.py --checkpoint runs/edge/checkpoint.pt --work /tmp/quantizers
    python studies/quantizers.py --checkpoint ... --work /tmp/quantizers --latency   # quiet machine only

``--latency`` (**run it on a quiet machine**; the shared development VM's timings are noise) times every
pattern's FP32 file and each quantizer's INT8 file interleaved in one process per backend (OpenVINO with the
runtime's settings via ``benchmarks/round_robin.py``, ONNX Runtime CPU with ``--threads`` intra-op threads),
so the ratios share one machine state, and fills the table's latency columns. The engines are reused when
up to date (the build skips them), so ``--latency`` after an accuracy run only times.

Writes ``benchmarks/results/quantizers.{json,md}`` (``--out``); the Markdown comes from
``benchmarks/report_studies.py``, which also renders the JSON into ``benchmarks/REPORT.md``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `studies.` and `benchmarks.` importable

from benchmarks.common import load_average, machine_info
from benchmarks.report_studies import quantizers_lines
from export.build import BuildOptions, build_engines
from export.quantizers import QUANTIZERS, qdq_summary, quantizer_unavailable
from stars_edge.io import write_json_atomic, write_text_atomic
from stars_edge.manifest import Manifest, load_manifest
from studies.common import RESULTS_DIR

RESULTS = RESULTS_DIR
BACKENDS = ("onnxruntime", "openvino")


def build(args: argparse.Namespace, quantizer: str) -> Manifest:
    """FP32 + INT8 for every pattern by ``quantizer`` in ``work/<quantizer>`` (up-to-date files are kept)."""
    options = BuildOptions(
        checkpoint=args.checkpoint,
        out=args.work / quantizer,
        patterns=args.patterns,
        precisions=("fp32", "int8"),
        calib_tiles=args.calib_tiles,
        control_tiles=args.control_tiles,
        gate_tiles=args.gate_tiles,
        gate_budget=args.gate_budget,
        tile=args.tile,
        quantizer=quantizer,
        progress=False,
    )
    build_engines(options, log=lambda line: print(f"[{quantizer}] {line}", flush=True))
    return load_manifest(args.work / quantizer)


def rows_of(manifest: Manifest, folder: Path, quantizer: str) -> list[dict[str, Any]]:
    """One row per pattern: gate result per backend, float layers, Q/DQ placement."""
    rows = []
    entries = [e for e in manifest.engines if e.precision == "int8" and e.backend == "onnxruntime"]
    for entry in entries:
        accuracy: dict[str, Any] = dict(entry.accuracy or {})
        by_backend = accuracy.get("by_backend") or {"onnxruntime": accuracy}
        summary = qdq_summary(onnx.load(str(folder / entry.path)))
        quantized = set(summary.pop("quantized_conv_names"))
        rows.append(
            {
                "quantizer": quantizer,
                "pattern": str(entry.pattern),
                "path": str(folder / entry.path),
                "fp32_path": str(folder / f"{entry.pattern}.fp32.onnx"),
                "gate": accuracy.get("gate"),
                "miou_drop": {b: by_backend.get(b, {}).get("miou_drop") for b in BACKENDS},
                "agreement": {b: by_backend.get(b, {}).get("agreement_with_fp32") for b in BACKENDS},
                "float_layers": list(entry.quantization.get("float_layers", [])),
                "control_drop_before": entry.quantization.get("control_miou_drop_before"),
                "tile": entry.tile_size,
                "tensorrt_legal": entry.quantization.get("tensorrt_legal", True),
                "qdq": summary,
                "quantized_convs_set": sorted(quantized),
            }
        )
    return rows


def compare_with_ours(rows: list[dict[str, Any]]) -> None:
    """Per row, the convolutions it quantizes that ours does not, and the reverse (in place)."""
    ours = {r["pattern"]: set(r["quantized_convs_set"]) for r in rows if r["quantizer"] == "ours"}
    for row in rows:
        mine, reference = set(row["quantized_convs_set"]), ours.get(row["pattern"])
        if reference is None:
            continue
        row["vs_ours"] = {
            "only_here": sorted(mine - reference),
            "only_ours": sorted(reference - mine),
            "both": len(mine & reference),
        }


def measure_latency(rows: list[dict[str, Any]], tile: int, threads: int, rounds: int) -> dict[str, Any]:
    """Interleaved FP32 / INT8 latency per pattern and backend; adds ``latency_ms`` to each row (in place)."""
    from benchmarks.round_robin import time_round_robin
    from export.ort_utils import make_session

    patterns = sorted({r["pattern"] for r in rows})
    record: dict[str, Any] = {"load_start": load_average()}
    for pattern in patterns:
        group = [r for r in rows if r["pattern"] == pattern]
        files = [Path(group[0]["fp32_path"]), *(Path(r["path"]) for r in group)]
        openvino = time_round_robin(files, tile, threads, rounds, 4)
        sessions = [make_session(f, threads=threads, spin=False) for f in files]
        onnxruntime: dict[str, list[float]] = {str(f): [] for f in files}
        rng = np.random.default_rng(0)
        feeds = [
            {
                i.name: rng.standard_normal([1, i.shape[1], tile, tile]).astype(np.float32)
                for i in s.get_inputs()
            }
            for s in sessions
        ]
        for session, feed in zip(sessions, feeds, strict=True):
            session.run(None, feed)
        for _ in range(rounds):
            for path, session, feed in zip(files, sessions, feeds, strict=True):
                start = time.perf_counter()
                session.run(None, feed)
                onnxruntime[str(path)].append((time.perf_counter() - start) * 1000)
        for backend, times in (("openvino", openvino), ("onnxruntime", onnxruntime)):
            fp32 = float(np.median(times[str(files[0])]))
            for row in group:
                int8 = float(np.median(times[row["path"]]))
                row.setdefault("latency_ms", {})[backend] = {
                    "fp32": round(fp32, 3),
                    "int8": round(int8, 3),
                    "x_fp32": round(int8 / fp32, 3),
                }
    record["load_end"] = load_average()
    return record


def markdown(result: dict[str, Any]) -> str:
    """Accuracy table, latency table (or its placeholder), placement table."""
    title = "# INT8 quantizers through the accuracy gate"
    return "\n".join([title, "", *quantizers_lines(result, heading="##")]) + "\n"


def summarize(rows: list[dict[str, Any]]) -> dict[str, dict[str, float | None]]:
    """Worst and mean mIoU drop per quantizer."""
    summary: dict[str, dict[str, float | None]] = {}
    for quantizer in dict.fromkeys(r["quantizer"] for r in rows):
        mine = [r for r in rows if r["quantizer"] == quantizer]
        stats: dict[str, float | None] = {}
        for backend in BACKENDS:
            values = [r["miou_drop"][backend] for r in mine if r["miou_drop"][backend] is not None]
            stats[f"mean_{backend}"] = round(float(np.mean(values)), 3) if values else None
        every = [v for r in mine for v in r["miou_drop"].values() if v is not None]
        stats["worst"] = max(every) if every else None
        summary[quantizer] = stats
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", type=Path, required=True, help="Trained checkpoint (.pt).")
    parser.add_argument("--work", type=Path, required=True, help="Engine folders go to WORK/<quantizer>.")
    parser.add_argument("--quantizers", default=",".join(QUANTIZERS), help="Comma-separated quantizers.")
    parser.add_argument("--patterns", default="all")
    parser.add_argument("--calib-tiles", type=int, default=32)
    parser.add_argument("--control-tiles", type=int, default=32)
    parser.add_argument("--gate-tiles", type=int, default=64)
    parser.add_argument("--gate-budget", type=float, default=0.5)
    parser.add_argument(
        "--tile", type=int, default=None, help="Engine/gate tile size (default: checkpoint's)."
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "quantizers.json", help="JSON; .md beside it.")
    parser.add_argument(
        "--latency",
        action="store_true",
        help="Also time FP32/INT8 per quantizer (OpenVINO, ONNX Runtime; interleaved). Quiet machine only.",
    )
    parser.add_argument("--latency-tile", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    quantizers = [q.strip() for q in args.quantizers.split(",") if q.strip()]
    unknown = [q for q in quantizers if q not in QUANTIZERS]
    if unknown:
        parser.error(f"unknown quantizer {unknown[0]!r}; choose {', '.join(QUANTIZERS)}")
    rows: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    for quantizer in quantizers:
        reason = quantizer_unavailable(quantizer)
        if reason is not None:
            skipped[quantizer] = reason
            print(f"skipping {quantizer}: {reason}", flush=True)
            continue
        rows += rows_of(build(args, quantizer), args.work / quantizer, quantizer)
    compare_with_ours(rows)
    result: dict[str, Any] = {
        "settings": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "command": " ".join(sys.argv),
        },
        "machine": machine_info(args.threads),
        "tile": rows[0]["tile"] if rows else args.tile,
        "skipped": skipped,
        "summary": summarize(rows),
        "rows": rows,
    }
    if args.latency:
        timing = measure_latency(rows, args.latency_tile, args.threads, args.rounds)
        result["latency"] = {
            "tile": args.latency_tile,
            "threads": args.threads,
            "rounds": args.rounds,
            **timing,
        }
    write_json_atomic(args.out, result)
    text = markdown(result)
    write_text_atomic(args.out.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
