"""The low-label study's results: mIoU against the number of labelled training scenes L, per line.

Lines: ``stars`` with the rest of the main study's training scenes unlabelled (only its translation loss sees
them), ``stars`` on the labelled scenes alone, ``zero_fill_dropout``, and the best specialist per pattern. L
runs over ``LOW_LABEL_SCENES`` and the main study's ``train_scenes``, whose points are the main runs (every
scene labelled, so both STARS lines meet there).

A specialist (one single-modality model per modality) reads only its own modality, so on a multi-modality
pattern it scores what it scores on its own pattern. With specialists only, a deployment picks, for each
pattern, one specialist among the pattern's modalities; here the pick is the one with the best final
validation mIoU (validation scenes, per seed), never a test score. No runtime in this repository switches
between specialists: the line is what such a switch would get. The full pattern takes the best of the three.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.accuracy_render import spec_options
from benchmarks.accuracy_targets import ALL_PATTERN_NAMES, FULL_PATTERN, MISSING_PATTERNS, SINGLE

SCHEMA = "stars-edge/accuracy-low-label/v1"
LINES: dict[str, str] = {
    "stars_unlabelled": "STARS + unlabelled scenes",
    "stars_labelled": "STARS, labelled scenes only",
    "zero_fill_dropout": "zero_fill_dropout",
    "best_specialist": "best specialist per pattern (chosen on validation)",
}


def _lines_of(record: Mapping[str, Any]) -> list[str]:
    """The lines a record is a point of (a main ``stars`` run is on both STARS lines)."""
    spec = record["spec"]
    options = dict(spec_options(spec))
    method = spec["method"]
    if method == "stars":
        if not options:
            return ["stars_unlabelled", "stars_labelled"]
        return ["stars_unlabelled" if options.get("synthetic_unlabelled_scenes") else "stars_labelled"]
    if method == "zero_fill_dropout":
        return ["zero_fill_dropout"]
    return ["best_specialist"] if method == "single_modality" else []


def _validation(record: Mapping[str, Any], modality: str) -> float | None:
    curve = record.get("curve") or []
    if not curve:
        return None
    last = curve[-1]
    return float((last.get("per_pattern") or {}).get(modality, last["miou"]))


def _summary(scores: dict[str, float]) -> dict[str, float | None]:
    missing = [scores[p] for p in MISSING_PATTERNS if p in scores]
    return {
        "mean_missing": float(np.mean(missing)) if len(missing) == len(MISSING_PATTERNS) else None,
        "full": scores.get(FULL_PATTERN),
    }


def specialist_scores(records: Sequence[Mapping[str, Any]]) -> tuple[dict[str, float], dict[str, str]]:
    """Per pattern, the test mIoU of the specialist with the best validation mIoU among the pattern's
    modalities (a pattern missing one of its specialists, or its curve, is left out), and the pick."""
    by_modality: dict[str, tuple[float | None, float]] = {}
    for r in records:
        modality = r["spec"]["modalities"][0]
        test = [
            float(row["miou"]) for row in r["rows"] if row["pattern"] == modality and row["miou"] is not None
        ]
        if test:
            by_modality[modality] = (_validation(r, modality), test[0])
    scores: dict[str, float] = {}
    picks: dict[str, str] = {}
    for pattern in ALL_PATTERN_NAMES:
        mine = [m for m in SINGLE if m in pattern.split("+")]
        if not all(m in by_modality and by_modality[m][0] is not None for m in mine):
            continue
        best = max(mine, key=lambda m: (by_modality[m][0], -mine.index(m)))
        scores[pattern], picks[pattern] = by_modality[best][1], best
    return scores, picks


def low_label_rows(records: Sequence[Mapping[str, Any]], train_scenes: int) -> list[dict[str, Any]]:
    """One row per (line, L, seed): mIoU per pattern, the mean over the 6 missing-modality patterns (when all
    6 are scored), the full pattern, and for the specialists which one each pattern used."""
    groups: dict[tuple[str, int, int], list[Mapping[str, Any]]] = {}
    unlabelled: dict[tuple[str, int], int] = {}
    for r in records:
        options = dict(spec_options(r["spec"]))
        labelled = int(options.get("synthetic_train_scenes", train_scenes))
        for line in _lines_of(r):
            groups.setdefault((line, labelled, int(r["spec"]["seed"])), []).append(r)
            unlabelled[(line, labelled)] = int(options.get("synthetic_unlabelled_scenes", 0))
    rows = []
    for (line, labelled, seed), group in sorted(
        groups.items(), key=lambda item: (list(LINES).index(item[0][0]), *item[0][1:])
    ):
        picks: dict[str, str] = {}
        if line == "best_specialist":
            scores, picks = specialist_scores(group)
        else:
            scores = {
                row["pattern"]: float(row["miou"]) for row in group[-1]["rows"] if row["miou"] is not None
            }
        rows.append(
            {
                "line": line,
                "label": LINES[line],
                "labelled_scenes": labelled,
                "unlabelled_scenes": unlabelled[(line, labelled)],
                "main_study": labelled == train_scenes,
                "seed": seed,
                **_summary(scores),
                "per_pattern": scores,
                **({"specialist_picked": picks} if picks else {}),
                "keys": sorted(str(r["key"]) for r in group),
            }
        )
    return rows


def summarise(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (line, L): mean and sample std over seeds of the missing-pattern mean and of the full pattern."""
    groups: dict[tuple[str, int], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["line"], r["labelled_scenes"]), []).append(r)
    out = []
    for (line, labelled), group in groups.items():
        entry: dict[str, Any] = {"line": line, "label": LINES[line], "labelled_scenes": labelled}
        for key in ("mean_missing", "full"):
            values = [float(r[key]) for r in group if r[key] is not None]
            entry[key] = float(np.mean(values)) if values else None
            entry[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
            entry[f"{key}_seeds"] = sorted(int(r["seed"]) for r in group if r[key] is not None)
        out.append(entry)
    return out


def low_label_payload(
    rows: Sequence[Mapping[str, Any]], settings: Mapping[str, Any], header: Mapping[str, Any]
) -> dict[str, Any]:
    """``accuracy_low_label.json``: the settings, one row per (line, L, seed), the summary per (line, L)."""
    return {
        "schema": SCHEMA,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **header,
        "settings": dict(settings),
        "missing_patterns": list(MISSING_PATTERNS),
        "rows": list(rows),
        "summary": summarise(rows),
    }


def _cell(entry: Mapping[str, Any] | None, key: str) -> str:
    if entry is None or entry[key] is None:
        return "n/a"
    std = entry[f"{key}_std"]
    return (
        f"{entry[key]:.2f}" + ("" if std is None else f" ± {std:.2f}") + f" (n={len(entry[f'{key}_seeds'])})"
    )


def low_label_lines(data: Mapping[str, Any], plot: str | None) -> list[str]:
    """Markdown: the plot and one table per y (missing-pattern mean, full pattern), lines x L."""
    summary = data["summary"]
    train_scenes = data["settings"].get("train_scenes")
    levels = sorted({int(e["labelled_scenes"]) for e in summary})
    by = {(e["line"], int(e["labelled_scenes"])): e for e in summary}
    head = [f"L={n}" + (" (main study)" if n == train_scenes else "") for n in levels]
    lines = [
        "## Low-label study",
        "",
        f"L labelled training scenes out of the main study's {train_scenes}; `STARS + unlabelled scenes` "
        "also trains its translation loss on the other scenes, unlabelled. Cells: mean ± sample std over "
        "seeds (n = seeds). The L = train_scenes points are the main runs. Specialists: per seed and "
        "pattern, the single-modality model among the pattern's modalities with the best final "
        "validation mIoU (validation scenes, not test); it ignores the other inputs, so its score is that "
        "on its own modality. No runtime here switches between specialists: that line is what such a "
        "switch would get.",
        "",
    ]
    if plot:
        lines += [f"![low-label study]({plot})", ""]
    if not summary:
        return [*lines, "no low-label runs logged yet"]
    for key, title in (
        ("mean_missing", "mean mIoU over the 6 missing-modality patterns"),
        ("full", f"mIoU on {FULL_PATTERN}"),
    ):
        lines += [
            f"{title}:",
            "",
            "| line | " + " | ".join(head) + " |",
            "| --- | " + " | ".join("---:" for _ in levels) + " |",
        ]
        for line, label in LINES.items():
            lines.append(f"| {label} | " + " | ".join(_cell(by.get((line, n)), key) for n in levels) + " |")
        lines.append("")
    return lines[:-1]


def plot_low_label(summary: Sequence[Mapping[str, Any]], path: Path) -> Path | None:
    """Two panels (missing-pattern mean, full pattern): mIoU against L, one line per method, std bars."""
    if not summary:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(11.0, 4.5), constrained_layout=True)
    levels = sorted({int(e["labelled_scenes"]) for e in summary})
    for axis, (key, title) in zip(
        axes,
        (("mean_missing", "mean over the 6 missing-modality patterns"), ("full", FULL_PATTERN)),
        strict=True,
    ):
        for line, label in LINES.items():
            points = sorted(
                (int(e["labelled_scenes"]), e[key], e[f"{key}_std"] or 0.0)
                for e in summary
                if e["line"] == line and e[key] is not None
            )
            if points:
                x, y, err = zip(*points, strict=True)
                axis.errorbar(x, y, yerr=err, marker="o", capsize=3, label=label)
        axis.set_xscale("log", base=2)
        axis.set_xticks(levels)
        axis.set_xticklabels([str(n) for n in levels])
        axis.set_xlabel("labelled training scenes L")
        axis.set_ylabel("test mIoU (%)")
        axis.set_title(title, fontsize=10)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
