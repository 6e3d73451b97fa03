"""INT8 calibration methods compared per pattern: how close each INT8 graph stays to FP32.

For each pattern of a build folder's FP32 graphs, every calibration method quantizes the graph on the build's
calibration tiles (synthetic calibration seeds). Two measurements per graph:

- **selection** (calibration tiles): mean relative logit error and argmax agreement against FP32. The default
  method is chosen on this, never on the gate's tiles.
- **report** (held-out gate tiles, the build's): mIoU lost against FP32 and agreement.

    python studies/int8_calibration.py --engines ENGINES --checkpoint CKPT [--methods minmax,percentile]

Writes ``benchmarks/results/int8_calibration.{json,md}`` (``--out``); the Markdown comes from
``benchmarks/report_studies.py``, which also renders the JSON into ``benchmarks/REPORT.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `studies.` and `benchmarks.` importable

from benchmarks.common import machine_info
from benchmarks.report_studies import int8_calibration_lines
from export.accuracy_control import logit_error
from export.ort_utils import make_session, run_logits
from export.quantize import CALIBRATION_METHODS, quantize_int8
from export.tiles import load_tiles
from stars_edge.io import write_json_atomic, write_text_atomic
from stars_edge.manifest import load_manifest
from stars_edge.metrics import argmax_agreement, segmentation_scores
from stars_edge.modalities import Pattern, parse_patterns
from studies.common import RESULTS_DIR


def compare(
    engines: Path, methods: list[str], patterns: list[Pattern], calib_tiles: int, gate_tiles: int, tile: int
) -> list[dict[str, Any]]:
    """One row per pattern x method."""
    manifest = load_manifest(engines, verify=False)
    specs = dict(manifest.modalities)
    classes, ignore = manifest.model.classes, manifest.model.ignore_index
    calibration = load_tiles("synthetic", specs, calib_tiles, tile, "calibration")
    gate = load_tiles("synthetic", specs, gate_tiles, tile, "gate")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for pattern in patterns:
            fp32 = engines / f"{pattern}.fp32.onnx"
            xc, xg = calibration.select(pattern.modalities), gate.select(pattern.modalities)
            session = make_session(fp32)
            ref_c, ref_g = run_logits(session, xc), run_logits(session, xg)
            base = segmentation_scores(ref_g.argmax(1), gate.labels, classes, ignore).miou
            for method in methods:
                path = quantize_int8(fp32, Path(scratch) / f"{pattern}.{method}.onnx", xc, method)
                quantized = make_session(path)
                out_c, out_g = run_logits(quantized, xc), run_logits(quantized, xg)
                miou = segmentation_scores(out_g.argmax(1), gate.labels, classes, ignore).miou
                row = {
                    "pattern": str(pattern),
                    "method": method,
                    "calib_logit_error": round(logit_error(out_c, ref_c), 5),
                    "calib_agreement": round(argmax_agreement(out_c.argmax(1), ref_c.argmax(1)), 3),
                    "gate_miou_drop": round(base - miou, 3),
                    "gate_agreement": round(argmax_agreement(out_g.argmax(1), ref_g.argmax(1)), 3),
                }
                print(json.dumps(row), flush=True)
                rows.append(row)
    return rows


def markdown(rows: list[dict[str, Any]], settings: dict[str, Any]) -> str:
    title = "# INT8 calibration methods (`python studies/int8_calibration.py`)"
    return "\n".join([title, "", *int8_calibration_lines(rows, settings)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--engines", type=Path, required=True, help="a build folder with <pattern>.fp32.onnx")
    parser.add_argument("--methods", default="minmax,percentile", help=f"of {', '.join(CALIBRATION_METHODS)}")
    parser.add_argument("--patterns", default="all")
    parser.add_argument("--calib-tiles", type=int, default=32)
    parser.add_argument("--gate-tiles", type=int, default=64)
    parser.add_argument("--tile", type=int, default=128)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "int8_calibration")
    args = parser.parse_args(argv)
    methods = args.methods.split(",")
    unknown = [m for m in methods if m not in CALIBRATION_METHODS]
    if unknown:
        parser.error(f"unknown method {unknown[0]!r}; choose from {', '.join(CALIBRATION_METHODS)}")
    manifest = load_manifest(args.engines, verify=False)
    patterns = list(parse_patterns(args.patterns, available=tuple(manifest.modalities)))
    settings = {
        "engines": str(args.engines),
        "checkpoint_sha256": manifest.model.checkpoint_sha256,
        "calib_tiles": args.calib_tiles,
        "gate_tiles": args.gate_tiles,
        "tile": args.tile,
        "command": " ".join(sys.argv),
    }
    machine = machine_info(threads=0)
    rows = compare(args.engines, methods, patterns, args.calib_tiles, args.gate_tiles, args.tile)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out.with_suffix(".json"), {"settings": settings, "machine": machine, "rows": rows})
    write_text_atomic(args.out.with_suffix(".md"), markdown(rows, settings))
    print(markdown(rows, settings))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
