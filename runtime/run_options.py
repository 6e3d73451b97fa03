"""The checks of a run's options shared by ``run`` and ``run-batch``: tiling, batch, ``--min-valid``, the
edge overrides (``--context-margin``, ``--mask-dilation``) and the probabilities' dtype."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from runtime.tiling import check_tiling
from stars_edge.errors import ConfigError

PROBABILITY_DTYPES: tuple[str, ...] = ("uint8", "float32")


def parse_mask_dilation(items: Sequence[str] | None) -> dict[str, int] | None:
    """``["optical=16", "sar=4"]`` -> ``{"optical": 16, "sar": 4}``; nothing given -> None (no override)."""
    if not items:
        return None
    parsed: dict[str, int] = {}
    for item in items:
        name, sep, pixels = item.partition("=")
        if not sep or not pixels.strip().isdigit():
            raise ConfigError(f"--mask-dilation {item!r}: expected MODALITY=PIXELS, e.g. optical=16")
        parsed[name.strip().lower()] = int(pixels)
    return parsed


def check_edge_overrides(
    context_margin: int | None, dilation: Mapping[str, int] | None, modalities: Mapping[str, object]
) -> dict[str, int] | None:
    """Refuse a negative ``--context-margin``; return the ``--mask-dilation`` override checked: known
    modalities, non-negative sizes (None stays None: no override). Shared by ``run`` and ``run-batch``."""
    if context_margin is not None and context_margin < 0:
        raise ConfigError(f"--context-margin must be >= 0 px, got {context_margin}")
    if dilation is None:
        return None
    checked: dict[str, int] = {}
    for name, pixels in dilation.items():
        if name not in modalities:
            raise ConfigError(
                f"--mask-dilation names {name!r}; the engines take {', '.join(modalities) or 'nothing'}"
            )
        if int(pixels) < 0:
            raise ConfigError(f"--mask-dilation {name}={pixels}: a dilation is >= 0 px")
        checked[name] = int(pixels)
    return checked


#: Tiles per engine call when ``--batch`` is not given, per backend (issue 21): OpenVINO ran a batch of four
#: 256 px tiles 1.08-1.16x faster end to end on 4096 px scenes, with the same class maps; ONNX Runtime FP32
#: was slower per tile batched (6.4 against 4.7 ms), so it and the others stay at 1.
DEFAULT_BATCH: dict[str, int] = {"openvino": 4}


def default_batch(backend: str) -> int:
    """Tiles per engine call on ``backend`` when the caller does not say."""
    return DEFAULT_BATCH.get(backend, 1)


#: OpenVINO inference streams when ``--streams`` is not given (issue 21). On 2 cores the engines alone are
#: about as fast either way (a clean 4096 px scene's calls: 1.18 s with two in flight on two single-thread
#: streams, 1.15 s one at a time on one two-thread stream); the gain is the pipeline's. With a call in flight
#: on each stream while the main thread blends (``runtime/pipelining.py``), 4096 px scenes
#: (9 runs each, 3 rounds of separate processes interleaved; same class maps) took, median wall one stream /
#: two: from arrays 2.22 / 1.77 s (1.25x), cloudy from arrays 4.04 / 3.94 s, from files 3.49 / 3.38 s, with
#: 8-20 % less CPU. A single call (a one-tile scene) runs on one stream's thread, slower than on both: pass
#: ``--streams 1`` where one tile's latency matters more. ONNX Runtime on the CPU: two single-thread calls
#: in flight per tile 1.75x faster than one two-thread call (``OnnxRuntimeBackend``).
DEFAULT_STREAMS: dict[str, int] = {"openvino": 2, "onnxruntime": 2}

#: Reader threads preparing tiles, per kind of source, when ``--readers`` is not given. Files: 2, each on its
#: own GDAL handle and band of columns (decoding runs beside the engines instead of behind them): a 4096 px
#: Sentinel-2-like scene from its files took 2.93 s median against 3.15 s with one (1.08x; 3 rounds of
#: separate processes interleaved, 2 runs each, same class maps, `benchmarks/results/readers_ab_s2like_4096.
#: json`). In-memory arrays: 1, as the second reader was 0.95-0.97x there (the work is already CPU-bound on
#: two cores). A sensor's row stream has one handle and is always read by one.
DEFAULT_READERS: dict[str, int] = {"files": 2, "arrays": 1}


def default_streams(backend: str, threads: int | None = None) -> int:
    """Engine calls in flight at once on ``backend`` when the caller does not say: never more streams than
    ``--threads`` (each stream needs a thread of its own)."""
    streams = DEFAULT_STREAMS.get(backend, 1)
    return streams if threads is None else max(1, min(streams, threads))


def check_run_options(tile: int, overlap: int, batch: int, min_valid: float) -> None:
    """Refuse a tiling, batch size or ``--min-valid`` that no run can use."""
    check_tiling(tile, overlap)
    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")
    if not 0.0 < min_valid <= 1.0:
        raise ConfigError(f"--min-valid must be in (0, 1], got {min_valid}")


def check_scene_options(
    tile: int, overlap: int, batch: int, min_valid: float, probabilities_dtype: str, chunk_width: int | None
) -> int | None:
    """``check_run_options`` plus a scene's own: the probabilities' dtype and the column chunk width, which
    comes back widened to hold at least one tile (None: the whole width)."""
    check_run_options(tile, overlap, batch, min_valid)
    if probabilities_dtype not in PROBABILITY_DTYPES:
        raise ConfigError(f"--probabilities-dtype must be uint8 or float32, got {probabilities_dtype!r}")
    if chunk_width is not None:
        if chunk_width <= 0 or chunk_width % 256:
            raise ConfigError(f"chunk width must be a positive multiple of 256, got {chunk_width}")
        chunk_width = max(chunk_width, -(-tile // 256) * 256)  # a chunk holds at least one tile
    return chunk_width
