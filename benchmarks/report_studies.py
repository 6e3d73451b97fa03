"""Markdown of the studies' result files, for ``benchmarks/report.py`` and for the studies' own .md files.

The studies (``studies/``) write these results into ``benchmarks/results/`` and render their own Markdown
with the same functions, so a study's .md and its section of REPORT.md cannot drift apart. Studies import
from here; nothing under ``benchmarks/`` imports from ``studies/``. Kinds, each recognised by its keys:

- ``studies/int8_placement.py``: INT8 Q/DQ placements timed and scored (summarised here; the study prints
  its own per-pattern table);
- ``studies/input_contract.py``: catch rate and false refusals of the input contract;
- ``studies/int8_calibration.py``: INT8 calibration methods per pattern;
- ``studies/quantizers.py``: INT8 quantizers through the build's accuracy gate;
- ``studies/hole_training.py``: training on scenes with holes against clean training (a pilot), on clean
  and cloudy scenes.

Each ``*_lines`` function returns the lines under a heading (the caller writes the heading: ``#`` in the
study's file, ``##`` in the report); nothing here reads files or computes more than counts and means.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.markdown import fmt
from benchmarks.report_data import has_rows, pattern_order

#: The input contract study's verdict a wrong encoding was designed to get; only these count in the rate.
CAUGHT = "caught"


# --------------------------------------------------------------------------------------------------------
# INT8 Q/DQ placement (studies/int8_placement.py)
# --------------------------------------------------------------------------------------------------------


def is_placement(data: Mapping[str, Any]) -> bool:
    """``studies/int8_placement.py``: geometric-mean INT8 speed-up per placement and one row per pattern."""
    return isinstance(data.get("geomean_int8_speedup"), dict) and isinstance(data.get("patterns"), list)


def placement_section(path: Path, data: Mapping[str, Any]) -> list[str]:
    """The INT8 Q/DQ placement study (``studies/int8_placement.py``), summarised."""
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


# --------------------------------------------------------------------------------------------------------
# Input contract (studies/input_contract.py)
# --------------------------------------------------------------------------------------------------------


def is_input_contract(data: Mapping[str, Any]) -> bool:
    """``studies/input_contract.py``: correct and wrong cases, each with the refusal (or null)."""
    return "contract_source" in data and has_rows(data, "wrong", {"case", "expected", "refused"})


def input_contract_lines(result: Mapping[str, Any]) -> list[str]:
    """False refusals, the catch rate per wrong encoding (in the order measured), every correct input."""
    correct, wrong = result["correct"], result["wrong"]
    false = [c for c in correct if c["refused"]]
    lines = [
        f"Contract: {result['contract_source']}. Commit {result.get('commit', '?')}.",
        "",
        f"**False refusals: {len(false)} of {len(correct)} correct inputs.**",
        "",
        "| wrong encoding (no band descriptions) | caught | designed to be |",
        "| --- | ---: | --- |",
    ]
    for name in dict.fromkeys(w["case"] for w in wrong):
        rows = [w for w in wrong if w["case"] == name]
        caught = sum(1 for w in rows if w["refused"])
        lines.append(f"| {name} | {caught}/{len(rows)} | {rows[0]['expected']} |")
    expected = [w for w in wrong if w["expected"] == CAUGHT]
    rate = sum(1 for w in expected if w["refused"]) / max(len(expected), 1)
    lines += ["", f"Catch rate over the cases the contract is designed to catch: {rate:.1%}.", ""]
    lines += ["| correct input | verdict |", "| --- | --- |"]
    lines += [f"| {c['case']} | {'REFUSED: ' + c['refused'] if c['refused'] else 'ok'} |" for c in correct]
    example = next((w["refused"] for w in wrong if w["refused"]), "")
    return [*lines, "", "Example refusal:", "", f"> {example}", ""]


# --------------------------------------------------------------------------------------------------------
# INT8 calibration methods (studies/int8_calibration.py)
# --------------------------------------------------------------------------------------------------------


def is_int8_calibration(data: Mapping[str, Any]) -> bool:
    """``studies/int8_calibration.py``: settings and one row per pattern x calibration method."""
    return isinstance(data.get("settings"), dict) and has_rows(
        data, "rows", {"pattern", "method", "calib_logit_error", "gate_miou_drop"}
    )


def best_method(rows: Sequence[Mapping[str, Any]], pattern: str) -> str:
    """The method with the lowest calibration-tile logit error on ``pattern`` (how the default is chosen)."""
    return str(
        min((r for r in rows if r["pattern"] == pattern), key=lambda r: r["calib_logit_error"])["method"]
    )


def int8_calibration_lines(rows: Sequence[Mapping[str, Any]], settings: Mapping[str, Any]) -> list[str]:
    """Per pattern and method: calibration-tile logit error (lowest in bold) and gate-tile mIoU drop."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    patterns = list(dict.fromkeys(r["pattern"] for r in rows))
    lines = [
        f"Engines `{settings['engines']}`, {settings['calib_tiles']} calibration tiles (selection), "
        f"{settings['gate_tiles']} gate tiles (report), {settings['tile']} px. Logit error: mean "
        "|INT8 - FP32| over mean |FP32| on the calibration tiles; the lowest per pattern is in bold.",
        "",
        "| pattern | " + " | ".join(f"{m} logit err / gate drop" for m in methods) + " |",
        "| --- | " + " | ".join("---:" for _ in methods) + " |",
    ]
    for pattern in patterns:
        cells = {r["method"]: r for r in rows if r["pattern"] == pattern}
        best = best_method(rows, pattern)
        lines.append(
            f"| {pattern} | "
            + " | ".join(
                ("**{:.4f}**" if m == best else "{:.4f}").format(cells[m]["calib_logit_error"])
                + f" / {cells[m]['gate_miou_drop']:.2f}"
                for m in methods
            )
            + " |"
        )
    wins = {m: sum(1 for p in patterns if best_method(rows, p) == m) for m in methods}
    counts = ", ".join(f"{m} {n}" for m, n in wins.items())
    return [*lines, "", f"Lowest calibration-tile logit error: {counts}"]


# --------------------------------------------------------------------------------------------------------
# INT8 quantizers (studies/quantizers.py)
# --------------------------------------------------------------------------------------------------------


def is_quantizers(data: Mapping[str, Any]) -> bool:
    """``studies/quantizers.py``: one row per quantizer x pattern with its Q/DQ summary, and the summary."""
    return isinstance(data.get("summary"), dict) and has_rows(data, "rows", {"quantizer", "pattern", "qdq"})


def _drop(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


def quantizers_lines(result: Mapping[str, Any], heading: str = "##") -> list[str]:
    """Accuracy table, latency table (or its placeholder), placement table; ``heading`` marks sub-parts."""
    s = result["settings"]
    rows = result["rows"]
    lines = [
        f"Checkpoint `{s['checkpoint']}`; {s['calib_tiles']} calibration, {s['control_tiles']} control and "
        f"{s['gate_tiles']} gate tiles of {result['tile']} px (synthetic), gate budget {s['gate_budget']} "
        "mIoU. "
        "mIoU drop = FP32 mIoU - INT8 mIoU on the gate tiles (negative: INT8 scored higher); control = the "
        "fully quantized graph's drop on the control tiles, before accuracy control; float = layers it kept "
        "float.",
        "",
        "| pattern | quantizer | drop ORT | drop OpenVINO | agreement ORT / OV (%) | control | float "
        "| gate |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        drop, agree = row["miou_drop"], row["agreement"]
        lines.append(
            f"| `{row['pattern']}` | {row['quantizer']} | {_drop(drop['onnxruntime'])} | "
            f"{_drop(drop['openvino'])} | {_drop(agree['onnxruntime'])} / {_drop(agree['openvino'])} | "
            f"{_drop(row['control_drop_before'])} | {len(row['float_layers'])} | {row['gate']} |"
        )
    lines += ["", "Worst drop over the patterns (either backend) and mean drop per backend:", ""]
    lines += ["| quantizer | worst | mean ORT | mean OpenVINO |", "| --- | ---: | ---: | ---: |"]
    for quantizer, stats in result["summary"].items():
        lines.append(
            f"| {quantizer} | {_drop(stats['worst'])} | {_drop(stats['mean_onnxruntime'])} | "
            f"{_drop(stats['mean_openvino'])} |"
        )
    lines += ["", f"{heading} Latency", ""]
    if not result.get("latency"):
        lines.append(
            "To be measured on a quiet machine: `python studies/quantizers.py --latency` (same arguments)."
        )
    else:
        lat = result["latency"]
        lines += [
            f"{lat['tile']} px, batch 1, {lat['threads']} threads, median of {lat['rounds']} interleaved "
            f"rounds; load average {lat['load_start']} at start, {lat['load_end']} at end.",
            "",
            "| pattern | quantizer | OpenVINO INT8 ms (x FP32) | ORT INT8 ms (x FP32) |",
            "| --- | --- | ---: | ---: |",
        ]
        for row in rows:
            ov, ort = row["latency_ms"]["openvino"], row["latency_ms"]["onnxruntime"]
            lines.append(
                f"| `{row['pattern']}` | {row['quantizer']} | {ov['int8']:.2f} ({ov['x_fp32']:.2f}x) | "
                f"{ort['int8']:.2f} ({ort['x_fp32']:.2f}x) |"
            )
    lines += [
        "",
        f"{heading} Q/DQ placement",
        "",
        "| pattern | quantizer | QuantizeLinear | DequantizeLinear | INT8 convs / convs | quantized Adds | "
        "activation zero points | only here / only ours | TensorRT-legal |",
        "| --- | --- | ---: | ---: | ---: | ---: | --- | ---: | --- |",
    ]
    for row in rows:
        q = row["qdq"]
        versus = row.get("vs_ours")
        differ = f"{len(versus['only_here'])} / {len(versus['only_ours'])}" if versus else "n/a"
        zero_points = ", ".join(f"{k} {v}" for k, v in sorted(q["activation_zero_point_types"].items()))
        lines.append(
            f"| `{row['pattern']}` | {row['quantizer']} | {q['quantize_linear']} | "
            f"{q['dequantize_linear']} | {q['quantized_convs']} / {q['convs']} | {q['quantized_adds']} | "
            f"{zero_points} | {differ} | {'yes' if row['tensorrt_legal'] else 'no'} |"
        )
    return lines


# --------------------------------------------------------------------------------------------------------
# Training on scenes with holes (studies/hole_training.py)
# --------------------------------------------------------------------------------------------------------

#: The two runs ``studies/hole_training.py`` trains: on clean scenes, and with the hole options on.
HOLE_RUNS = ("clean", "holes")


def _is_hole_run(run: Any) -> bool:
    return (
        isinstance(run, dict)
        and isinstance(run.get("clean"), dict)
        and "clean_mean" in run
        and isinstance(run.get("cloudy_pytorch"), dict)
        and isinstance(run.get("cloudy_runtime"), dict)
        and "selection" in run["cloudy_runtime"]
    )


def is_hole_training(data: Mapping[str, Any]) -> bool:
    """``studies/hole_training.py``: settings and two runs (clean, holes), each scored three ways."""
    return isinstance(data.get("settings"), dict) and all(_is_hole_run(data.get(n)) for n in HOLE_RUNS)


def _pair(entry: Sequence[Any]) -> str:
    """An edge study ``[[margin, dilation], miou]`` as ``margin/dilation: miou``."""
    (margin, dilation), score = entry
    return f"{margin}/{dilation}: {float(score):.2f}"


def hole_training_lines(data: Mapping[str, Any]) -> list[str]:
    """Clean-test mIoU per pattern, cloudy scenes through PyTorch, and the runtime's edge choice, for the
    clean-trained and the hole-trained model side by side (difference: hole-trained - clean-trained)."""
    clean, holes = (data[n] for n in HOLE_RUNS)
    s = data["settings"]
    options = ", ".join(f"`{k}` {v}" for k, v in holes["options"].items()) or "none"
    lines = [
        f"**Pilot: one seed** (seed {s.get('seed', '?')}), {s.get('steps', '?')} steps, "
        f"{s.get('train_scenes', '?')} training scenes, {s.get('scenes', '?')} clean test and "
        f"{s.get('scenes', '?')} cloudy scenes of 256 px; commit {data.get('commit', '?')}. "
        f"Both runs train the `edge` recipe with the same seed; the hole-trained one with {options}.",
        "",
        "Clean test scenes, mIoU per pattern:",
        "",
        "| pattern | clean-trained | hole-trained | difference |",
        "| --- | ---: | ---: | ---: |",
    ]
    for pattern in sorted(clean["clean"], key=pattern_order):
        a, b = clean["clean"][pattern], holes["clean"].get(pattern)
        diff = "" if b is None else f"{b - a:+.2f}"
        lines.append(f"| `{pattern}` | {a:.2f} | {'' if b is None else f'{b:.2f}'} | {diff} |")
    a, b = clean["clean_mean"], holes["clean_mean"]
    lines.append(f"| mean | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
    cloudy_a, cloudy_b = clean["cloudy_pytorch"], holes["cloudy_pytorch"]
    fraction = cloudy_a.get("hole_fraction")
    lines += [
        "",
        "Held-out cloudy scenes through PyTorch, mIoU; composite: each pixel predicted by the pattern of the "
        "modalities valid there (context margin 0); holes: pixels where some modality is missing"
        + ("" if fraction is None else f" ({float(fraction):.1%} of the pixels)")
        + "; clear: pixels where every modality is valid:",
        "",
        "| prediction | region | clean-trained | hole-trained | difference |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for prediction, label in (("composite", "composite"), ("full_pattern_zero_filled", "full, zero-filled")):
        for region in ("all", "holes", "clear"):
            key = f"{prediction}/{region}"
            if key in cloudy_a and key in cloudy_b:
                a, b = cloudy_a[key], cloudy_b[key]
                lines.append(f"| {label} | {region} | {a:.2f} | {b:.2f} | {b - a:+.2f} |")
    runtime_a, runtime_b = clean["cloudy_runtime"], holes["cloudy_runtime"]
    held_out = runtime_a.get("held_out") or {}
    lines += [
        "",
        f"Through the runtime (FP32 engines, `studies/edge_study.py`): pooled mIoU on "
        f"{held_out.get('scenes', '?')} held-out cloudy scenes of {held_out.get('size', '?')} px, as "
        "context margin / optical dilation (px): score. Selection: the pair each model's validation "
        "scenes pick; best fixed margin: the best margin without dilation; best in hindsight: the best pair "
        "on these scenes.",
        "",
        "| model | selection | best fixed margin | best in hindsight | measured margin |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, row in (("clean-trained", runtime_a), ("hole-trained", runtime_b)):
        measured = row.get("measured_margin")
        lines.append(
            f"| {name} | {_pair(row['selection'])} | {_pair(row['best_fixed_margin'])} | "
            f"{_pair(row['best_in_hindsight'])} | "
            + ("" if measured is None else f"{measured[0]} px: {float(measured[1]):.2f}")
            + " |"
        )
    gain = float(runtime_b["selection"][1]) - float(runtime_a["selection"][1])
    lines += ["", f"Hole-trained selection - clean-trained selection: {gain:+.2f} mIoU.", ""]
    return lines


# --------------------------------------------------------------------------------------------------------
# Report sections
# --------------------------------------------------------------------------------------------------------


def study_section(title: str, path: Path, script: str, lines: list[str]) -> list[str]:
    """A study's report section: its title and file, the script that wrote it, then its lines."""
    return [
        f"## {title}: `{path.name}`",
        "",
        f"Written by `python {script}` (studies/README.md).",
        "",
        *lines,
    ]


def input_contract_section(path: Path, data: Mapping[str, Any]) -> list[str]:
    lines = input_contract_lines(data)
    return study_section(
        "Input contract: catch rate and false refusals", path, "studies/input_contract.py", lines
    )


def int8_calibration_section(path: Path, data: Mapping[str, Any]) -> list[str]:
    lines = [*int8_calibration_lines(data["rows"], data["settings"]), ""]
    return study_section("INT8 calibration methods", path, "studies/int8_calibration.py", lines)


def quantizers_section(path: Path, data: Mapping[str, Any]) -> list[str]:
    lines = [*quantizers_lines(data, heading="###"), ""]
    return study_section("INT8 quantizers through the accuracy gate", path, "studies/quantizers.py", lines)


def hole_training_section(path: Path, data: Mapping[str, Any]) -> list[str]:
    lines = hole_training_lines(data)
    return study_section("Training on scenes with holes (pilot)", path, "studies/hole_training.py", lines)
