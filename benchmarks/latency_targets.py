"""The issue's targets, evaluated on rows of one run, and the Markdown a run writes.

Ratios compare configurations measured in the same run, interleaved (``benchmarks.latency_engines``). A
run that started on a loaded machine still reports its numbers, but every target says the run was not fair
and the header carries a warning: its ratios must not be quoted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from benchmarks.common import e2e_lines, engine_table, fmt, gpu_lines, skipped_lines, targets_table, verdict
from benchmarks.latency_plan import FULL_PATTERN, Echo
from runtime.predictor import CHUNK_WIDTH
from runtime.scheduling import READER_STAGES

TARGET_INT8_VS_ORT_FP32 = 1.5
TARGET_OV_INT8_VS_OV_FP32 = 1.3
TARGET_ORT_VS_EAGER = 1.5
TARGET_MIOU_LOSS = 0.5
TARGET_GFLOPS_FRACTION = 0.70
TARGET_EDGE_INT8_MPX = 3.0
TARGET_E2E_FRACTION = 0.60
TARGET_RSS_GROWTH = 0.10
#: Issue 21: the scene within 80 % of its CPU floor (clean and cloudy Sentinel-2-like scene), the arrays run
#: within 70 % of its engines (clean), INT8 1.5x ORT FP32 at the tile the runtime uses by default.
TARGET_FLOOR_FRACTION = 0.80
TARGET_ARRAYS_FRACTION = 0.70
TARGET_INT8_DEFAULT_TILE = 1.5
S2_CLEAN, S2_CLOUDY = "s2like", "s2like_clouds"
INT8_CPU_BACKENDS = ("onnxruntime", "openvino")


def find_row(
    rows: Sequence[Mapping[str, Any]],
    precision: str,
    backend: str | tuple[str, ...],
    batch: int | None = None,
    pattern: str = FULL_PATTERN.name,
) -> Mapping[str, Any] | None:
    """The fastest CPU row (in Mpx/s) for pattern/precision/backend(s), at ``batch`` when given."""
    backends = (backend,) if isinstance(backend, str) else backend
    matches = [
        r
        for r in rows
        if r["pattern"] == pattern
        and r["precision"] == precision
        and r["backend"] in backends
        and r["device"] == "cpu"
        and (batch is None or r["batch"] == batch)
    ]
    return max(matches, key=lambda r: r["mpx_per_s"]) if matches else None


def _ratio(slow: Mapping[str, Any] | None, fast: Mapping[str, Any] | None) -> float | None:
    return slow["ms_median"] / fast["ms_median"] if slow and fast else None


def _label(row: Mapping[str, Any] | None) -> str:
    if row is None:
        return "not measured"
    variant = f" {row['variant']}" if row.get("variant") else ""
    return f"{row['backend']}{variant} {row['precision']} {row['ms_median']:.2f} ms"


def max_miou_loss(engines: Sequence[Mapping[str, Any]]) -> tuple[float | None, str]:
    """Worst mIoU drop vs FP32 over the manifest's measured non-FP32 engines, and which one."""
    worst: tuple[float | None, str] = (None, "no precision below FP32 was measured by the gate")
    for engine in engines:
        accuracy = engine.get("accuracy") or {}
        drop = accuracy.get("miou_drop")
        if engine.get("precision") == "fp32" or drop is None:
            continue
        if worst[0] is None or drop > worst[0]:
            label = f"{engine['pattern']} {engine['precision']}/{engine['backend']}"
            worst = (float(drop), f"worst: {label} ({accuracy.get('gate')}); from the manifest's gate")
    return worst


def evaluate_targets(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value (None when not measured in this run) and PASS / MISS / N/A."""
    rows = result["rows"]
    batch = min((r["batch"] for r in rows), default=1)
    fair = not result.get("machine", {}).get("loaded", False)
    ort32 = find_row(rows, "fp32", "onnxruntime", batch)
    ov32 = find_row(rows, "fp32", "openvino", batch)
    ov8 = find_row(rows, "int8", "openvino", batch)
    best8 = find_row(rows, "int8", INT8_CPU_BACKENDS, batch)
    eager = find_row(rows, "fp32", "pytorch", batch)
    fp32_best = find_row(rows, "fp32", ("onnxruntime", "openvino"))
    int8_best = find_row(rows, "int8", INT8_CPU_BACKENDS)
    variant = result.get("model", {}).get("variant", "?")
    targets: list[dict[str, Any]] = []
    where = f"{FULL_PATTERN} batch {batch}"

    def add(
        name: str, value: float | None, threshold: float, unit: str, detail: str, higher: bool = True
    ) -> None:
        targets.append(
            {
                "target": name,
                "threshold": threshold,
                "measured": value,
                "unit": unit,
                "verdict": verdict(value, threshold, higher),
                "fair": fair,
                "detail": detail + ("" if fair else "; LOADED MACHINE: not a fair run"),
            }
        )

    add(
        "best INT8 CPU engine >= 1.5x ORT FP32",
        _ratio(ort32, best8),
        TARGET_INT8_VS_ORT_FP32,
        "x",
        f"{where}: {_label(best8)} vs {_label(ort32)}",
    )
    add(
        "OpenVINO INT8 >= 1.3x OpenVINO FP32",
        _ratio(ov32, ov8),
        TARGET_OV_INT8_VS_OV_FP32,
        "x",
        f"{where}: {_label(ov8)} vs {_label(ov32)}",
    )
    add(
        "ORT FP32 >= 1.5x PyTorch eager",
        _ratio(eager, ort32),
        TARGET_ORT_VS_EAGER,
        "x",
        f"{where}: vs the fastest way to run eager, {_label(eager)}"
        + ("" if eager else " (no --checkpoint: eager not measured)"),
    )
    loss, loss_detail = max_miou_loss(result.get("manifest_engines", []))
    add("mIoU lost <= 0.5 per pattern, every precision", loss, TARGET_MIOU_LOSS, "points", loss_detail, False)
    add(
        "FP32 achieved GFLOP/s >= 70 % of matmul rate",
        fp32_best["gflops_fraction"] if fp32_best else None,
        TARGET_GFLOPS_FRACTION,
        "fraction",
        f"{FULL_PATTERN}, best FP32 engine ({_label(fp32_best)}, batch "
        f"{fp32_best['batch'] if fp32_best else '-'}) vs "
        f"{result['machine'].get('matmul', {}).get('gflops', float('nan')):.1f} GFLOP/s sgemm",
    )
    edge_detail = f"model variant {variant!r}, {_label(int8_best)}"
    if int8_best is not None and variant != "edge":
        edge_detail += f" (the target is for the edge variant; here {int8_best['mpx_per_s']:.2f} Mpx/s)"
    add(
        "edge model full pattern INT8 >= 3 Mpx/s",
        int8_best["mpx_per_s"] if int8_best and variant == "edge" else None,
        TARGET_EDGE_INT8_MPX,
        "Mpx/s",
        edge_detail,
    )
    e2e = result.get("e2e") or {}
    # the scene asked for; a cloudy variant run beside it has its own targets below
    runs = [r for r in e2e.get("runs", []) if r.get("scene", e2e.get("scene")) == e2e.get("scene")]
    largest = max(runs, key=lambda r: r["size"]) if runs else None
    add(
        "end-to-end >= 60 % of engine-only",
        largest.get("engine_busy_fraction") if largest else None,
        TARGET_E2E_FRACTION,
        "fraction",
        (
            f"{e2e.get('scene', 'full')} scene {largest['size']} px on {e2e.get('backend')}: engine-only "
            f"time of its {sum(largest['engine_runs'].values())} engine runs / wall time; raw scene Mpx/s "
            f"ratio {largest.get('fraction_of_engine_only', float('nan')):.2f} (overlap re-computes pixels); "
            f"bound: {_bound(largest)}"
        )
        if largest
        else "end-to-end not measured",
    )
    # Flat means flat past one column chunk: below it, GDAL's block cache grows with the width by design.
    sized = [r for r in runs if r["size"] >= CHUNK_WIDTH]
    if len(sized) >= 2:
        small, large = min(sized, key=lambda r: r["size"]), max(sized, key=lambda r: r["size"])
        growth = large["peak_rss_mib"] / small["peak_rss_mib"] - 1.0
        detail = (
            f"peak RSS {large['size']} px {large['peak_rss_mib']:.0f} MiB vs {small['size']} px "
            f"{small['peak_rss_mib']:.0f} MiB"
        )
    else:
        growth = None
        detail = (
            f"needs two end-to-end sizes of one scene, each at least one column chunk ({CHUNK_WIDTH} px): "
            "below that GDAL's block cache grows with the width by design; benchmarks/runtime_memory.py "
            "measures flatness"
        )
    add(
        "peak RSS flat (largest vs smallest scene within 10 %)",
        growth,
        TARGET_RSS_GROWTH,
        "growth",
        detail,
        False,
    )
    for scene, label in ((S2_CLEAN, "clean"), (S2_CLOUDY, "cloudy")):
        run = fraction_run(e2e, scene, "floor_fraction")
        add(
            f"CPU floor >= 80 % of wall, {label} S2-like scene",
            run["floor_fraction"] if run else None,
            TARGET_FLOOR_FRACTION,
            "fraction",
            _floor_detail(run) if run else f"{scene} scene not measured (run with --e2e-scene s2like)",
        )
    run = fraction_run(e2e, S2_CLEAN, "arrays_fraction")
    add(
        "from arrays: engine-only >= 70 % of wall, clean S2-like scene",
        run["arrays_fraction"] if run else None,
        TARGET_ARRAYS_FRACTION,
        "fraction",
        (
            f"{run['size']} px: engine-only {run['arrays']['engine_wall_seconds']:.2f} s / predict_arrays "
            f"{run['arrays']['wall_seconds']:.2f} s (arrays loaded first, physical values; a process's first "
            f"call{_warm_detail(run['arrays'].get('arrays_fraction_warm'))})"
        )
        if run
        else f"{S2_CLEAN} scene from arrays not measured (run with --e2e-scene s2like, a size up to "
        f"--e2e-arrays-max-size)",
    )
    default_tile = result.get("default_tile")
    at_default = [r for r in rows if r.get("tile") == default_tile]
    tile_batch = min((r["batch"] for r in at_default), default=1)
    ort_default = find_row(at_default, "fp32", "onnxruntime", tile_batch)
    best_default = find_row(at_default, "int8", INT8_CPU_BACKENDS, tile_batch)
    add(
        "best INT8 >= 1.5x ORT FP32 at the runtime's default tile",
        _ratio(ort_default, best_default),
        TARGET_INT8_DEFAULT_TILE,
        "x",
        f"{FULL_PATTERN} batch {tile_batch}, tile {default_tile}: {_label(best_default)} vs "
        f"{_label(ort_default)}"
        if at_default
        else f"engines timed at --tile {result.get('tile')}, the runtime's default tile is {default_tile}: "
        f"rerun with --tile {default_tile}",
    )
    return targets


def fraction_run(e2e: Mapping[str, Any], scene: str, key: str) -> Mapping[str, Any] | None:
    """The largest end-to-end run of ``scene`` that measured ``key`` (the one a fraction target reads)."""
    runs = [r for r in e2e.get("runs", []) if r.get("scene") == scene and r.get(key) is not None]
    return max(runs, key=lambda r: r["size"]) if runs else None


def _floor_detail(run: Mapping[str, Any]) -> str:
    floor = run["floor"]
    return (
        f"{run['size']} px: floor {floor['floor_seconds']:.2f} s = (engine-only CPU "
        f"{floor['engine_cpu_seconds']:.2f} s + decode-once CPU {floor['decode_cpu_seconds']:.2f} s) / "
        f"{floor['cores']} cores vs wall {run['predict_s']:.2f} s (a process's first scene"
        f"{_warm_detail(run.get('floor_fraction_warm'))}); bound: {_bound(run)}"
    )


def _warm_detail(warm: float | None) -> str:
    """What the same measure gives a long-lived process (its second scene), where measured."""
    return "" if warm is None else f"; its second: {warm:.3f}"


def _bound(run: Mapping[str, Any]) -> str:
    """The stage that takes the most wall time in an end-to-end run (what bounds its throughput)."""
    stages = run.get("stages") or {}
    if not stages:
        return "unknown (no stage times)"
    readers = int((run.get("summary") or {}).get("reader_threads") or 1)
    # read and preprocess are summed over the reader threads, which run side by side: per thread
    per_thread = {k: v / readers if k in READER_STAGES else v for k, v in stages.items()}
    name, seconds = max(per_thread.items(), key=lambda item: item[1])
    threads = f" per reader thread ({readers})" if name in READER_STAGES and readers > 1 else ""
    return f"{name} {seconds:.1f} s{threads} of {run['predict_s']:.1f} s"


#: Which configurations a missed ratio target is about (profiled to say which ops take the time).
MISS_PROFILES: dict[str, tuple[tuple[str, str], ...]] = {
    "best INT8 CPU engine >= 1.5x ORT FP32": (("openvino", "int8"), ("onnxruntime", "fp32")),
    "OpenVINO INT8 >= 1.3x OpenVINO FP32": (("openvino", "int8"), ("openvino", "fp32")),
    "ORT FP32 >= 1.5x PyTorch eager": (("onnxruntime", "fp32"),),
    "FP32 achieved GFLOP/s >= 70 % of matmul rate": (("openvino", "fp32"), ("onnxruntime", "fp32")),
    "best INT8 >= 1.5x ORT FP32 at the runtime's default tile": (
        ("openvino", "int8"),
        ("onnxruntime", "fp32"),
    ),
}


def profile_lines(profiles: Mapping[str, Any], top: int = 8) -> list[str]:
    """Per missed engine-ratio target (``MISS_PROFILES``), the top ops of each configuration it compares."""
    if not profiles:
        return [
            "No engine-ratio target missed, so no engine was profiled. An end-to-end target names its bound "
            "in its own row; `benchmarks/thread_cpu.py --perf` shows where a scene's CPU goes, by thread."
        ]
    lines: list[str] = []
    for name, ops in profiles.items():
        if isinstance(ops, str):
            lines.append(f"- {name}: not profiled ({ops})")
            continue
        total = sum(ops.values()) or 1.0
        cells = ", ".join(
            f"{op} {ms:.2f} ms ({100 * ms / total:.0f} %)" for op, ms in list(ops.items())[:top]
        )
        lines.append(f"- {name} (total {total:.2f} ms): {cells}")
    return lines


def render_markdown(result: Mapping[str, Any]) -> str:
    """The result as Markdown: machine (flags, load), engine table, end-to-end, GPU, targets, profiles."""
    machine = result["machine"]
    matmul = machine.get("matmul", {})
    warning = (
        [
            f"**WARNING: the machine was loaded when this run started (load average "
            f"{machine.get('load_average_1m')} on {machine['usable_cores']} cores): timings and ratios are "
            "not fair; rerun on a quiet machine.**",
            "",
        ]
        if machine.get("loaded")
        else []
    )
    lines = [
        f"# Latency benchmark ({result['created']})",
        "",
        *warning,
        f"Machine: {machine['cpu_model']}, {machine['usable_cores']} usable cores, "
        f"{machine['threads']} threads; CPU flags: {', '.join(machine['cpu_flags']) or 'n/a'}; FP32 sgemm "
        f"{fmt(matmul.get('gflops'), 1)} GFLOP/s ({matmul.get('backend', '?')}, "
        f"n={matmul.get('size', '?')}); load average {machine.get('load_average_1m')} at start, "
        f"{machine.get('load_average_1m_end')} at end.",
        f"Model: `{result['model'].get('variant')}` / `{result['model'].get('method')}`, "
        f"engines `{result['engines']}`; tile {result['tile']} px. Times are per call (one batch); "
        f"CPU rows: each configuration in its own process, {result['timing'].get('rounds', 1)} interleaved "
        f"rounds, medians of >= {result['timing']['min_runs']} runs after warm-up.",
        "",
        *engine_table(result["rows"]),
        *skipped_lines(result.get("skipped", [])),
        "",
        "## End to end",
        "",
        *e2e_lines(result.get("e2e")),
        "",
        "## GPU",
        "",
        *gpu_lines(result["gpu"]),
        "",
        "## Targets (measured in this run)",
        "",
        *targets_table(result["targets"]),
        "",
        "## Where the time goes (profiles of missed targets)",
        "",
        *profile_lines(result.get("profiles", {})),
    ]
    return "\n".join(lines) + "\n"


def print_targets(targets: Sequence[Mapping[str, Any]], echo: Echo = print) -> None:
    for target in targets:
        measured = (
            "not measured" if target["measured"] is None else f"{target['measured']:.3f} {target['unit']}"
        )
        echo(f"[{target['verdict']:>4}] {target['target']}: {measured} ({target['detail']})")
