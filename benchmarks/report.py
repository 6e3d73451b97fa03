"""Render benchmark JSON files into ``benchmarks/REPORT.md`` with PNG plots in ``benchmarks/results/``.

    python benchmarks/report.py [benchmarks/results/*.json] [--out benchmarks/REPORT.md]

Reads latency results (written by ``benchmarks/latency.py``), accuracy results (``accuracy_*.json``,
written by ``benchmarks/accuracy.py``: rows with method, pattern, miou, mf1, per_class_iou, seed, steps) and
the INT8 placement study (``benchmarks/int8_placement.py``) and renders what they hold, side by side:
latency per pattern and precision, the targets each run measured, the end-to-end runtime, accuracy per
method and pattern (mean and spread over seeds), and accuracy against speed for the model variants that
have both. Only summaries (means, spreads) are computed here; every number comes from the JSON files.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as `python benchmarks/report.py`: make `benchmarks.` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    BenchmarkError,
    e2e_lines,
    engine_table,
    fmt,
    gpu_lines,
    skipped_lines,
    targets_table,
)
from stars_edge.errors import StarsEdgeError
from stars_edge.io import atomic_path, write_text_atomic
from stars_edge.modalities import ALL_PATTERNS, Pattern

BENCHMARKS_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
DEFAULT_REPORT = BENCHMARKS_DIR / "REPORT.md"


@dataclass
class ResultSet:
    """The JSON files found, split by kind; ``skipped`` says which were not benchmark results and why."""

    latency: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    accuracy: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    placement: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def _is_latency(data: Mapping[str, Any]) -> bool:
    rows = data.get("rows")
    return str(data.get("schema", "")).startswith("stars-edge/latency") or (
        isinstance(rows, list) and bool(rows) and isinstance(rows[0], dict) and "ms_median" in rows[0]
    )


def _is_accuracy(data: Mapping[str, Any]) -> bool:
    rows = data.get("rows")
    return (
        isinstance(rows, list)
        and bool(rows)
        and isinstance(rows[0], dict)
        and {"method", "pattern", "miou"} <= set(rows[0])
    )


def _is_placement(data: Mapping[str, Any]) -> bool:
    return isinstance(data.get("geomean_int8_speedup"), dict) and isinstance(data.get("patterns"), list)


def collect(paths: Sequence[Path]) -> ResultSet:
    """Load every JSON file and classify it as a latency or an accuracy result."""
    found = ResultSet()
    for path in sorted(set(paths)):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            found.skipped.append(f"{path.name}: not readable JSON ({exc})")
            continue
        if not isinstance(data, dict):
            found.skipped.append(f"{path.name}: not a JSON object")
        elif _is_latency(data):
            found.latency.append((path, data))
        elif _is_accuracy(data):
            found.accuracy.append((path, data))
        elif _is_placement(data):
            found.placement.append((path, data))
        else:
            found.skipped.append(f"{path.name}: neither a latency nor an accuracy result")
    return found


def _pattern_order(name: str) -> int:
    try:
        return ALL_PATTERNS.index(Pattern.parse(name))
    except StarsEdgeError:
        return len(ALL_PATTERNS)


def _relative(path: Path, start: Path) -> str:
    try:
        return str(path.resolve().relative_to(start.resolve()))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------------------
# Plots
# --------------------------------------------------------------------------------------------------------


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        figure.savefig(tmp, dpi=100, format="png")
    _pyplot().close(figure)
    return path


def plot_latency(data: Mapping[str, Any], path: Path) -> Path | None:
    """Grouped bars: ms per tile (log scale) per pattern, one bar per precision/backend/device at the
    smallest batch, with Mpx/s on top of each bar."""
    rows = data["rows"]
    if not rows:
        return None
    batch = min(r["batch"] for r in rows)
    rows = [r for r in rows if r["batch"] == batch]
    patterns = sorted({r["pattern"] for r in rows}, key=_pattern_order)
    kinds = sorted({(r["device"], r["backend"], r["precision"]) for r in rows})
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(8.0, 1.6 * len(patterns) + 2), 5.0), constrained_layout=True)
    width = 0.8 / max(len(kinds), 1)
    for k, kind in enumerate(kinds):
        values = []
        for pattern in patterns:
            match = [
                r
                for r in rows
                if (r["device"], r["backend"], r["precision"]) == kind and r["pattern"] == pattern
            ]
            values.append(match[0]["ms_per_tile"] if match else float("nan"))
        positions = [i + (k - (len(kinds) - 1) / 2) * width for i in range(len(patterns))]
        bars = axis.bar(positions, values, width, label=f"{kind[2]} {kind[1]} ({kind[0]})")
        for bar, pattern in zip(bars, patterns, strict=True):
            match = [
                r
                for r in rows
                if (r["device"], r["backend"], r["precision"]) == kind and r["pattern"] == pattern
            ]
            if match:
                axis.annotate(
                    f"{match[0]['mpx_per_s']:.1f}",
                    (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    axis.set_xticks(range(len(patterns)))
    axis.set_xticklabels(patterns, rotation=20, ha="right")
    axis.set_yscale("log")
    axis.set_ylabel(f"ms per {data['tile']}x{data['tile']} tile (median, batch {batch}; log)")
    axis.set_title(
        f"Engine latency per pattern and precision (labels: Mpx/s) - {data['machine']['cpu_model']}, "
        f"{data['machine']['threads']} threads",
        fontsize=10,
    )
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def _accuracy_rows(found: ResultSet) -> list[dict[str, Any]]:
    """Accuracy rows with the file's variant attached when the row lacks one."""
    rows = []
    for _path, data in found.accuracy:
        file_variant = data.get("variant") or (data.get("config") or {}).get("variant")
        for row in data["rows"]:
            rows.append({**row, "variant": row.get("variant") or file_variant})
    return rows


def _mean_spread(values: Sequence[float]) -> tuple[float, float | None]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


#: Row fields that make two accuracy rows different configurations; seeds are averaged over, these are not.
CONFIG_KEYS: tuple[str, ...] = (
    "variant",
    "method",
    "lambda_tr",
    "lambda_psa",
    "trained_modalities",
    "steps",
    "tile_size",
    "experiment",
)


def accuracy_groups(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Rows grouped by configuration (method plus whichever ``CONFIG_KEYS`` vary within the file), in order
    of first appearance; the rows of a group differ only by seed."""
    varying = [k for k in CONFIG_KEYS if k != "method" and len({json.dumps(r.get(k)) for r in rows}) > 1]
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        label = str(row["method"]) + "".join(f", {k}={row.get(k)}" for k in varying)
        groups.setdefault(label, []).append(row)
    return groups


def plot_accuracy(groups: Mapping[str, Sequence[Mapping[str, Any]]], title: str, path: Path) -> Path | None:
    """Grouped bars: mIoU per pattern for every configuration (mean over seeds, error bar = std)."""
    rows = [r for group in groups.values() for r in group]
    if not rows:
        return None
    patterns = sorted({r["pattern"] for r in rows}, key=_pattern_order)
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(8.0, 1.5 * len(patterns) + 3), 5.0), constrained_layout=True)
    width = 0.8 / max(len(groups), 1)
    for k, (label, group) in enumerate(groups.items()):
        means, errors = [], []
        for pattern in patterns:
            values = [float(r["miou"]) for r in group if r["pattern"] == pattern and r["miou"] is not None]
            mean, spread = _mean_spread(values) if values else (float("nan"), None)
            means.append(mean)
            errors.append(spread or 0.0)
        positions = [i + (k - (len(groups) - 1) / 2) * width for i in range(len(patterns))]
        axis.bar(positions, means, width, yerr=errors, capsize=2, label=label)
    axis.set_xticks(range(len(patterns)))
    axis.set_xticklabels(patterns, rotation=20, ha="right")
    axis.set_ylabel("mIoU (%)")
    axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7)
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, path)


def speed_accuracy_points(found: ResultSet) -> list[dict[str, Any]]:
    """Per model variant and training length with both results: full-pattern STARS mIoU (mean over runs)
    against the fastest full-pattern CPU engine of that variant (measured runs preferred to quick ones)."""
    full = ALL_PATTERNS[0].name
    speed: dict[str, dict[str, Any]] = {}
    for _path, data in sorted(found.latency, key=lambda item: not item[1].get("quick")):
        variant = data.get("model", {}).get("variant")
        if data.get("quick") and variant in speed:
            continue
        for row in data["rows"]:
            if row["pattern"] == full and row["device"] == "cpu" and row["backend"] != "pytorch":
                best = speed.get(variant)
                if best is None or best.get("quick") or row["mpx_per_s"] > best["mpx_per_s"]:
                    speed[variant] = {**row, "quick": bool(data.get("quick"))}
    runs: dict[tuple[str, Any], list[float]] = defaultdict(list)
    for row in _accuracy_rows(found):
        if (
            row["pattern"] == full
            and row["method"] == "stars"
            and row.get("variant")
            and "sweep" not in str(row.get("experiment", ""))  # sweeps vary the loss weights on purpose
            and row["miou"] is not None
        ):
            runs[(row["variant"], row.get("steps"))].append(float(row["miou"]))
    points = []
    for (variant, steps), mious in runs.items():
        if variant in speed:
            fastest = speed[variant]
            points.append(
                {
                    "variant": variant,
                    "steps": steps,
                    "runs": len(mious),
                    "miou": statistics.fmean(mious),
                    "mpx_per_s": fastest["mpx_per_s"],
                    "precision": fastest["precision"],
                    "backend": fastest["backend"],
                    "batch": fastest["batch"],
                }
            )
    return points


def plot_speed_accuracy(points: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    if not points:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4.5), constrained_layout=True)
    for point in points:
        axis.scatter(point["mpx_per_s"], point["miou"], s=60)
        axis.annotate(
            f"{point['variant']}, {point['steps']} steps ({point['precision']})",
            (point["mpx_per_s"], point["miou"]),
            textcoords="offset points",
            xytext=(6, 4),
            fontsize=8,
        )
    axis.set_xscale("log")
    axis.set_xlabel("full-pattern throughput, Mpx/s (CPU, fastest precision)")
    axis.set_ylabel("full-pattern mIoU (%), STARS")
    axis.set_title("Accuracy vs speed per model variant", fontsize=10)
    axis.grid(alpha=0.3)
    return _save(figure, path)


# --------------------------------------------------------------------------------------------------------
# Markdown
# --------------------------------------------------------------------------------------------------------


def _latency_section(path: Path, data: Mapping[str, Any], plot: Path | None, base: Path) -> list[str]:
    machine = data["machine"]
    matmul = machine.get("matmul", {})
    versions = ", ".join(f"{k} {v}" for k, v in machine.get("versions", {}).items() if v)
    lines = [
        f"## Latency: `{path.name}` ({data['created']}{', quick smoke run' if data.get('quick') else ''})",
        "",
        f"- Machine: {machine['cpu_model']}, {machine.get('usable_cores')} usable cores, "
        f"{machine['threads']} threads, {machine.get('memory_gib')} GiB; "
        f"CPU flags {', '.join(machine.get('cpu_flags', []))}; "
        f"1-minute load average {machine.get('load_average_1m')} at start, "
        f"{machine.get('load_average_1m_end')} at end (the run's own threads count; well above "
        f"{machine.get('usable_cores')} would mean other work competed for the cores).",
        f"- Measured FP32 sgemm rate: **{fmt(matmul.get('gflops'), 1)} GFLOP/s** ({matmul.get('backend')}, "
        f"n={matmul.get('size')}, {matmul.get('threads')} threads).",
        f"- Engines `{data.get('engines')}` from checkpoint sha256 "
        f"`{str(data['model'].get('checkpoint_sha256', ''))[:12]}`; "
        f"model `{data['model'].get('variant')}` / `{data['model'].get('method')}`, "
        f"tile {data['tile']} px, "
        f"batches {data['batches']}; medians of >= {data['timing']['min_runs']} timed runs after "
        f"{data['timing']['warmup']} warm-up runs. ms are per call (one batch).",
        f"- Versions: {versions}.",
        "",
    ]
    if plot is not None:
        lines += [f"![latency per pattern]({_relative(plot, base)})", ""]
    lines += [
        *engine_table(data["rows"]),
        *skipped_lines(data.get("skipped", [])),
        "",
        "### End to end",
        "",
        *e2e_lines(data.get("e2e")),
        "",
        "### GPU",
        "",
        *gpu_lines(data.get("gpu", {})),
        "",
        "### Targets",
        "",
        *targets_table(data.get("targets", [])),
        "",
    ]
    return lines


def _seed_cell(values: Sequence[float]) -> str:
    if not values:
        return ""
    mean, spread = _mean_spread(values)
    return f"{mean:.2f}" + (f" ± {spread:.2f}" if spread is not None else "") + f" (n={len(values)})"


def _accuracy_section(path: Path, data: Mapping[str, Any], plot: Path | None, base: Path) -> list[str]:
    """One accuracy file: mIoU per configuration and pattern, then per-class IoU on its largest pattern."""
    rows = data["rows"]
    groups = accuracy_groups(rows)
    patterns = sorted({r["pattern"] for r in rows}, key=_pattern_order)
    settings = data.get("settings") or {}
    lines = [f"## Accuracy: `{path.name}`", ""]
    if settings:
        lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".", ""]
    if plot is not None:
        lines += [f"![accuracy per pattern]({_relative(plot, base)})", ""]
    lines += [
        "mIoU (%) per configuration and available-modality pattern: mean over seeds (± sample std when "
        "several seeds; n = runs).",
        "",
        "| configuration | " + " | ".join(f"`{p}`" for p in patterns) + " |",
        "| --- | " + " | ".join("---:" for _ in patterns) + " |",
    ]
    for label, group in groups.items():
        cells = [
            _seed_cell([float(r["miou"]) for r in group if r["pattern"] == p and r["miou"] is not None])
            for p in patterns
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    widest = max(patterns, key=lambda name: (len(Pattern.parse(name)), -_pattern_order(name)))
    per_class = [r for r in rows if r["pattern"] == widest and r.get("per_class_iou")]
    if per_class:
        classes = list(per_class[0]["per_class_iou"])
        lines += [
            "",
            f"Per-class IoU (%) on `{widest}`, mean over runs.",
            "",
            "| configuration | " + " | ".join(classes) + " |",
            "| --- | " + " | ".join("---:" for _ in classes) + " |",
        ]
        for label, group in groups.items():
            mine = [r for r in group if r["pattern"] == widest and r.get("per_class_iou")]
            if not mine:
                continue
            cells = []
            for name in classes:
                values = [
                    float(r["per_class_iou"][name]) for r in mine if r["per_class_iou"].get(name) is not None
                ]
                cells.append(f"{statistics.fmean(values):.2f}" if values else "")
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _placement_section(path: Path, data: Mapping[str, Any]) -> list[str]:
    """The export engineer's INT8 Q/DQ placement study (``benchmarks/int8_placement.py``), summarised."""
    rows = data["patterns"]
    lines = [
        f"## INT8 Q/DQ placement study: `{path.name}`",
        "",
        f"Model: {data.get('model')}; tile {data.get('tile')} px, {data.get('threads')} threads, median of "
        f"{data.get('repeats')} runs; ONNX Runtime {data.get('onnxruntime')}, torch {data.get('torch')}. "
        f"Fastest TensorRT-legal placement: `{data.get('fastest_legal_placement')}` (export default "
        f"`{data.get('default_placement')}`); geometric-mean ONNX Runtime FP32 speed-up over eager: "
        f"{fmt(data.get('geomean_ort_vs_eager'))}x.",
        "",
        "| placement | INT8 vs FP32 (geomean) | mean mIoU lost (points) | mean agreement with FP32 (%) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, speedup in data["geomean_int8_speedup"].items():
        lost = [r["int8"][name]["miou_lost"] for r in rows if name in r.get("int8", {})]
        agreement = [r["int8"][name]["agreement"] for r in rows if name in r.get("int8", {})]
        lines.append(
            f"| {name} | {fmt(float(speedup))}x | {fmt(statistics.fmean(lost)) if lost else ''} "
            f"| {fmt(statistics.fmean(agreement)) if agreement else ''} |"
        )
    return [*lines, ""]


def _summary_lines(found: ResultSet) -> list[str]:
    """Every latency run's target verdicts in one table, measured runs before quick smoke runs."""
    runs = sorted(found.latency, key=lambda item: bool(item[1].get("quick")))
    if not runs:
        return []
    names = list(dict.fromkeys(t["target"] for _, data in runs for t in data.get("targets", [])))
    lines = [
        "## Summary: targets",
        "",
        "| target | "
        + " | ".join(f"`{p.name}`" + (" (quick)" if d.get("quick") else "") for p, d in runs)
        + " |",
        "| --- | " + " | ".join("---" for _ in runs) + " |",
    ]
    for name in names:
        cells = []
        for _, data in runs:
            target = next((t for t in data.get("targets", []) if t["target"] == name), None)
            if target is None:
                cells.append("")
            elif target["measured"] is None:
                cells.append(target["verdict"])
            else:
                cells.append(f"{target['verdict']} ({target['measured']:.3f} {target['unit']})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    note = "Why missed targets are missed, and what would close them: `benchmarks/README.md`, Targets."
    return [*lines, "", note, ""]


def render_report(paths: Sequence[Path], out: Path = DEFAULT_REPORT, plots_dir: Path = RESULTS_DIR) -> Path:
    """Render every latency and accuracy result in ``paths`` into ``out``; plots go to ``plots_dir``."""
    found = collect(paths)
    if not found.latency and not found.accuracy and not found.placement:
        raise BenchmarkError(
            f"no latency or accuracy results among {len(paths)} file(s); run benchmarks/latency.py "
            "or benchmarks/accuracy.py first"
        )
    base = out.parent
    lines = [
        "# stars-edge benchmark report",
        "",
        "Generated by `python benchmarks/report.py` from the JSON files in `benchmarks/results/`; every "
        "number below was measured by `benchmarks/latency.py` or `benchmarks/accuracy.py` on the machine "
        "each section names. "
        "How to reproduce: `benchmarks/README.md`.",
        "",
        *_summary_lines(found),
    ]
    for path, data in found.latency:
        plot = plot_latency(data, plots_dir / f"{path.stem}.png")
        lines += _latency_section(path, data, plot, base)
    for path, data in found.placement:
        lines += _placement_section(path, data)
    for path, data in found.accuracy:
        groups = accuracy_groups(data["rows"])
        plot = plot_accuracy(
            groups, f"{path.stem}: mIoU per available-modality pattern", plots_dir / f"{path.stem}.png"
        )
        lines += _accuracy_section(path, data, plot, base)
    points = speed_accuracy_points(found)
    speed_plot = plot_speed_accuracy(points, plots_dir / "accuracy_vs_speed.png")
    lines += ["## Accuracy vs speed", ""]
    if speed_plot is not None:
        lines += [
            f"![accuracy vs speed]({_relative(speed_plot, base)})",
            "",
            "| variant | training steps | runs | full-pattern mIoU (%) | Mpx/s | precision | backend "
            "| batch |",
            "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |",
            *(
                f"| {p['variant']} | {p['steps']} | {p['runs']} | {p['miou']:.2f} | {p['mpx_per_s']:.2f} "
                f"| {p['precision']} | {p['backend']} | {p['batch']} |"
                for p in points
            ),
        ]
    else:
        lines.append(
            "Not available: needs accuracy rows (method `stars`, full pattern) and a latency run for the "
            "same model variant."
        )
    if found.skipped:
        lines += ["", "Files not rendered: " + "; ".join(found.skipped) + "."]
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
