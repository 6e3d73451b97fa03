"""The PNG plots of ``benchmarks/report.py``: latency per pattern, accuracy per pattern, accuracy vs speed.

Apart from the Markdown so that matplotlib is imported only when a plot is drawn, and so that
``benchmarks/accuracy.py`` can draw the same accuracy plot for its own summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.report_data import mean_spread, pattern_order
from stars_edge.io import atomic_path


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
    patterns = sorted({r["pattern"] for r in rows}, key=pattern_order)
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


def plot_accuracy(groups: Mapping[str, Sequence[Mapping[str, Any]]], title: str, path: Path) -> Path | None:
    """Grouped bars: mIoU per pattern for every configuration (mean over seeds, error bar = std)."""
    rows = [r for group in groups.values() for r in group]
    if not rows:
        return None
    patterns = sorted({r["pattern"] for r in rows}, key=pattern_order)
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(max(8.0, 1.5 * len(patterns) + 3), 5.0), constrained_layout=True)
    width = 0.8 / max(len(groups), 1)
    for k, (label, group) in enumerate(groups.items()):
        means, errors = [], []
        for pattern in patterns:
            values = [float(r["miou"]) for r in group if r["pattern"] == pattern and r["miou"] is not None]
            mean, spread = mean_spread(values) if values else (float("nan"), None)
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


def plot_speed_accuracy(points: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Scatter: full-pattern mIoU against Mpx/s per model variant, to show what accuracy speed costs."""
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
