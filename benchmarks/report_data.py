"""What ``benchmarks/report.py`` computes from the result files before rendering: kinds, groups, summaries.

Kept apart from the Markdown and the plots so that both can share it without importing each other, and so
that ``benchmarks/accuracy.py`` can group its rows the same way the report does. Only summaries (means,
spreads, best runs) are computed here; every number comes from the JSON files.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stars_edge.errors import StarsEdgeError
from stars_edge.modalities import ALL_PATTERNS, Pattern

#: One result file: where it was read from and its parsed JSON object.
Entry = tuple[Path, dict[str, Any]]


@dataclass
class ResultSet:
    """The JSON files found, split by kind; ``skipped`` says which were not benchmark results and why."""

    latency: list[Entry] = field(default_factory=list)
    accuracy: list[Entry] = field(default_factory=list)
    placement: list[Entry] = field(default_factory=list)
    train_speed: list[Entry] = field(default_factory=list)
    batch: list[Entry] = field(default_factory=list)
    memory: list[Entry] = field(default_factory=list)
    int8_calibration: list[Entry] = field(default_factory=list)
    quantizers: list[Entry] = field(default_factory=list)
    input_contract: list[Entry] = field(default_factory=list)
    hole_training: list[Entry] = field(default_factory=list)
    low_label: list[Entry] = field(default_factory=list)
    int8_default_tile: list[Entry] = field(default_factory=list)
    arrays_profile: list[Entry] = field(default_factory=list)
    streams_ab: list[Entry] = field(default_factory=list)
    reader_alone: list[Entry] = field(default_factory=list)
    contention: list[Entry] = field(default_factory=list)
    thread_cpu: list[Entry] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def rendered(self) -> int:
        """How many files the report has a section for (zero: nothing worth writing a report about)."""
        kinds = (
            self.latency,
            self.accuracy,
            self.placement,
            self.train_speed,
            self.batch,
            self.memory,
            self.int8_calibration,
            self.quantizers,
            self.low_label,
            self.input_contract,
            self.hole_training,
            self.int8_default_tile,
            self.arrays_profile,
            self.streams_ab,
            self.reader_alone,
            self.contention,
            self.thread_cpu,
        )
        return sum(len(kind) for kind in kinds)


def has_rows(data: Mapping[str, Any], key: str, fields: set[str]) -> bool:
    """True when ``data[key]`` is a non-empty list whose first item is an object with all ``fields``."""
    rows = data.get(key)
    return isinstance(rows, list) and bool(rows) and isinstance(rows[0], dict) and fields <= set(rows[0])


def pattern_order(name: str) -> int:
    """Sort key that lists patterns in the project's canonical order, unknown names last."""
    try:
        return ALL_PATTERNS.index(Pattern.parse(name))
    except StarsEdgeError:
        return len(ALL_PATTERNS)


def relative(path: Path, start: Path) -> str:
    """``path`` as a link relative to the report's folder, so the report stays valid when moved with it."""
    try:
        return str(path.resolve().relative_to(start.resolve()))
    except ValueError:
        return str(path)


def mean_spread(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and sample std (None for a single value: one run has no spread)."""
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


def accuracy_rows(found: ResultSet) -> list[dict[str, Any]]:
    """Accuracy rows with the file's variant attached when the row lacks one."""
    rows = []
    for _path, data in found.accuracy:
        file_variant = data.get("variant") or (data.get("config") or {}).get("variant")
        for row in data["rows"]:
            rows.append({**row, "variant": row.get("variant") or file_variant})
    return rows


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
    for row in accuracy_rows(found):
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
