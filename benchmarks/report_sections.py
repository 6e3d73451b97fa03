"""Markdown sections of ``benchmarks/report.py`` for latency and accuracy (and their cross-file summaries).

Each function turns one parsed result file (or the whole ``ResultSet``, for the cross-file tables) into
report lines; nothing here reads files or computes more than means and spreads.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.markdown import e2e_lines, engine_table, fmt, gpu_lines, skipped_lines, targets_table
from benchmarks.report_data import ResultSet, accuracy_groups, mean_spread, pattern_order, relative
from stars_edge.modalities import Pattern


def latency_section(path: Path, data: Mapping[str, Any], plot: Path | None, base: Path) -> list[str]:
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
        lines += [f"![latency per pattern]({relative(plot, base)})", ""]
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
    mean, spread = mean_spread(values)
    return f"{mean:.2f}" + (f" ± {spread:.2f}" if spread is not None else "") + f" (n={len(values)})"


def accuracy_section(path: Path, data: Mapping[str, Any], plot: Path | None, base: Path) -> list[str]:
    """One accuracy file: mIoU per configuration and pattern, then per-class IoU on its largest pattern."""
    rows = data["rows"]
    groups = accuracy_groups(rows)
    patterns = sorted({r["pattern"] for r in rows}, key=pattern_order)
    settings = data.get("settings") or {}
    lines = [f"## Accuracy: `{path.name}`", ""]
    if settings:
        lines += ["Settings: " + ", ".join(f"{k}={v}" for k, v in settings.items()) + ".", ""]
    if plot is not None:
        lines += [f"![accuracy per pattern]({relative(plot, base)})", ""]
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
    widest = max(patterns, key=lambda name: (len(Pattern.parse(name)), -pattern_order(name)))
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


def summary_lines(found: ResultSet) -> list[str]:
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


def speed_accuracy_section(points: Sequence[Mapping[str, Any]], plot: Path | None, base: Path) -> list[str]:
    """Accuracy against speed per model variant, or why it cannot be shown (it needs both kinds of run)."""
    lines = ["## Accuracy vs speed", ""]
    if plot is None:
        return [
            *lines,
            "Not available: needs accuracy rows (method `stars`, full pattern) and a latency run for the "
            "same model variant.",
            "",
        ]
    return [
        *lines,
        f"![accuracy vs speed]({relative(plot, base)})",
        "",
        "| variant | training steps | runs | full-pattern mIoU (%) | Mpx/s | precision | backend | batch |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |",
        *(
            f"| {p['variant']} | {p['steps']} | {p['runs']} | {p['miou']:.2f} | {p['mpx_per_s']:.2f} "
            f"| {p['precision']} | {p['backend']} | {p['batch']} |"
            for p in points
        ),
        "",
    ]
