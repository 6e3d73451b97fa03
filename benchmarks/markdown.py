"""Markdown tables of a latency result, shared by ``latency.py`` (its own .md) and ``report.py`` (REPORT.md).

Each function turns part of a parsed ``stars-edge/latency`` result into lines; nothing here measures or
reads files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any


def fmt(value: Any, digits: int = 2) -> str:
    """A table cell: fixed decimals for floats, empty for missing or non-finite values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def engine_table(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """One line per timed configuration: latency per call, per tile, throughput and compute rate."""
    lines = [
        "| pattern | precision | backend | device | batch | ms median | ms p90 | ms / tile | tiles/s | Mpx/s "
        "| GFLOP/tile | GFLOP/s | of sgemm |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        fraction = row.get("gflops_fraction")
        cells = [
            f"`{row['pattern']}`",
            row["precision"],
            row["backend"] + (f" ({row['variant']})" if row.get("variant") else ""),
            row["device"],
            str(row["batch"]),
            fmt(row["ms_median"]),
            fmt(row["ms_p90"]),
            fmt(row["ms_per_tile"]),
            fmt(row["tiles_per_s"]),
            fmt(row["mpx_per_s"]),
            fmt(row.get("gflop_per_tile"), 3),
            fmt(row.get("achieved_gflops"), 1),
            "" if fraction is None else f"{100 * fraction:.1f} %",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def skipped_lines(skipped: Sequence[str]) -> list[str]:
    """Configurations that could not be timed, with the reason (empty when none were skipped)."""
    if not skipped:
        return []
    return ["", "Not timed:", "", *(f"- {reason}" for reason in skipped)]


def e2e_lines(e2e: Mapping[str, Any] | None) -> list[str]:
    """The end-to-end section: setup sentence and one line per scene size."""
    if not e2e or not e2e.get("runs"):
        return [f"Not measured: {(e2e or {}).get('skipped', 'no end-to-end section in this run')}."]
    lines = [
        f"`runtime.Predictor.predict_scene` on the `{e2e.get('scene', 'full')}` synthetic scene, "
        f"{e2e['precision']} on {e2e['backend']}, tile {e2e['tile']}, "
        f"GDAL_NUM_THREADS={e2e.get('gdal_num_threads', '1')}, "
        f"overlap {e2e['overlap']}, {e2e['threads']} threads, each scene size in its own child process; "
        f"engine-only {fmt(e2e.get('engine_only_mpx_per_s'))} Mpx/s "
        f"({fmt(e2e.get('engine_only_ms_per_tile'))} ms/tile, batch 1).",
        "",
        "| scene | px | tiles | load s | predict s | Mpx/s | of engine-only (raw) | engine busy "
        "| inference stage / engine-only | CPU floor fraction (warm) | arrays fraction (warm) | peak RSS MiB "
        "| sampled peak MiB | stages (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for run in e2e["runs"]:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in run.get("stages", {}).items())
        cells = [
            str(run.get("scene", e2e.get("scene", "full"))),
            str(run["size"]),
            str(run["tiles"]),
            fmt(run.get("load_s")),
            fmt(run["predict_s"]),
            fmt(run["mpx_per_s"]),
            fmt(run.get("fraction_of_engine_only")),
            fmt(run.get("engine_busy_fraction")),
            fmt(run.get("inference_stage_vs_engine_only")),
            _with_warm(run, "floor_fraction"),
            _with_warm(run, "arrays_fraction"),
            fmt(run["peak_rss_mib"], 0),
            fmt(run.get("sampled_peak_rss_mib"), 0),
            stages,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    details = [line for run in e2e["runs"] for line in where_time_goes(run)]
    if details:
        lines += [
            "",
            "Where the time goes (CPU floor, stages, engine-only vs the inference stage):",
            "",
            "```",
        ]
        lines += [line.removeprefix("  ") for line in details] + ["```"]
    return lines


#: Stages that run on the main thread (read and preprocess run on the reader threads, encode on the writer
#: thread, overlapping them).
MAIN_THREAD_STAGES: tuple[str, ...] = ("wait", "inference", "blend", "write")


def cpu_by_stage(run: Mapping[str, Any]) -> list[str]:
    """The run's CPU split by the thread CPU of each stage; the rest is the engines' own threads (their
    native worker threads run outside every stage) and work no stage times (start-up, commit)."""
    cpu: Mapping[str, float] = run.get("stages_cpu") or {}
    if not cpu or run.get("cpu_s") is None:
        return []
    staged = sum(cpu.values())
    cells = ", ".join(f"{name} {seconds:.2f}" for name, seconds in cpu.items())
    return [
        f"    CPU by stage (s, each stage's own threads): {cells}; the run's {run['cpu_s']:.2f} CPU-s less "
        f"these {staged:.2f}: {run['cpu_s'] - staged:.2f} CPU-s in the engines' threads and outside the "
        "stages"
    ]


def _with_warm(run: Mapping[str, Any], key: str) -> str:
    """A run's first-scene fraction, with the second scene's in the same process in brackets."""
    text = fmt(run.get(key), 3)
    warm = run.get(f"{key}_warm")
    return text if warm is None else f"{text} ({fmt(warm, 3)})"


def where_time_goes(run: Mapping[str, Any]) -> list[str]:
    """Lines that say where an end-to-end run's wall time went beyond its CPU floor and its engines."""
    floor = run.get("floor")
    engine = run.get("engine_only")
    if not floor or not engine:
        return []
    stages: Mapping[str, float] = run.get("stages") or {}
    wall = float(run["predict_s"])
    engine_cpu, decode_cpu = floor["engine_cpu_seconds"], floor["decode_cpu_seconds"]
    lines = [
        f"  {run.get('scene', '?')} {run['size']} px: wall {wall:.2f} s ({run['mpx_per_s']:.2f} Mpx/s); "
        f"CPU floor {floor['floor_seconds']:.2f} s = (engine-only CPU {engine_cpu:.2f} s + decode-once CPU "
        f"{decode_cpu:.2f} s) / {floor['cores']} cores -> floor_fraction {floor['floor_fraction']:.3f}",
    ]
    if run.get("cpu_s") is not None:
        needed = engine_cpu + decode_cpu
        lines.append(
            f"    the run used {run['cpu_s']:.2f} CPU-s, the floor's work {needed:.2f} CPU-s: "
            f"{run['cpu_s'] - needed:.2f} CPU-s more (decoding again, normalising, blending, writing, "
            "spinning threads)"
        )
    inference = stages.get("inference")
    main = sum(stages.get(s, 0.0) for s in MAIN_THREAD_STAGES)
    cells = ", ".join(f"{name} {seconds:.2f}" for name, seconds in stages.items())
    lines.append(
        f"    stages (s): {cells} (read and preprocess on the reader threads, encode on the writer "
        "thread, overlapping the rest)"
    )
    warm = run.get("floor_warm")
    if warm:
        cpu = f", {run['cpu_warm_s']:.2f} CPU-s" if run.get("cpu_warm_s") is not None else ""
        lines.append(
            f"    a second scene in the same process (backend imported, engines loaded, call shapes seen): "
            f"wall {warm['wall_seconds']:.2f} s{cpu} -> floor_fraction {warm['floor_fraction']:.3f}"
        )
    lines += cpu_by_stage(run)
    if inference is not None:
        lines.append(
            f"    inference stage {inference:.2f} s vs engine-only wall {engine['wall_seconds']:.2f} s: "
            f"{inference - engine['wall_seconds']:+.2f} s inside the pipeline (composing patterns, "
            "contention with the reader; engines load at their first call: "
            f"{sum(p['load_and_first_call_s'] for p in engine['per_pattern'].values()):.2f} s alone); main "
            f"thread outside its stages (start-up, range check, commit): {wall - main:.2f} s"
        )
    shapes = f"    engine-only shapes: {engine['shapes']}"
    if engine.get("first_call_seconds_total") is not None:
        shapes += (
            f"; first calls at shapes new to a loaded engine {engine['first_call_seconds_total']:+.2f} s "
            "over steady calls (not in the floor)"
        )
    lines.append(shapes)
    arrays = run.get("arrays")
    if arrays:
        differs = not arrays["pattern_pixels_match_file_run"]
        lines.append(
            f"    from arrays: predict_arrays {arrays['wall_seconds']:.2f} s ({arrays['cpu_seconds']:.2f} "
            f"CPU-s), engine-only {arrays['engine_wall_seconds']:.2f} s -> arrays_fraction "
            f"{arrays['arrays_fraction']:.3f}"
            + (" (WARNING: its pattern map differs from the file run's)" if differs else "")
        )
        if arrays.get("warm_wall_seconds") is not None:
            lines.append(
                f"    predict_arrays again on the same predictor: {arrays['warm_wall_seconds']:.2f} s "
                f"({arrays['warm_cpu_seconds']:.2f} CPU-s) -> arrays_fraction "
                f"{arrays['arrays_fraction_warm']:.3f}"
                + ("" if arrays["warm_same_maps"] else " (WARNING: its maps differ from the first call's)")
            )
        rows = arrays.get("rows")
        if rows:
            lines.append(
                f"    as a sensor's stream: predict_rows {rows['wall_seconds']:.2f} s in "
                f"{rows['block_rows']}-row blocks, at most {rows['peak_input_rows']} input rows held -> "
                f"{rows['rows_fraction']:.3f} of engine-only"
                + ("" if rows["same_maps_as_arrays"] else " (WARNING: its maps differ from predict_arrays')")
            )
    elif run.get("arrays_skipped"):
        lines.append(f"    from arrays: not run ({run['arrays_skipped']})")
    return lines


def gpu_lines(gpu: Mapping[str, Any]) -> list[str]:
    """Which GPU and TensorRT ran, or why none did."""
    if gpu.get("available"):
        devices = "; ".join(
            f"{d['name']} (driver {d['driver']}, sm{d['compute_capability']}, {d['memory']})"
            for d in gpu["devices"]
        )
        lines = [f"{devices}; TensorRT {gpu.get('tensorrt') or 'absent'}."]
    else:
        lines = [f"No GPU in this run: {gpu.get('reason', 'not detected')}."]
    if gpu.get("tensorrt_reason"):
        lines.append(f"TensorRT not available: {gpu['tensorrt_reason']}.")
    return lines


def targets_table(targets: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each target with its measured value and verdict."""
    lines = ["| target | measured | verdict | how |", "| --- | ---: | --- | --- |"]
    for target in targets:
        measured = "" if target["measured"] is None else f"{target['measured']:.3f} {target['unit']}"
        lines.append(f"| {target['target']} | {measured} | **{target['verdict']}** | {target['detail']} |")
    return lines
