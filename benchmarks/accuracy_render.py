"""Results of the accuracy study: the JSON files, the Markdown tables, the plots, from the results log.

``accuracy_synthetic.json`` keeps the schema the report reads (``settings`` with ``variant``, ``steps``,
``test_scenes``, ``scene_size``, ``commit``; one row per method x pattern x seed with ``miou`` and
``per_class_iou``); ``accuracy_lambda_sweep.json`` and ``accuracy_sen1floods11.json`` likewise. Every row
also carries its run's options (``options``: the ``name=value:...`` tag of its run key, empty for none), its
compute (FLOPs and measured seconds per step, parameters) and code fingerprint.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.accuracy_runs import options_tag
from benchmarks.accuracy_targets import DEFAULT_LAMBDA_TR, Target

SCHEMA = "stars-edge/accuracy/v1"

#: Run-level fields copied into every row of that run.
RUN_FIELDS: tuple[str, ...] = (
    "train_seconds",
    "seconds_per_step",
    "flops_per_step",
    "parameters",
    "lambda_psa",
    "final_losses",
    "final_feature_std",
    "final_effective_rank",
)


def spec_options(spec: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A record's run options as ``RunSpec.options`` holds them (JSON lists back to tuples; none for records
    logged before runs had options)."""
    return tuple(
        (str(name), tuple(value) if isinstance(value, list) else value)
        for name, value in spec.get("options") or ()
    )


def record_tag(record: Mapping[str, Any]) -> str:
    """The ``name=value:...`` tag of a record's run options ("" for none)."""
    return options_tag(spec_options(record["spec"]))


def flatten(records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (run, pattern) with the run's spec, options, settings and compute fields."""
    rows = []
    for record in records:
        spec, settings, run = record["spec"], record["settings"], record["run"]
        for row in record["rows"]:
            rows.append(
                {
                    "experiment": spec["experiment"],
                    "method": spec["method"],
                    "seed": spec["seed"],
                    "lambda_tr": spec["lambda_tr"],
                    "options": record_tag(record),
                    "trained_modalities": "+".join(spec["modalities"]),
                    "variant": settings["variant"],
                    "steps": settings["steps"],
                    "batch_size": settings["batch_size"],
                    "tile_size": settings["tile_size"],
                    **row,
                    **{k: run.get(k) for k in RUN_FIELDS},
                    "fingerprint": record["fingerprint"],
                    "commit": record.get("commit"),
                }
            )
    return rows


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{np.mean(values):.2f} ± {np.std(values, ddof=1):.2f}"


def pivot(rows: Sequence[Mapping[str, Any]], key: str = "miou", row_key: str = "method") -> list[str]:
    """Rows x patterns table of ``key``; several seeds give mean ± sample std."""
    from stars_edge.modalities import ALL_PATTERNS

    patterns = [p.name for p in ALL_PATTERNS if any(r["pattern"] == p.name for r in rows)]
    patterns += sorted({r["pattern"] for r in rows} - set(patterns))
    groups: dict[str, dict[str, dict[int, float]]] = {}
    for r in rows:
        if r.get(key) is not None:
            groups.setdefault(str(r[row_key]), {}).setdefault(r["pattern"], {})[int(r["seed"])] = float(
                r[key]
            )
    lines = [
        f"| {row_key} | " + " | ".join(patterns) + " | mean over patterns scored |",
        "| --- | " + " | ".join("---:" for _ in patterns) + " | ---: |",
    ]
    for name, by_pattern in groups.items():
        cells = [_mean_std(list(by_pattern[p].values())) if p in by_pattern else "n/a" for p in patterns]
        seeds = sorted({s for v in by_pattern.values() for s in v})
        overall = [float(np.mean([v[s] for v in by_pattern.values() if s in v])) for s in seeds]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {_mean_std(overall)} |")
    return lines


def per_class(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per-class IoU per method, mean over patterns and seeds."""
    classes = list(rows[0]["per_class_iou"])
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(str(r["method"]), []).append(r["per_class_iou"])
    lines = [
        "| method | " + " | ".join(classes) + " |",
        "| --- | " + " | ".join("---:" for _ in classes) + " |",
    ]
    for method, items in groups.items():
        cells = []
        for c in classes:
            values = [i[c] for i in items if i.get(c) is not None]
            cells.append(f"{np.mean(values):.2f}" if values else "n/a")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def compute_table(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """Per method: parameters, GFLOPs per training step, measured seconds per step (mean over runs)."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for record in records:
        spec = record["spec"]
        label = spec["method"] + (
            "" if spec["method"] != "single_modality" else f" ({spec['modalities'][0]})"
        )
        groups.setdefault(label, []).append(record["run"])
    reference = groups.get("stars")
    ref_flops = (
        np.mean([r["flops_per_step"] for r in reference if r.get("flops_per_step")]) if reference else None
    )
    lines = [
        "| method | parameters | GFLOPs / training step | x stars | s / step (measured) | runs |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for label, runs in groups.items():
        flops = [r["flops_per_step"] for r in runs if r.get("flops_per_step")]
        mean_flops = float(np.mean(flops)) if flops else None
        ratio = f"{mean_flops / ref_flops:.2f}" if mean_flops and ref_flops else "n/a"
        lines.append(
            f"| {label} | {runs[0]['parameters']:,} | "
            f"{'n/a' if mean_flops is None else f'{mean_flops / 1e9:.3g}'} | {ratio} | "
            f"{np.mean([r['seconds_per_step'] for r in runs]):.3f} | {len(runs)} |"
        )
    return lines


def targets_table(targets: Sequence[Target]) -> list[str]:
    """The targets as a Markdown table."""
    lines = ["| target | result | measured |", "| --- | --- | --- |"]
    lines += [f"| {t.name} | **{t.status}** | {t.detail} |" for t in targets]
    return lines


def settings_lines(payload: Mapping[str, Any], training_data: str | None = None) -> list[str]:
    """What every run got, which code produced it, and a warning when code versions are mixed.

    ``training_data`` replaces the synthetic study's training scenes in the text (the real-data check trains
    on something else)."""
    s = payload["settings"]
    fingerprints = s.get("fingerprints", [])
    data = training_data or (
        f"{s['train_scenes']} training scenes of {s['train_scene_size']} px, validation every "
        f"{s['val_every']} steps on {s['val_scenes']} scene(s)"
    )
    lines = [
        f"Budget per run: variant `{s['variant']}`, {s['steps']} steps, batch {s['batch_size']}, "
        f"{s['tile_size']} px tiles, lr {s['lr']} ({s['schedule']}), {data}, "
        f"{s['threads']} thread(s), channels_last {s['channels_last']}, autocast {s['autocast']}, extra "
        f"training options {s.get('train_options') or 'none'}.",
        "",
        f"Code: commit(s) {', '.join(str(c) for c in s.get('commits', [])) or 'unknown'}, fingerprint "
        f"{', '.join(f[:16] for f in fingerprints)}; written {payload['written']} by `{payload['command']}`.",
    ]
    if s.get("carried_runs"):
        lines += [
            "",
            f"Carried over: {s['carried_runs']} of {len(payload.get('runs', []))} runs ran with earlier code "
            f"(commit(s) {', '.join(str(c)[:12] for c in s.get('carried_from_commits', []))}) and count "
            "for this code by a verified carry-over (`benchmarks/accuracy_compat.py`: "
            f"{'; '.join(s.get('carried_by', []))}).",
        ]
    if payload.get("mixed"):
        lines += [
            "",
            f"**MIXED CODE VERSIONS** (`--allow-mixed`): these rows come from {len(fingerprints)} different "
            "code fingerprints; differences between methods may be differences between code versions.",
        ]
    return lines


def render_synthetic(
    main: Mapping[str, Any],
    sweep: Mapping[str, Any] | None,
    targets: Sequence[Target],
    sections: Sequence[Sequence[str]] = (),
) -> str:
    """Markdown for the ablation table, the compute per method, the targets, the lambda_tr sweep, then
    ``sections`` (ShaSpec tuning, fidelity variants, low-label study: Markdown lines each)."""
    rows = main["rows"]
    s = main["settings"]
    pixels = s.get("test_class_pixels") or {}
    out = [
        "# Accuracy on the synthetic benchmark",
        "",
        "Generated by `python benchmarks/accuracy.py` from the results log (re-render: `--render`). mIoU in "
        f"percent on {s['test_scenes']} held-out synthetic scenes of {s['scene_size']} px (seeds from "
        f"{(s.get('test_seeds') or ['?'])[0]}, disjoint from training and validation). A cell is mean ± "
        "sample std over seeds. `single_modality` is one model per modality, scored on its own pattern. The "
        f"main table is the shipped recipe (lambda_tr = {DEFAULT_LAMBDA_TR:g}, no run options) and `shaspec` "
        "with the weights its tuning chose; the tuning grid, fidelity variants and low-label runs have their "
        "own sections.",
        "",
        *settings_lines(main),
        "",
        "Test pixels per class: " + ", ".join(f"{c} {n:,}" for c, n in pixels.items()) + ".",
        "",
        "## Targets",
        "",
        *targets_table(targets),
        "",
        "## mIoU per availability pattern",
        "",
        *(pivot(rows) if rows else ["no runs yet"]),
        "",
        "## Compute per method (same steps for every method, not the same compute)",
        "",
        *compute_table(main.get("runs", [])),
        "",
        "FLOPs: forward + backward of the trainer's first steps, counted by `torch.utils.flop_counter` "
        "(2 per multiply-add); seconds per step include the periodic validation and depend on machine load.",
        "",
    ]
    if rows:
        out += ["## Per-class IoU (mean over patterns and seeds)", "", *per_class(rows), ""]
    if main.get("curves_plot"):
        out += ["## Validation curves", "", f"![validation mIoU]({main['curves_plot']})", ""]
    if sweep and len({r["lambda_tr"] for r in sweep.get("rows", [])}) > 1:
        ordered = sorted(sweep["rows"], key=lambda r: (r["method"] != "stars", r["method"], r["lambda_tr"]))
        srows = [dict(r, run=f"{r['method']} λ_tr={r['lambda_tr']:g}") for r in ordered]
        out += [
            "## lambda_tr sweep (stars vs stars_no_stopgrad)",
            "",
            "λ_tr = 0 is `stars` only: without a translation loss there is no gradient to stop, so the "
            "stop-gradient spread target uses the λ_tr > 0 both methods have.",
            "",
            *pivot(srows, row_key="run"),
            "",
            *[
                f"- {t.name}: **{t.status}**, {t.detail}"
                for t in targets
                if t.name.startswith(("stop-gradient", "translation"))
            ],
            "",
        ]
    for section in sections:
        out += [*section, ""]
    return "\n".join(out) + "\n"


def curves_by_method(records: Sequence[Mapping[str, Any]]) -> dict[str, list[list[dict[str, Any]]]]:
    """The validation curves of the main runs (the default lambda_tr), grouped by method."""
    out: dict[str, list[list[dict[str, Any]]]] = {}
    for record in records:
        spec = record["spec"]
        if (
            spec["experiment"] == "synthetic"
            and float(spec["lambda_tr"]) == DEFAULT_LAMBDA_TR
            and record.get("curve")
        ):
            label = spec["method"] + (
                "" if spec["method"] != "single_modality" else f" ({spec['modalities'][0]})"
            )
            out.setdefault(label, []).append(record["curve"])
    return out


def plot_curves(curves: Mapping[str, Sequence[Sequence[Mapping[str, Any]]]], path: Path) -> Path | None:
    """Validation mIoU (mean over validated patterns) against step, mean over seeds, one line per method."""
    if not curves:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(8.0, 5.0), constrained_layout=True)
    for label, runs in curves.items():
        steps = sorted({p["step"] for curve in runs for p in curve})
        means = [np.mean([p["miou"] for curve in runs for p in curve if p["step"] == s]) for s in steps]
        axis.plot(steps, means, marker="o", markersize=3, label=f"{label} ({len(runs)} seeds)")
    axis.set_xlabel("training step")
    axis.set_ylabel("validation mIoU (%), mean over patterns")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def payload(
    records: Sequence[Mapping[str, Any]],
    experiment: str,
    settings: Mapping[str, Any],
    header: Mapping[str, Any],
    mixed: bool,
) -> dict[str, Any]:
    """One result file: the settings (with the code versions and test pixel counts), rows and run records."""
    commits = sorted(
        {f"{r.get('commit')}{' (uncommitted edits)' if r.get('dirty') else ''}" for r in records}
    )
    fingerprints = sorted({str(r["fingerprint"]) for r in records})
    carried = [r for r in records if r.get("carried_by")]
    data = records[0].get("data", {}) if records else {}
    rows = flatten(records)
    return {
        "schema": SCHEMA,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **header,
        "experiment": experiment,
        "settings": {
            **settings,
            "commit": commits[0] if len(commits) == 1 else commits,
            "commits": commits,
            "fingerprint": fingerprints[0] if len(fingerprints) == 1 else fingerprints,
            "fingerprints": fingerprints,
            **{k: v for k, v in data.items() if k.startswith("test_") or k.endswith("_seeds")},
            "carried_runs": len(carried),
            "carried_from_commits": sorted({str(r.get("commit")) for r in carried}),
            "carried_by": sorted({str(a) for r in carried for a in r["carried_by"]}),
        },
        "mixed": mixed,
        "seeds": sorted({int(r["seed"]) for r in rows}),
        "rows": rows,
        "runs": [
            {
                "key": r["key"],
                "spec": r["spec"],
                "options": record_tag(r),
                "run": r["run"],
                "curve": r.get("curve", []),
                "finished": r.get("finished"),
            }
            for r in records
        ],
    }
