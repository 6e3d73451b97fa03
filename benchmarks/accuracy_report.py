"""Rendering the accuracy study from its results log: which records feed which table, then the files.

The main table is the shipped recipe: synthetic runs at the default lambda_tr with no run options, plus the
main ShaSpec runs (the weight pair ``choose_shaspec`` picked on validation scenes). Every other run has its
own section and never enters the main table, its curves, its per-class table or its targets: the ShaSpec
tuning grid, the fidelity variants (each against the shipped ``stars``, seeds paired) and the low-label runs
(``benchmarks/accuracy_low_label.py``). The lambda_tr sweep takes ``stars`` / ``stars_no_stopgrad`` runs
without options at every lambda_tr.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks import accuracy_low_label as low_label
from benchmarks import accuracy_render as render
from benchmarks import accuracy_targets as targets
from benchmarks.accuracy_runs import (
    DATA_OPTIONS,
    FIDELITY_OPTIONS,
    SHASPEC_GRID,
    SWEEP_METHODS,
    StudySettings,
    choose_shaspec,
    options_tag,
    run_options,
    shaspec_options,
    shaspec_tuning_runs,
)
from benchmarks.accuracy_store import ResultsLog, code_fingerprint, select_records
from benchmarks.common import BenchmarkError

if TYPE_CHECKING:
    from benchmarks.accuracy_study import Study

Record = dict[str, Any]


@dataclass
class StudyRecords:
    """The selected records, split by the table they belong to."""

    main: list[Record] = field(default_factory=list)
    sweep: list[Record] = field(default_factory=list)
    tuning: list[Record] = field(default_factory=list)
    fidelity: dict[str, list[Record]] = field(default_factory=dict)
    low_label: list[Record] = field(default_factory=list)
    real: list[Record] = field(default_factory=list)
    shaspec: tuple[float, float] | None = None


def split_records(records: Sequence[Record], settings: StudySettings) -> StudyRecords:
    """Main, sweep, ShaSpec grid, fidelity variants (by options tag), low-label and real-data records."""
    synthetic = [r for r in records if r["spec"]["experiment"] == "synthetic"]
    shaspec = choose_shaspec(synthetic, settings)
    chosen_tag = options_tag(shaspec_options(*shaspec)) if shaspec is not None else None

    def shipped_lambda(r: Record) -> bool:
        return float(r["spec"]["lambda_tr"]) == targets.DEFAULT_LAMBDA_TR

    def is_main(r: Record) -> bool:
        tag = render.record_tag(r)
        return shipped_lambda(r) and (
            not tag or (r["spec"]["method"] == "shaspec" and chosen_tag is not None and tag == chosen_tag)
        )

    grid = {run.key for run in shaspec_tuning_runs(settings)}
    fidelity_tags = [options_tag(run_options(**o)) for o in FIDELITY_OPTIONS]
    return StudyRecords(
        main=[r for r in synthetic if is_main(r)],
        sweep=[r for r in synthetic if r["spec"]["method"] in SWEEP_METHODS and not render.record_tag(r)],
        tuning=[r for r in synthetic if r["key"] in grid],
        fidelity={
            tag: [
                r
                for r in synthetic
                if r["spec"]["method"] == "stars" and shipped_lambda(r) and render.record_tag(r) == tag
            ]
            for tag in fidelity_tags
        },
        low_label=[
            r
            for r in synthetic
            if render.spec_options(r["spec"])
            and {k for k, _ in render.spec_options(r["spec"])} <= set(DATA_OPTIONS)
        ],
        real=[r for r in records if r["spec"]["experiment"] == "sen1floods11"],
        shaspec=shaspec,
    )


# --------------------------------------------------------------------------- ShaSpec tuning


def shaspec_tuning(records: Sequence[Record], settings: StudySettings) -> dict[str, Any]:
    """The grid's runs with their final validation mIoU, how many are logged, and the chosen pair."""
    by_key = {r["key"]: r for r in records}
    grid = []
    for run, (align, domain) in zip(shaspec_tuning_runs(settings), SHASPEC_GRID, strict=True):
        curve = (by_key.get(run.key) or {}).get("curve") or []
        grid.append(
            {
                "key": run.key,
                "lambda_shaspec_align": align,
                "lambda_shaspec_domain": domain,
                "validation_miou": float(curve[-1]["miou"]) if curve else None,
                "step": int(curve[-1]["step"]) if curve else None,
            }
        )
    done = sum(g["validation_miou"] is not None for g in grid)
    chosen = choose_shaspec(list(records), settings)
    return {
        "seed": settings.seeds[0],
        "grid": grid,
        "done": done,
        "of": len(grid),
        "chosen": list(chosen) if chosen is not None else None,
    }


def tuning_lines(tuning: Mapping[str, Any], val_seeds: Sequence[int] | None) -> list[str]:
    """Markdown: the grid table and the chosen pair (or how far the tuning is)."""
    if val_seeds:
        first, last = val_seeds[0], val_seeds[-1]
        seeds = f" (seed {first})" if first == last else f" (seeds {first}..{last})"
    else:
        seeds = ""
    chosen = tuning["chosen"]
    state = (
        f"Chosen: align {chosen[0]:g}, domain {chosen[1]:g}; the main table's `shaspec` runs use it."
        if chosen is not None
        else f"**tuning incomplete: {tuning['done']}/{tuning['of']}**; the main table has no `shaspec` row "
        "until the grid is done."
    )
    lines = [
        f"## ShaSpec tuning (seed {tuning['seed']}, {tuning['of']} weight pairs)",
        "",
        "ShaSpec's two loss weights are chosen on the **validation scenes**" + seeds + ", never the test "
        "scenes: the pair with the best final validation mIoU (mean over the validated patterns). " + state,
        "",
        "| lambda_shaspec_align | lambda_shaspec_domain | final validation mIoU | step | chosen |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    for g in tuning["grid"]:
        pair = [g["lambda_shaspec_align"], g["lambda_shaspec_domain"]]
        score = "not logged" if g["validation_miou"] is None else f"{g['validation_miou']:.2f}"
        lines.append(
            f"| {pair[0]:g} | {pair[1]:g} | {score} | {g['step'] if g['step'] is not None else ''} | "
            f"{'**chosen**' if pair == chosen else ''} |"
        )
    return lines


# --------------------------------------------------------------------------- fidelity variants


def _cell(values: Sequence[float], signed: bool = False) -> str:
    if not values:
        return "n/a"
    mean = f"{np.mean(values):+.2f}" if signed else f"{np.mean(values):.2f}"
    return mean + (f" ± {np.std(values, ddof=1):.2f}" if len(values) > 1 else "")


def _per_seed(records: Sequence[Record]) -> dict[int, dict[str, float]]:
    """Per seed: mIoU per pattern, plus the means over the missing-modality patterns and over all 7."""
    out: dict[int, dict[str, float]] = {}
    for r in records:
        scores = {row["pattern"]: float(row["miou"]) for row in r["rows"] if row["miou"] is not None}
        for name, patterns in (("missing", targets.MISSING_PATTERNS), ("all", targets.ALL_PATTERN_NAMES)):
            if set(patterns) <= set(scores):
                scores[name] = float(np.mean([scores[p] for p in patterns]))
        out[int(r["spec"]["seed"])] = scores
    return out


def fidelity_lines(shipped: Sequence[Record], variants: Mapping[str, Sequence[Record]]) -> list[str]:
    """Markdown: each fidelity variant against the shipped ``stars`` per pattern, and the paired Δ."""
    columns = [*targets.ALL_PATTERN_NAMES, "missing", "all"]
    base = _per_seed(shipped)
    lines = [
        "## Fidelity variants (against the shipped `stars`)",
        "",
        "Each variant changes one training option of `stars`: where translation runs (the recipe "
        "translates at strides 8-32; `translation_scales=3` is the former stride-32-only recipe, `2-3` the "
        "cheaper point between). Cells: mean ± sample std over seeds; Δ rows: the mean (± std) "
        "over paired seeds of variant − shipped. `missing` = mean over the 6 missing-modality patterns, "
        "`all` = over all 7.",
        "",
        "| run | seeds | " + " | ".join(columns) + " |",
        "| --- | --- | " + " | ".join("---:" for _ in columns) + " |",
    ]

    def row(label: str, per_seed: Mapping[int, Mapping[str, float]], signed: bool = False) -> str:
        cells = [_cell([v[c] for v in per_seed.values() if c in v], signed) for c in columns]
        seeds = ", ".join(map(str, sorted(per_seed))) or "none"
        return f"| {label} | {seeds} | " + " | ".join(cells) + " |"

    lines.append(row("stars (shipped)", base))
    for tag, records in variants.items():
        mine = _per_seed(records)
        lines.append(row(f"stars {tag}", mine))
        common = sorted(set(mine) & set(base))
        diffs = {
            s: {c: mine[s][c] - base[s][c] for c in columns if c in mine[s] and c in base[s]} for s in common
        }
        lines.append(row(f"Δ {tag} − shipped", diffs, signed=True))
    return lines


# --------------------------------------------------------------------------- the files


def render_study(
    study: Study,
    out: Path,
    fingerprint: str | None = None,
    allow_mixed: bool = False,
    int8_manifest: Sequence[Path] = (),
    command: str = "",
) -> list[targets.Target]:
    """Write the result JSONs, Markdown and plots from the log; return the evaluated targets."""
    from benchmarks.common import machine_info
    from stars_edge.io import write_json_atomic, write_text_atomic

    records = ResultsLog(study.log).read()
    chosen = select_records(records, study.settings_id, fingerprint, allow_mixed, current=code_fingerprint())
    if not chosen.records:
        raise BenchmarkError(
            f"{study.log} has no runs of study {study.settings_id} (these settings"
            f"{'' if fingerprint is None else ' and fingerprint'}); run it first or pass the flags it "
            "ran with"
        )
    if chosen.ignored:
        print(f"ignored {chosen.ignored} run(s) of other code versions")
    parts = split_records(chosen.records, study.settings)
    settings = study.settings.to_dict()
    header = {"machine": machine_info(study.settings.threads), "command": command}
    main = render.payload(parts.main, "synthetic", settings, header, chosen.mixed)
    sweep = render.payload(parts.sweep, "lambda_tr_sweep", settings, header, chosen.mixed)
    for row in sweep["rows"]:
        row["experiment"] = "lambda_tr_sweep"
    curves = render.curves_by_method(parts.main)
    plot = render.plot_curves(curves, out / "accuracy_synthetic_curves.png")
    main["curves_plot"] = plot.name if plot else None
    drops = targets.int8_drops_from_manifests(int8_manifest) if int8_manifest else None
    evaluated = targets.evaluate(
        main["rows"],
        sweep["rows"],
        study.settings.sweep_lambdas,
        main["settings"].get("test_class_pixels"),
        curves,
        study.settings.steps,
        drops,
    )
    main["targets"] = [dataclasses.asdict(t) for t in evaluated]
    written: list[Path] = []
    sections: list[list[str]] = []
    if "shaspec" in study.settings.methods or parts.tuning:
        main["shaspec_tuning"] = shaspec_tuning(parts.tuning, study.settings)
        sections.append(tuning_lines(main["shaspec_tuning"], main["settings"].get("val_seeds")))
    if "fidelity" in study.parts or any(parts.fidelity.values()):
        shipped = [r for r in parts.main if r["spec"]["method"] == "stars"]
        main["fidelity"] = {"stars": _per_seed(shipped)} | {
            t: _per_seed(r) for t, r in parts.fidelity.items()
        }
        sections.append(fidelity_lines(shipped, parts.fidelity))
    if "low_label" in study.parts or parts.low_label:
        study_rows = low_label.low_label_rows(parts.main + parts.low_label, study.settings.train_scenes)
        data = low_label.low_label_payload(study_rows, main["settings"], header)
        figure = low_label.plot_low_label(data["summary"], out / "accuracy_low_label.png")
        written.append(write_json_atomic(out / "accuracy_low_label.json", data))
        written += [figure] if figure else []
        sections.append(low_label.low_label_lines(data, figure.name if figure else None))
    written.insert(0, write_json_atomic(out / "accuracy_synthetic.json", main))
    text = render.render_synthetic(main, sweep, evaluated, sections)
    written.insert(1, write_text_atomic(out / "accuracy_synthetic.md", text))
    if len({r["lambda_tr"] for r in sweep["rows"]}) > 1:
        written.append(write_json_atomic(out / "accuracy_lambda_sweep.json", sweep))
    written += _render_bars(out, main)
    if parts.real:
        written += _render_sen1floods11(out, parts.real, settings, header, chosen.mixed)
    for path in written:
        print(f"wrote {path}")
    for target in evaluated:
        print(target.line())
    return evaluated


def _render_bars(out: Path, main: Mapping[str, Any]) -> list[Path]:
    from benchmarks.report import accuracy_groups, plot_accuracy

    s = main["settings"]
    title = (
        f"synthetic: {s['variant']}, {s['steps']} steps, "
        f"{s['test_scenes']} test scenes of {s['scene_size']} px"
    )
    plot = plot_accuracy(accuracy_groups(main["rows"]), title, out / "accuracy_synthetic.png")
    return [plot] if plot else []


def _render_sen1floods11(
    out: Path,
    records: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Any],
    header: Mapping[str, Any],
    mixed: bool,
) -> list[Path]:
    from benchmarks.accuracy_sen1floods11 import render as render_real
    from stars_edge.io import write_json_atomic, write_text_atomic

    data = render.payload(records, "sen1floods11_single_scene", settings, header, mixed)
    info = records[0].get("data", {})
    trained_on = "trained on the chip's left half only (no validation split)"
    text = render_real(data["rows"], info, render.settings_lines(data, trained_on))
    return [
        write_json_atomic(
            out / "accuracy_sen1floods11.json",
            {**data, **{k: v for k, v in info.items() if k != "test_class_pixels"}},
        ),
        write_text_atomic(out / "accuracy_sen1floods11.md", text),
    ]
