"""Render benchmark JSON files into ``benchmarks/REPORT.md`` with PNG plots in ``benchmarks/results/``.

    python benchmarks/report.py [benchmarks/results/*.json] [--out benchmarks/REPORT.md]

Reads latency results (written by ``benchmarks/latency.py``), accuracy results (``accuracy_*.json``,
written by ``benchmarks/accuracy.py``: rows with method, pattern, miou, mf1, per_class_iou, seed, steps),
training speed (``benchmarks/train_speed.py``), ``run-batch`` throughput (``benchmarks/batch.py``), the
runtime's peak memory (``benchmarks/runtime_memory.py``) and the results of the studies that write into
``benchmarks/results/`` (``studies/int8_placement.py``, ``studies/int8_calibration.py``,
``studies/quantizers.py``, ``studies/input_contract.py``, ``studies/hole_training.py``), and renders what
they hold, side by side: latency per pattern and precision, the targets each run measured, the end-to-end
runtime, the INT8 studies, accuracy per method and pattern (mean and spread over seeds), accuracy against
speed for the model variants that have both, then training and runtime throughput and memory, then the input
contract and training on scenes with holes. Only summaries (means, spreads, differences) are computed here;
every number comes from the JSON files. A file's kind is read from its own keys, never from its name.

This module finds and classifies the files and assembles the report; the sections live in
``report_sections``, ``report_training_runtime`` and ``report_studies`` (whose renderers the studies use for
their own Markdown), the plots in ``report_plots``, the shared summaries in ``report_data`` (re-exported
here for ``benchmarks/accuracy.py`` and the tests).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/report.py`: make `benchmarks.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.accuracy_low_label import low_label_lines
from benchmarks.common import RESULTS_DIR, BenchmarkError
from benchmarks.report_data import (
    CONFIG_KEYS,
    ResultSet,
    accuracy_groups,
    has_rows,
    relative,
    speed_accuracy_points,
)
from benchmarks.report_plots import plot_accuracy, plot_latency, plot_speed_accuracy
from benchmarks.report_sections import (
    accuracy_section,
    latency_section,
    speed_accuracy_section,
    summary_lines,
)
from benchmarks.report_studies import (
    hole_training_section,
    input_contract_section,
    int8_calibration_section,
    is_hole_training,
    is_input_contract,
    is_int8_calibration,
    is_placement,
    is_quantizers,
    placement_section,
    quantizers_section,
)
from benchmarks.report_training_runtime import (
    arrays_profile_section,
    contention_section,
    int8_default_tile_section,
    reader_alone_section,
    streams_ab_section,
    thread_cpu_section,
    training_runtime_sections,
)
from stars_edge.errors import StarsEdgeError
from stars_edge.io import write_text_atomic

__all__ = [
    "CONFIG_KEYS",
    "DEFAULT_REPORT",
    "RESULTS_DIR",
    "ResultSet",
    "accuracy_groups",
    "collect",
    "main",
    "plot_accuracy",
    "plot_latency",
    "plot_speed_accuracy",
    "render_report",
    "speed_accuracy_points",
]

DEFAULT_REPORT = RESULTS_DIR.parent / "REPORT.md"


def _schema(data: Mapping[str, Any]) -> str:
    return str(data.get("schema", ""))


def _is_latency(data: Mapping[str, Any]) -> bool:
    return _schema(data).startswith("stars-edge/latency") or has_rows(data, "rows", {"ms_median"})


def _is_accuracy(data: Mapping[str, Any]) -> bool:
    return has_rows(data, "rows", {"method", "pattern", "miou"})


def _is_low_label(data: Mapping[str, Any]) -> bool:
    """``benchmarks/accuracy.py``'s low-label study (``accuracy_low_label.json``)."""
    return _schema(data).startswith("stars-edge/accuracy-low-label")


def _is_train_speed(data: Mapping[str, Any]) -> bool:
    """``benchmarks/train_speed.py``: its schema, or (unversioned) rows of seconds and steps per step."""
    return isinstance(data.get("rows"), list) and (
        _schema(data).startswith("stars-edge/train-speed")
        or has_rows(data, "rows", {"mode", "layout", "seconds_per_step", "steps_per_s"})
    )


def _is_batch(data: Mapping[str, Any]) -> bool:
    """``benchmarks/batch.py``: its schema, or (unversioned) rows of wall times and scenes per minute."""
    return isinstance(data.get("rows"), list) and (
        _schema(data).startswith("stars-edge/batch")
        or has_rows(data, "rows", {"mode", "workers", "wall_s_median", "scenes_per_minute"})
    )


def _is_memory(data: Mapping[str, Any]) -> bool:
    """``benchmarks/runtime_memory.py``: no schema, but its ``benchmark`` name or its per-scene peak RSS."""
    return isinstance(data.get("results"), list) and (
        str(data.get("benchmark", "")).startswith("runtime peak RSS")
        or has_rows(data, "results", {"height", "width", "peak_rss_mib"})
    )


def _is_int8_default_tile(data: Mapping[str, Any]) -> bool:
    """``benchmarks/int8_default_tile.py``: per-tile medians and the INT8 speed-ups."""
    return isinstance(data.get("ms_per_tile"), dict) and "int8_speedup_over_ort_fp32" in data


def _is_arrays_profile(data: Mapping[str, Any]) -> bool:
    """``benchmarks/arrays_profile.py``: seconds per stage of a serial ``predict_arrays``."""
    return isinstance(data.get("stage_seconds"), dict) and "serial_profiled_seconds" in data


def _is_streams_ab(data: Mapping[str, Any]) -> bool:
    """``benchmarks/streams_ab.py``: per-case wall times at each stream count."""
    return isinstance(data.get("streams_ab"), dict) and "streams_compared" in data


def _is_reader_alone(data: Mapping[str, Any]) -> bool:
    """``benchmarks/reader_alone.py``: the reader stage's CPU with nothing else running."""
    return isinstance(data.get("reader_alone"), dict)


def _is_contention(data: Mapping[str, Any]) -> bool:
    """``benchmarks/contention.py``: the CPU floor's own work alone and at once."""
    return isinstance(data.get("contention"), dict)


def _is_thread_cpu(data: Mapping[str, Any]) -> bool:
    """``benchmarks/thread_cpu.py``: a scene's CPU by thread and role."""
    return isinstance(data.get("thread_cpu"), dict)


def collect(paths: Sequence[Path]) -> ResultSet:
    """Load every JSON file and classify it by the keys it holds; files of no known kind are listed."""
    found = ResultSet()
    kinds = (
        (_is_latency, found.latency),
        (_is_accuracy, found.accuracy),
        (is_placement, found.placement),
        (_is_train_speed, found.train_speed),
        (_is_batch, found.batch),
        (_is_memory, found.memory),
        (is_int8_calibration, found.int8_calibration),
        (is_quantizers, found.quantizers),
        (is_input_contract, found.input_contract),
        (is_hole_training, found.hole_training),
        (_is_low_label, found.low_label),
        (_is_int8_default_tile, found.int8_default_tile),
        (_is_arrays_profile, found.arrays_profile),
        (_is_streams_ab, found.streams_ab),
        (_is_reader_alone, found.reader_alone),
        (_is_contention, found.contention),
        (_is_thread_cpu, found.thread_cpu),
    )
    for path in sorted(set(paths)):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            found.skipped.append(f"{path.name}: not readable JSON ({exc})")
            continue
        if not isinstance(data, dict):
            found.skipped.append(f"{path.name}: not a JSON object")
            continue
        kind = next((entries for test, entries in kinds if test(data)), None)
        if kind is None:
            found.skipped.append(f"{path.name}: not a known benchmark result")
        else:
            kind.append((path, data))
    return found


def render_report(paths: Sequence[Path], out: Path = DEFAULT_REPORT, plots_dir: Path = RESULTS_DIR) -> Path:
    """Render every benchmark result in ``paths`` into ``out``; plots go to ``plots_dir``."""
    found = collect(paths)
    if not found.rendered():
        raise BenchmarkError(
            f"no benchmark results among {len(paths)} file(s); run a benchmark first (benchmarks/README.md)"
        )
    base = out.parent
    lines = [
        "# stars-edge benchmark report",
        "",
        "Generated by `python benchmarks/report.py` from the JSON files in `benchmarks/results/`; every "
        "number below was measured by the benchmark or study script each section names "
        "(`benchmarks/latency.py`, `benchmarks/accuracy.py`, `benchmarks/train_speed.py`, "
        "`benchmarks/batch.py`, `benchmarks/runtime_memory.py`, `studies/int8_placement.py`, "
        "`studies/int8_calibration.py`, `studies/quantizers.py`, `studies/input_contract.py`, "
        "`studies/hole_training.py`) on the machine that section describes. How to reproduce: "
        "`benchmarks/README.md`, `studies/README.md`.",
        "",
        *summary_lines(found),
    ]
    for path, data in found.latency:
        plot = plot_latency(data, plots_dir / f"{path.stem}.png")
        lines += latency_section(path, data, plot, base)
    for path, data in found.placement:
        lines += placement_section(path, data)
    for path, data in found.int8_calibration:
        lines += int8_calibration_section(path, data)
    for path, data in found.quantizers:
        lines += quantizers_section(path, data)
    for path, data in found.int8_default_tile:
        lines += int8_default_tile_section(path, data)
    for path, data in found.arrays_profile:
        lines += arrays_profile_section(path, data)
    for path, data in found.streams_ab:
        lines += streams_ab_section(path, data)
    for path, data in found.reader_alone:
        lines += reader_alone_section(path, data)
    for path, data in found.contention:
        lines += contention_section(path, data)
    for path, data in found.thread_cpu:
        lines += thread_cpu_section(path, data)
    for path, data in found.accuracy:
        groups = accuracy_groups(data["rows"])
        plot = plot_accuracy(
            groups, f"{path.stem}: mIoU per available-modality pattern", plots_dir / f"{path.stem}.png"
        )
        lines += accuracy_section(path, data, plot, base)
    points = speed_accuracy_points(found)
    lines += speed_accuracy_section(
        points, plot_speed_accuracy(points, plots_dir / "accuracy_vs_speed.png"), base
    )
    lines += training_runtime_sections(found.train_speed, found.batch, found.memory)
    for path, data in found.input_contract:
        lines += input_contract_section(path, data)
    for path, data in found.hole_training:
        lines += hole_training_section(path, data)
    for path, data in found.low_label:
        plot = path.with_suffix(".png")
        lines += [f"Source: `{path.name}` (`python benchmarks/accuracy.py`).", ""]
        lines += low_label_lines(data, relative(plot, base) if plot.is_file() else None)
        lines.append("")
    if found.skipped:
        lines.append("Files not rendered: " + "; ".join(found.skipped) + ".")
    write_text_atomic(out, "\n".join(lines).rstrip() + "\n")
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Script entry point: domain errors become one line on stderr and exit code 1."""
    parser = argparse.ArgumentParser(
        prog="python benchmarks/report.py",
        description="Render benchmark JSON results into a Markdown report with plots.",
    )
    parser.add_argument(
        "results", nargs="*", type=Path, help="Result JSON files (default: benchmarks/results/*.json)."
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_REPORT, help="Report path (default benchmarks/REPORT.md)."
    )
    parser.add_argument(
        "--plots",
        type=Path,
        default=RESULTS_DIR,
        help="Folder for the PNG plots (default benchmarks/results).",
    )
    args = parser.parse_args(argv)
    paths = list(args.results) or sorted(RESULTS_DIR.glob("*.json"))
    try:
        out = render_report(paths, args.out, args.plots)
    except StarsEdgeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
