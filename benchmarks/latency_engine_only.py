"""Engine-only time of the engine calls a scene needed (issue 21): each input shape the run fed its engines,
timed alone on the same engine files, backend, precision and threads (``benchmarks/latency_floor.py`` turns
it into the CPU floor).

The run's ``RunSummary.engine_shapes`` says how many engine calls of each input shape (batch x height x
width: whole-tile batches and windows, a second pattern on part of a tile) each pattern's engine made. They
are timed in the same process on seeded inputs of each shape, with wall time *and* process CPU time
(``time.process_time``: every thread of the process, so an engine's intra-op threads and their spinning
count); engine time = calls x median per call, summed over shapes. The first call at each shape new to a
loaded engine is reported apart (``first_call_seconds_total``), not in the floor. Many window shapes are
timed with fewer calls each, at most ``MAX_TIMED_SHAPES`` of them (the rest at a timed shape's per-pixel
rate); ``shapes`` in the JSON says which. Summaries without ``engine_shapes`` (older JSON) fall back to
``engine_pixels`` / tile^2 whole tiles at the whole-tile rate.

Engines with several streams (OpenVINO, ``runtime.run_options.default_streams``) are timed as the runtime
runs them: as many calls in flight at once as they have streams, each call's share of that wall and CPU
time counted per call (their throughput, which is what a scene sees; one call alone runs on one stream).
"""

from __future__ import annotations

import functools
import statistics
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.latency_plan import make_inputs, shape_inputs
from runtime.pipelining import Together
from stars_edge.manifest import Manifest
from stars_edge.modalities import Pattern

if TYPE_CHECKING:
    from runtime.engines import EngineSet

#: Engine-only timing in the end-to-end child, at least this much even with ``--quick``: the fractions are
#: what the ``--quick`` end-to-end command is run for, and a real engine is timed in about a second.
FLOOR_MIN_TIMING: dict[str, float] = {"warmup": 2, "min_runs": 10, "max_runs": 100, "min_seconds": 1.0}
#: Timing of each call shape after a pattern's most-called one (windows under clouds), each key at most the
#: plan's: a cloudy scene's dozens of window shapes then take a minute or two, not one second each.
SHAPE_TIMING: dict[str, float] = {"warmup": 1, "min_runs": 3, "max_runs": 20, "min_seconds": 0.25}
#: Distinct call shapes timed at most; rarer ones are counted at a timed shape's per-pixel rate.
MAX_TIMED_SHAPES = 40


def floor_timing(timing: Mapping[str, float]) -> dict[str, float]:
    """The plan's timing (``latency_plan.timing_kwargs``), raised to ``FLOOR_MIN_TIMING``."""
    return {key: max(float(timing[key]), minimum) for key, minimum in FLOOR_MIN_TIMING.items()}


def time_wall_and_cpu(
    run: Callable[[], object], warmup: int, min_runs: int, max_runs: int, min_seconds: float
) -> tuple[list[float], list[float]]:
    """Per-call wall and process-CPU seconds of ``run`` after ``warmup`` calls (the timing protocol of
    ``benchmarks.common.time_callable``, with the CPU clock read beside the wall clock)."""
    for _ in range(warmup):
        run()
    walls: list[float] = []
    cpus: list[float] = []
    started = time.perf_counter()
    while len(walls) < max_runs and (len(walls) < min_runs or time.perf_counter() - started < min_seconds):
        wall, cpu = time.perf_counter(), time.process_time()
        run()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return walls, cpus


def parse_shape(key: str) -> tuple[int, int, int]:
    """``"BxHxW"`` (a ``RunSummary.engine_shapes`` key) as ``(batch, height, width)``."""
    batch, height, width = (int(v) for v in key.split("x"))
    return batch, height, width


def _timed(
    engines: EngineSet, pattern: Pattern, inputs: Mapping[str, np.ndarray], timing: Mapping[str, Any]
) -> tuple[float, list[float], list[float]]:
    """Seconds of the first call on ``inputs``, then per-call wall and CPU seconds (``time_wall_and_cpu``),
    with ``engines.concurrency`` calls in flight at once (each call counted at its share)."""
    start = time.perf_counter()
    engines.run(pattern, inputs)
    first = time.perf_counter() - start
    in_flight = engines.concurrency
    with Together(functools.partial(engines.run, pattern, inputs), in_flight) as together:
        walls, cpus = time_wall_and_cpu(
            together,
            int(timing["warmup"]),
            int(timing["min_runs"]),
            int(timing["max_runs"]),
            float(timing["min_seconds"]),
        )
    return first, [w / in_flight for w in walls], [c / in_flight for c in cpus]


def _by_pixels(
    engines: EngineSet,
    manifest: Manifest,
    engine_runs: Mapping[str, int],
    engine_pixels: Mapping[str, int],
    tile: int,
    batch: int,
    timing: Mapping[str, Any],
    seed: int,
) -> dict[str, dict[str, Any]]:
    """Per pattern: its pixels at the whole-tile rate (batch x tile inputs); for summaries without
    ``engine_shapes``."""
    per_pattern: dict[str, dict[str, Any]] = {}
    for name, runs in engine_runs.items():
        pattern = Pattern.parse(name)
        inputs = make_inputs(manifest, pattern, batch, tile, seed)
        first, walls, cpus = _timed(engines, pattern, inputs, timing)
        pixels = int(engine_pixels.get(name, runs * tile * tile))
        equivalents = pixels / (tile * tile)
        wall_tile = statistics.median(walls) / batch
        cpu_tile = statistics.median(cpus) / batch
        per_pattern[name] = {
            "runs": int(runs),
            "pixels": pixels,
            "tile_equivalents": equivalents,
            "whole_tiles_only": pixels == runs * tile * tile,
            "calls_timed": len(walls),
            "load_and_first_call_s": first,
            "wall_ms_per_tile": wall_tile * 1e3,
            "cpu_ms_per_tile": cpu_tile * 1e3,
            "wall_seconds": equivalents * wall_tile,
            "cpu_seconds": equivalents * cpu_tile,
        }
    return per_pattern


def _by_shape(
    engines: EngineSet,
    manifest: Manifest,
    engine_runs: Mapping[str, int],
    engine_pixels: Mapping[str, int],
    engine_shapes: Mapping[str, Mapping[str, int]],
    tile: int,
    timing: Mapping[str, Any],
    seed: int,
    max_shapes: int,
) -> dict[str, dict[str, Any]]:
    """Per pattern: each call shape it ran, timed on its own inputs (calls x median per call); see
    ``engine_only``."""
    shapes = {
        name: sorted(
            ((parse_shape(key), int(calls)) for key, calls in engine_shapes[name].items()),
            key=lambda item: (-item[1], -item[0][0] * item[0][1] * item[0][2]),
        )
        for name in engine_runs
    }
    # each pattern's most-called shape, then the most-called of the rest, up to max_shapes in all
    chosen = {(name, items[0][0]) for name, items in shapes.items() if items}
    rest = sorted(
        ((name, shape, calls) for name, items in shapes.items() for shape, calls in items[1:]),
        key=lambda item: -item[2],
    )
    chosen |= {(name, shape) for name, shape, _ in rest[: max(0, max_shapes - len(chosen))]}
    further = {key: min(float(timing[key]), limit) for key, limit in SHAPE_TIMING.items()}
    per_pattern: dict[str, dict[str, Any]] = {}
    for name, runs in engine_runs.items():
        pattern = Pattern.parse(name)
        rows: dict[str, dict[str, Any]] = {}
        load = 0.0
        for position, (shape, calls) in enumerate(shapes[name]):
            if (name, shape) not in chosen:
                continue
            inputs = shape_inputs(manifest, pattern, shape, seed)
            first, walls, cpus = _timed(engines, pattern, inputs, further if position else timing)
            wall, cpu = statistics.median(walls), statistics.median(cpus)
            if position == 0:  # the engine loads at its first call: that call is no shape's alone
                load = first
            rows["x".join(map(str, shape))] = {
                "calls": calls,
                "timed": True,
                "calls_timed": len(walls),
                "first_call_s": None if position == 0 else first,
                "wall_ms_per_call": wall * 1e3,
                "cpu_ms_per_call": cpu * 1e3,
                "wall_seconds": calls * wall,
                "cpu_seconds": calls * cpu,
            }
        timed = {parse_shape(key): row for key, row in rows.items()}
        for shape, calls in shapes[name]:
            if (name, shape) in chosen:
                continue
            pixels = shape[0] * shape[1] * shape[2]
            # the timed shape nearest in pixels per call, at its per-pixel rate
            near = min(timed, key=lambda s: abs(np.log(pixels / (s[0] * s[1] * s[2]))))
            scale = pixels / (near[0] * near[1] * near[2])
            wall_ms, cpu_ms = timed[near]["wall_ms_per_call"] * scale, timed[near]["cpu_ms_per_call"] * scale
            rows["x".join(map(str, shape))] = {
                "calls": calls,
                "timed": False,
                "rate_of": "x".join(map(str, near)),
                "wall_ms_per_call": wall_ms,
                "cpu_ms_per_call": cpu_ms,
                "wall_seconds": calls * wall_ms / 1e3,
                "cpu_seconds": calls * cpu_ms / 1e3,
            }
        pixels = int(engine_pixels.get(name, sum(calls * s[0] * s[1] * s[2] for s, calls in shapes[name])))
        equivalents = pixels / (tile * tile)
        wall_seconds = sum(row["wall_seconds"] for row in rows.values())
        cpu_seconds = sum(row["cpu_seconds"] for row in rows.values())
        per_pattern[name] = {
            "runs": int(runs),
            "pixels": pixels,
            "tile_equivalents": equivalents,
            "whole_tiles_only": pixels == runs * tile * tile,
            "calls_timed": sum(row.get("calls_timed", 0) for row in rows.values()),
            "load_and_first_call_s": load,
            # per tile's worth of pixels, over every shape (what the pixel approximation assumed constant)
            "wall_ms_per_tile": wall_seconds / equivalents * 1e3 if equivalents else 0.0,
            "cpu_ms_per_tile": cpu_seconds / equivalents * 1e3 if equivalents else 0.0,
            "wall_seconds": wall_seconds,
            "cpu_seconds": cpu_seconds,
            "first_call_seconds": sum(
                row["first_call_s"] - row["wall_ms_per_call"] / 1e3
                for row in rows.values()
                if row.get("first_call_s") is not None
            ),
            "shapes": rows,
        }
    return per_pattern


def engine_only(
    manifest: Manifest,
    backend: str,
    precision: str,
    threads: int | None,
    engine_runs: Mapping[str, int],
    engine_pixels: Mapping[str, int],
    tile: int,
    batch: int,
    timing: Mapping[str, Any],
    seed: int = 0,
    engine_shapes: Mapping[str, Mapping[str, int]] | None = None,
    max_shapes: int = MAX_TIMED_SHAPES,
    streams: int = 1,
) -> dict[str, Any]:
    """Wall and CPU seconds the engines alone need for the engine runs a scene took (see module docstring).

    With ``engine_shapes`` (``RunSummary.engine_shapes``: calls per ``"BxHxW"`` input shape), every shape a
    pattern ran is timed on its own inputs and counted as calls x median per call: the pattern's most-called
    shape with ``timing`` (its first call loads the engine: ``load_and_first_call_s``), each further shape
    with ``SHAPE_TIMING`` at most, its first call kept apart (``first_call_s``: what a shape new to a loaded
    engine costs, e.g. OpenVINO's dynamic shapes). At most ``max_shapes`` shapes are timed (each pattern's
    most-called, then the most-called of the rest); the others are counted by pixels at the per-pixel rate
    of their pattern's timed shape nearest in pixels per call. ``first_call_seconds_total`` (first call -
    steady call, summed over the shapes new to a loaded engine) is reported apart, not in the floor.
    Without ``engine_shapes`` (an older summary), pixels / tile^2 whole tiles at the whole-tile rate."""
    from runtime.engines import EngineSet

    exact = bool(engine_shapes) and all(
        (engine_shapes or {}).get(name) for name, runs in engine_runs.items() if runs
    )
    engines = EngineSet(manifest, backend, precision, threads, allow_flagged=True, streams=streams)
    try:
        if exact:
            assert engine_shapes is not None
            per_pattern = _by_shape(
                engines, manifest, engine_runs, engine_pixels, engine_shapes, tile, timing, seed, max_shapes
            )
        else:
            per_pattern = _by_pixels(engines, manifest, engine_runs, engine_pixels, tile, batch, timing, seed)
    finally:
        engines.close()
    result: dict[str, Any] = {
        "backend": backend,
        "precision": precision,
        "tile": tile,
        "batch": batch,
        "threads": threads,
        "streams": engines.streams,
    }
    if exact:
        rows = [row for p in per_pattern.values() for row in p["shapes"].values()]
        timed = sum(1 for row in rows if row["timed"])
        shapes = f"exact: timed per call shape ({timed} shapes)"
        if timed < len(rows):
            left = [row for row in rows if not row["timed"]]
            calls = sum(row["calls"] for row in left)
            shapes += (
                f"; {len(left)} rarer shapes ({calls} calls) counted by pixels at the per-pixel rate of "
                f"their pattern's nearest timed shape (at most {max_shapes} timed)"
            )
        result["first_call_seconds_total"] = sum(p["first_call_seconds"] for p in per_pattern.values())
    else:
        windows = [name for name, p in per_pattern.items() if not p["whole_tiles_only"]]
        shapes = (
            "exact: every engine run was a whole tile"
            if not windows
            else f"approximated by pixels for {', '.join(windows)}: window runs counted as pixels / tile^2 "
            "tiles at the whole-tile rate (the summary has no engine_shapes; small windows cost more per "
            "pixel)"
        )
    result.update(
        shapes=shapes,
        per_pattern=per_pattern,
        wall_seconds=sum(p["wall_seconds"] for p in per_pattern.values()),
        cpu_seconds=sum(p["cpu_seconds"] for p in per_pattern.values()),
    )
    return result
