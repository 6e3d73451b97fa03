"""One engine call per pattern, timed at the occupancy a scene gives it (``Predictor.measure_latency``).

Quick numbers for reports (the demo); ``benchmarks/latency.py`` measures formally.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping, Sequence

import numpy as np

from runtime.engines import EngineSet
from runtime.pipelining import Together
from stars_edge.modalities import Pattern


def engine_call_latency(
    engines: EngineSet,
    patterns: Sequence[Pattern],
    bands: Mapping[str, int],
    tile: int,
    runs: int,
    warmup: int,
    batch: int,
    in_flight: int | None,
) -> dict[str, float]:
    """Median milliseconds of one call of each pattern's engine on ``batch`` random normalised ``tile`` px
    tiles (``bands`` per modality). With ``in_flight`` calls at once (None: one per stream, as a scene keeps
    them) each call counts at its share of the time, so a multi-stream engine is not timed at one call alone.
    """
    rng = np.random.default_rng(0)
    latencies: dict[str, float] = {}
    for pattern in patterns:
        inputs = {m: rng.standard_normal((batch, bands[m], tile, tile), dtype=np.float32) for m in pattern}
        calls = engines.concurrency if in_flight is None else in_flight
        with Together(functools.partial(engines.run, pattern, inputs), calls) as together:
            for _ in range(warmup):
                together()
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                together()
                times.append((time.perf_counter() - start) / together.count)
        latencies[pattern.name] = float(np.median(times) * 1000.0)
    return latencies
