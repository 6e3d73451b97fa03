"""Markdown sections of ``benchmarks/report.py`` for training speed, ``run-batch`` throughput and peak memory.

Results of ``benchmarks/train_speed.py`` (``stars-edge/train-speed/*``), ``benchmarks/batch.py``
(``stars-edge/batch/*``) and ``benchmarks/runtime_memory.py`` (``"benchmark": "runtime peak RSS vs scene
size"``). Each section shows the measured numbers, the ratios the benchmark itself reports, the machine and
its load, and the command, so a reader can judge and reproduce them without opening the JSON.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks.markdown import fmt

#: CPU flags that give bf16 arithmetic in hardware; without them ``--autocast bf16`` is emulated.
BF16_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16")


def quick_note(data: Mapping[str, Any]) -> list[str]:
    """A warning for smoke runs: their settings are shrunk to test the harness, the numbers mean nothing."""
    if not data.get("quick"):
        return []
    return [
        "> **Quick smoke run** (`quick: true`): shrunk settings that only check the harness works; these "
        "numbers are not measurements and must not be compared or quoted.",
        "",
    ]


def _command(command: Any) -> str:
    return f"- Command: `{command}`." if command else "- Command: not recorded in the file."


def _machine(machine: Mapping[str, Any], load_note: str) -> str:
    """Machine, CPU flags and the 1-minute load average, which says whether other work shared the cores."""
    flags = ", ".join(machine.get("cpu_flags") or []) or "not recorded"
    return (
        f"- Machine: {machine.get('cpu_model')}, {machine.get('usable_cores')} usable cores, "
        f"{machine.get('memory_gib')} GiB; CPU flags {flags}; 1-minute load average "
        f"{machine.get('load_average_1m')} {load_note}."
    )


def _versions(machine: Mapping[str, Any]) -> list[str]:
    versions = ", ".join(f"{k} {v}" for k, v in (machine.get("versions") or {}).items() if v)
    return [f"- Versions: {versions}."] if versions else []


def _ratio(value: float | None, base: float | None) -> str:
    return f"{value / base:.2f}x" if value and base else "n/a"


def train_speed_section(path: Path, data: Mapping[str, Any]) -> list[str]:
    """Steps/s of the accuracy study's recipe per speed option, against one-thread fp32."""
    rows = data["rows"]
    settings = data.get("settings") or {}
    machine = data.get("machine") or {}
    base = next((r["steps_per_s"] for r in rows if r["mode"] == "fp32" and r["threads"] == 1), None)
    bf16 = [flag for flag in BF16_FLAGS if flag in (machine.get("cpu_flags") or [])]
    lines = [
        f"## Training speed: `{path.name}` ({data.get('written')}"
        f"{', quick smoke run' if data.get('quick') else ''})",
        "",
        *quick_note(data),
        _command(data.get("command")),
        f"- Recipe timed: variant `{settings.get('variant')}`, method `{settings.get('method')}`, batch "
        f"{settings.get('batch_size')}, {settings.get('tile_size')} px tiles from {settings.get('scenes')} "
        f"synthetic scenes of {settings.get('scene_size')} px; {settings.get('steps')} timed steps after "
        f"{settings.get('warmup')} warm-up steps, each mode in a fresh process.",
        _machine(
            machine,
            f"at the start, before the timed runs (above {machine.get('usable_cores')} means other work "
            "competed for the cores)",
        ),
        f"- bf16 in hardware: {'yes (' + ', '.join(bf16) + ')' if bf16 else 'no (bf16 is emulated)'}.",
        *_versions(machine),
        "",
        "| mode | threads | layout | s / step | steps/s | x fp32 1 thread | final total loss |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['mode']} | {r['threads']} | {r['layout']} | {fmt(r['seconds_per_step'], 4) or 'n/a'} "
            f"| {fmt(r['steps_per_s'], 3) or 'n/a'} | {_ratio(r['steps_per_s'], base)} "
            f"| {fmt(r.get('final_total_loss'), 3)} |"
        )
    pair = [r["steps_per_s"] or 0.0 for r in rows if str(r["layout"]).startswith("side by side")]
    if pair:
        lines += [
            "",
            f"Two one-thread fp32 runs side by side: {sum(pair):.3f} steps/s together "
            f"({_ratio(sum(pair), base)} one fp32 run alone on one thread).",
        ]
    return [*lines, ""]


def _batch_load_note(data: Mapping[str, Any]) -> str:
    """Schema 1 sampled the load after the runs; schema 2 samples it first and the end load apart."""
    if str(data.get("schema", "")).endswith("/1"):
        return (
            "when the result was written, just after the runs (the benchmark's own processes count in it, "
            "so it cannot tell whether other work competed)"
        )
    end = data.get("load_average_1m_end")
    return f"at the start, before the scenes were written ({end} at the end, counting its own workers)"


def batch_section(path: Path, data: Mapping[str, Any]) -> list[str]:
    """``run-batch`` wall time and throughput against running the same scenes one by one."""
    machine = data.get("machine") or {}
    scenes = data.get("scenes") or []
    size = data.get("scene_size")
    megapixels = fmt((data.get("pixels") or 0) / 1e6)
    lines = [
        f"## Batch throughput (`run-batch`): `{path.name}` ({data.get('created')}"
        f"{', quick smoke run' if data.get('quick') else ''})",
        "",
        *quick_note(data),
        _command(data.get("command")),
        f"- {len(scenes)} synthetic scenes of {size}x{size} px ({megapixels} Mpx in "
        f"all; modality subsets {', '.join(str(s.get('modalities')) for s in scenes)}), tile "
        f"{data.get('tile')}, overlap {data.get('overlap')}, {data.get('precision')} on "
        f"{data.get('backend')}, engines `{data.get('engines')}`; median wall time of {data.get('repeats')} "
        "rounds.",
        _machine(machine, _batch_load_note(data)),
        *_versions(machine),
        "",
        "| mode | workers | wall s (median) | wall s per round | scenes/min | Mpx/s | vs `stars-edge run` "
        "loop | vs in-process loop | class maps identical |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in data["rows"]:
        same = {None: "", True: "yes", False: "**no**"}[r.get("class_maps_identical_to_sequential")]
        rounds = ", ".join(f"{v:.2f}" for v in r.get("wall_s", []))
        lines.append(
            f"| {r['mode']} | {r['workers']} | {r['wall_s_median']:.2f} | {rounds} | "
            f"{r['scenes_per_minute']:.1f} | {r['mpx_per_s']:.2f} | "
            f"{100 * r['overhead_vs_sequential_cli']:+.1f} % | "
            f"{100 * r['overhead_vs_sequential_inprocess']:+.1f} % | {same} |"
        )
    lines += [
        "",
        "The two `vs` columns are wall-time overheads against running the scenes one by one (wall time / "
        "sequential wall time - 1; negative is faster): a `stars-edge run` process per scene, and one "
        "in-process `Predictor`.",
    ]
    return [*lines, ""]


def _flags(flags: Any) -> str:
    """Older memory results store the flags as one string, newer ones as a list like every other result."""
    if isinstance(flags, str):
        return flags or "not recorded"
    return ", ".join(flags or []) or "not recorded"


def memory_section(path: Path, data: Mapping[str, Any]) -> list[str]:
    """Peak RSS of ``predict_scene`` per scene size, and how it grows with width and with both sides."""
    results = data["results"]
    cache = data.get("gdal_cachemax_mb")
    rerun = "python benchmarks/runtime_memory.py --sizes " + ",".join(
        f"{r['height']}x{r['width']}" for r in results
    )
    rerun += "" if cache is None else f" --gdal-cachemax {cache}"
    load = data.get("load_average_1m")
    lines = [
        f"## Runtime peak memory: `{path.name}` ({data.get('benchmark')})",
        "",
        *quick_note(data),
        _command(data.get("command"))
        if data.get("command")
        else f"- Command: not recorded in the file; these settings are `{rerun}`.",
        f"- Machine: {data.get('cores')} cores; CPU flags {_flags(data.get('cpu_flags'))}; 1-minute load "
        "average at the start "
        f"{'not recorded' if load is None else load} (peak RSS does not depend on load; the seconds do). "
        f"GDAL_CACHEMAX: {'the runtime sizing' if cache is None else f'{cache} MB'}. Peak RSS of the "
        f"scene-writing parent process {fmt(data.get('parent_peak_rss_mib'), 1)} MiB; whole run "
        f"{data.get('wall_seconds')} s.",
        "",
        "| scene (H x W) | Mpx | peak RSS (MiB) | seconds | chunks | engine runs |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        runs = ", ".join(f"{k}: {v}" for k, v in (r.get("engine_runs") or {}).items())
        lines.append(
            f"| {r['height']} x {r['width']} | {r['height'] * r['width'] / 1e6:.1f} | "
            f"{r['peak_rss_mib']:.1f} | {fmt(r.get('seconds'))} | {fmt(r.get('chunks'))} | {runs} |"
        )
    ratios: Mapping[str, Any] = data.get("ratios") or {}
    if ratios:
        lines += [
            "",
            "Peak RSS, larger scene / smaller: "
            + "; ".join(f"{k}: {v:.3f}" for k, v in ratios.items())
            + ".",
        ]
    return [*lines, ""]


def _head(title: str, data: Mapping[str, Any], description: str) -> list[str]:
    """A section's title, its command and one line saying what was measured and where."""
    return [f"## {title}", "", _command(data.get("command")), f"- {description}", ""]


def _flags_and_load(machine: Mapping[str, Any]) -> str:
    """CPU flags and the load average around a measurement, as one sentence."""
    return (
        f"CPU flags {_flags(machine.get('cpu_flags'))}; 1-minute load average {machine.get('load_start')} at "
        f"the start, {machine.get('load_end')} at the end."
    )


def int8_default_tile_section(path: Path, data: Mapping[str, Any]) -> list[str]:
    """``benchmarks/int8_default_tile.py``: ms per tile per backend, precision and batch; the speed-ups."""
    machine = data.get("machine") or {}
    settings = data.get("settings") or {}
    lines = [
        *_head(
            f"INT8 at the default tile: `{path.name}` (`benchmarks/int8_default_tile.py`)",
            data,
            f"Engines: `{data.get('engines')}`; tile {settings.get('tile')}, {settings.get('rounds')} "
            f"interleaved rounds of {settings.get('calls')} calls; {_flags_and_load(machine)}",
        ),
        "| backend, precision, batch | ms per tile (median of rounds) |",
        "| --- | ---: |",
    ]
    lines += [f"| {key} | {value:.3f} |" for key, value in (data.get("ms_per_tile") or {}).items()]
    speedups: Mapping[str, Any] = data.get("int8_speedup_over_ort_fp32") or {}
    if speedups:
        lines += [
            "",
            "INT8 over ONNX Runtime FP32 (OpenVINO's unless the key says otherwise): "
            + "; ".join(f"{k} {v:.2f}x" for k, v in speedups.items())
            + " (target 1.5x, best of each).",
        ]
    return [*lines, ""]


def arrays_profile_section(path: Path, data: Mapping[str, Any]) -> list[str]:
    """``benchmarks/arrays_profile.py``: seconds per stage of ``predict_arrays`` with nothing overlapped."""
    machine = data.get("machine") or {}
    stages: Mapping[str, float] = data.get("stage_seconds") or {}
    total = sum(stages.values()) or 1.0
    lines = [
        f"## Where predict_arrays spends its time: `{path.name}` (`benchmarks/arrays_profile.py`)",
        "",
        _command(data.get("command")),
        f"- {data.get('size')} px `{data.get('scene')}` scene, {data.get('backend')} "
        f"{data.get('precision')}; profiled serial run {fmt(data.get('serial_profiled_seconds'))} s, "
        f"threaded run {fmt(data.get('threaded_seconds'))} s, same class map: {data.get('same_class_map')}; "
        f"CPU flags {_flags(machine.get('cpu_flags'))}; 1-minute load average {machine.get('load_start')} at "
        "the start.",
        "",
        "| stage | seconds | share |",
        "| --- | ---: | ---: |",
    ]
    lines += [f"| {stage} | {value:.3f} | {100 * value / total:.1f} % |" for stage, value in stages.items()]
    return [*lines, ""]


def training_runtime_sections(
    train_speed: Sequence[tuple[Path, Mapping[str, Any]]],
    batch: Sequence[tuple[Path, Mapping[str, Any]]],
    memory: Sequence[tuple[Path, Mapping[str, Any]]],
) -> list[str]:
    """All three kinds in report order: training first, then the runtime's throughput and memory."""
    lines: list[str] = []
    for path, data in train_speed:
        lines += train_speed_section(path, data)
    for path, data in batch:
        lines += batch_section(path, data)
    for path, data in memory:
        lines += memory_section(path, data)
    return lines


def streams_ab_section(path: Path, data: Mapping[str, Any]) -> list[str]:
    """``benchmarks/streams_ab.py``: end-to-end wall per case at each stream (or reader) count."""
    machine = data.get("machine") or {}
    counts = [str(c) for c in data.get("streams_compared") or []]
    setting = str(data.get("setting_compared") or "streams")
    title = {
        "readers": "Reader threads",
        "code": f"Two versions of the code (baseline: {data.get('against')})",
    }
    lines = [
        f"## {title.get(setting, 'Engine streams')} end to end: `{path.name}` (`benchmarks/streams_ab.py`)",
        "",
        _command(data.get("command")),
        f"- {data.get('size')} px Sentinel-2-like scene; {data.get('rounds')} interleaved rounds of separate "
        f"processes, {data.get('calls')} timed runs each; {_flags_and_load(machine)}",
        "",
        "| case | "
        + " | ".join(f"{setting} {c}: median (min) wall s, CPU s" for c in counts)
        + " | speed-up | "
        "same class maps |",
        "| --- | " + " | ".join("---:" for _ in counts) + " | ---: | --- |",
    ]
    for case, row in (data.get("streams_ab") or {}).items():
        cells = [
            f"{fmt(row[f'{setting} {c}']['median_wall_s'])} ({fmt(row[f'{setting} {c}']['min_wall_s'])}), "
            f"{fmt(row[f'{setting} {c}']['median_cpu_s'])}"
            for c in counts
        ]
        speedups = "; ".join(f"{v:.2f}x" for v in (row.get("speedup") or {}).values())
        lines.append(f"| {case} | " + " | ".join(cells) + f" | {speedups} | {row.get('same_class_maps')} |")
    return [*lines, ""]


def reader_alone_section(path: Path, data: Mapping[str, Any]) -> list[str]:
    """``benchmarks/reader_alone.py``: CPU of reading and preparing every tile on one thread, per repeat."""
    machine = data.get("machine") or {}
    lines = [
        *_head(
            f"The reader stage alone: `{path.name}` (`benchmarks/reader_alone.py`)",
            data,
            f"{data.get('scene')} scene, {data.get('size')} px; every tile read and prepared on one thread, "
            f"GDAL decoding there; {_flags_and_load(machine)}",
        ),
        "| repeat | tile | tiles | wall s | CPU s | reading CPU s | preparing CPU s |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for index, run in enumerate((data.get("reader_alone") or {}).get("runs") or [], start=1):
        lines.append(
            f"| {index} | {run.get('tile')} | {run.get('tiles')} | {fmt(run.get('wall_seconds'))} | "
            f"{fmt(run.get('cpu_seconds'))} | {fmt(run.get('read_cpu_seconds'))} | "
            f"{fmt(run.get('preprocess_cpu_seconds'))} |"
        )
    return [*lines, ""]


def contention_section(path: Path, data: Mapping[str, Any]) -> list[str]:
    """``benchmarks/contention.py``: the engines' calls and decoding, alone and at once, per arrangement."""
    machine = data.get("machine") or {}
    result = data.get("contention") or {}
    lines = [
        *_head(
            f"The CPU floor's own work, alone and at once: `{path.name}` (`benchmarks/contention.py`)",
            data,
            f"{data.get('scene')} scene, {data.get('size')} px, tile {data.get('tile')}, batch "
            f"{data.get('batch')}, {data.get('backend')} {data.get('precision')}; {_flags_and_load(machine)}",
        ),
        "| arrangement | engine threads, streams | decoding threads | engines alone: wall s, CPU s | "
        "decoding alone: wall s, CPU s | both at once: wall s, CPU s |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for name, arrangement in (result.get("arrangements") or {}).items():
        median = arrangement.get("median") or {}
        parts = [median.get(part) or {} for part in ("engines", "decoding", "both")]
        cells = [f"{fmt(part.get('wall_seconds'))}, {fmt(part.get('cpu_seconds'))}" for part in parts]
        lines.append(
            f"| {name} | {arrangement.get('threads') or 'default'}, {arrangement.get('streams')} | "
            f"{arrangement.get('decoding_threads')} | " + " | ".join(cells) + " |"
        )
    lines += [
        "",
        f"Floor {fmt(result.get('floor_seconds'))} s on {result.get('cores')} cores; both at once at best "
        f"{fmt(result.get('both_wall_seconds'))} s ({result.get('fastest_arrangement')}): bound "
        f"{fmt(result.get('bound'))}, the largest `floor_fraction` this work reaches before a runtime adds "
        "anything.",
        "",
    ]
    return lines


def thread_cpu_section(path: Path, data: Mapping[str, Any]) -> list[str]:
    """``benchmarks/thread_cpu.py``: each run's CPU seconds by thread role."""
    machine = data.get("machine") or {}
    runs = (data.get("thread_cpu") or {}).get("runs") or []
    roles = list((runs[0].get("roles") or {}) if runs else {})
    lines = [
        *_head(
            f"A scene's CPU by thread: `{path.name}` (`benchmarks/thread_cpu.py`)",
            data,
            f"{data.get('scene')} scene, {data.get('size')} px, tile {data.get('tile')}, batch "
            f"{data.get('batch')}, {data.get('backend')} {data.get('precision')}, GDAL_NUM_THREADS "
            f"{data.get('gdal_num_threads')}; {_flags_and_load(machine)}",
        ),
        "| run | wall s | process CPU s | seen | "
        + " | ".join(f"{role} CPU s" for role in roles)
        + " | idle core-s | cores busy by tenth | minor faults |",
        "| --- | ---: | ---: | ---: | " + " | ".join("---:" for _ in roles) + " | ---: | --- | ---: |",
    ]
    for run in runs:
        cells = " | ".join(fmt((run.get("roles") or {}).get(role)) for role in roles)
        coverage = run.get("coverage")
        seen = f"{coverage:.0%}" if isinstance(coverage, (int, float)) else "-"
        busy = run.get("utilisation") or {}
        by_tenth = busy.get("busy_cores_by_tenth") or []
        tenths = " ".join("-" if b is None else f"{b:.1f}" for b in by_tenth) or "-"
        faults = run.get("minor_faults")
        lines.append(
            f"| {run.get('run')} | {fmt(run.get('wall_seconds'))} | {fmt(run.get('process_cpu_seconds'))} | "
            f"{seen} | {cells} | {fmt(busy.get('idle_core_seconds'))} | {tenths} | "
            f"{sum(faults.values()) if isinstance(faults, dict) else '-'} |"
        )
    return [*lines, ""]
