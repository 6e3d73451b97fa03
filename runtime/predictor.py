"""The runtime's entry point: stream a scene tile by tile, pick the engine per tile (and per pixel), blend,
write a georeferenced result that is either complete and sound or not there at all.

The work is split by responsibility: ``scene`` (a GeoTIFF scene end to end), ``row_stream`` (a sensor's
rows), ``validity`` (which modality a pixel may use), ``scheduling`` and ``tile_inference`` (reader threads,
engine calls on tiles and windows), ``blending`` + ``writing`` (carry, block bands), ``outputs`` (partial
files, GDAL errors, commit), ``journal`` (resume) and ``engine_latency`` (one engine call, timed).
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from runtime import row_stream, scene
from runtime.allocator import retain_freed_buffers
from runtime.array_source import ArraySource
from runtime.backends import BACKEND_CHOICES, resolve_backend_name
from runtime.blending_stride4 import CHUNK_HALO, check_stride4
from runtime.engine_latency import engine_call_latency
from runtime.engines import EngineSet
from runtime.gdal_env import GDAL_CACHE_MAX_MB, GDAL_CACHE_MB, gdal_cache_limit, tile_cache_bytes
from runtime.kernels import compiled
from runtime.outputs import CLASS_NODATA
from runtime.run_options import (
    DEFAULT_READERS,
    PROBABILITY_DTYPES,
    check_edge_overrides,
    check_run_options,
    default_batch,
    default_streams,
    parse_mask_dilation,
)
from runtime.scene import CHUNK_WIDTH
from runtime.scheduling import EngineUse, ReadSettings, Timer
from runtime.signals import terminate_as_interrupt
from runtime.summary import RunSummary
from runtime.tile_source import check_band_counts
from runtime.tiling import Chunk, TileGrid, check_tiling, plan_chunks
from runtime.validity import DEFAULT_CONTEXT_MARGIN, check_inputs
from runtime.writing import stream_chunk
from stars_edge.errors import ConfigError, ManifestError
from stars_edge.manifest import PRECISIONS, Manifest, load_manifest
from stars_edge.modalities import DEFAULT_MIN_VALID, Pattern, all_patterns

__all__ = [
    "CHUNK_WIDTH",
    "GDAL_CACHE_MAX_MB",
    "GDAL_CACHE_MB",
    "PROBABILITY_DTYPES",
    "Predictor",
    "RunSummary",
    "check_edge_overrides",
    "gdal_cache_limit",
    "parse_mask_dilation",
    "terminate_as_interrupt",
    "tile_cache_bytes",
]


class Predictor:
    """Runs a manifest's engines over scenes (GeoTIFFs) or arrays; one engine per pattern, loaded lazily.

    ``backend``: ``auto`` (TensorRT when usable and built for this GPU, else ONNX Runtime), ``onnxruntime``
    or ``tensorrt``. ``expected_model_sha256`` refuses engines exported from another checkpoint. Engines the
    accuracy gate flagged are refused unless ``allow_flagged``. Each engine file is checked (sha256, inside
    the engines folder) before its first use, so a missing engine of an unused pattern does not block a run.
    ``streams``: engine calls in flight (None: ``run_options.default_streams``); ``readers``: threads reading
    and preparing tiles, each on its own handle (None: ``run_options.DEFAULT_READERS`` for files / arrays).
    """

    #: Value (normalised units) put into invalid pixels; no used output depends on it (tests vary it).
    fill_value: float = 0.0

    def __init__(
        self,
        engines_dir: str | os.PathLike[str],
        backend: str = "auto",
        precision: str = "fp32",
        threads: int | None = None,
        expected_model_sha256: str | None = None,
        allow_flagged: bool = False,
        context_margin: int | None = None,
        mask_dilation: Mapping[str, int] | None = None,
        streams: int | None = None,
        readers: int | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if backend not in BACKEND_CHOICES:
            raise ConfigError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        if streams is not None and streams < 1:
            raise ConfigError(f"--streams must be at least 1, got {streams}")
        if readers is not None and readers < 1:
            raise ConfigError(f"--readers must be at least 1, got {readers}")
        self.manifest: Manifest = load_manifest(Path(engines_dir), verify=False)
        digest = self.manifest.model.checkpoint_sha256
        if expected_model_sha256 is not None and expected_model_sha256 != digest:
            raise ManifestError(
                f"{self.manifest.root}: engines were exported from checkpoint {digest[:12]}..., expected "
                f"{expected_model_sha256[:12]}...; rebuild them from that checkpoint"
            )
        self.requested_backend = backend
        self.precision = precision
        self.threads = threads
        self.streams = streams
        self.readers = readers
        self.allow_flagged = allow_flagged
        self._margin_override = context_margin
        self._dilation_override = check_edge_overrides(
            context_margin, mask_dilation, self.manifest.modalities
        )
        self._engines: dict[str, EngineSet] = {}
        compiled()  # start loading the compiled kernels beside the engines (runtime/kernels.py)
        self.allocator = retain_freed_buffers()  # opt-in: STARS_EDGE_MALLOC=retain (runtime/allocator.py)

    @property
    def classes(self) -> int:
        return self.manifest.model.classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.manifest.model.class_names

    @property
    def context_margin(self) -> int:
        """Pixels around an invalid region where that modality is not used: the override, else the
        manifest's (measured at export)."""
        if self._margin_override is not None:
            return self._margin_override
        margin = getattr(self.manifest, "context_margin", None)
        return DEFAULT_CONTEXT_MARGIN if margin is None else int(margin)

    @property
    def mask_dilation(self) -> dict[str, int]:
        """Pixels each modality's holes grow by before anything uses them (thin cloud edges a mask misses):
        the override, else the manifest's (none by default)."""
        if self._dilation_override is not None:
            return dict(self._dilation_override)
        return dict(self.manifest.mask_dilation)

    def _engine_set(self, patterns: Sequence[Pattern], tile: int | None) -> EngineSet:
        """The engines for these patterns, checked (entry, gate, tile) before any tile is read; the first
        (every given modality: nearly every tile's pattern) starts loading in the background."""
        backend = resolve_backend_name(self.requested_backend, self.manifest, tuple(patterns), self.precision)
        engines = self._engines.get(backend)
        if engines is None:
            engines = EngineSet(
                self.manifest,
                backend,
                self.precision,
                self.threads,
                self.allow_flagged,
                requested=self.requested_backend,
                streams=default_streams(backend, self.threads) if self.streams is None else self.streams,
            )
            self._engines[backend] = engines
        engines.check(tuple(patterns), tile)
        engines.preload(patterns[0])
        return engines

    def _check_contract(self, samples: Mapping[str, tuple[np.ndarray, str]], allow: bool) -> list[str]:
        """Refuse inputs that fail the input contract; with ``allow``, warn and return the messages."""
        contracts = {m: self.manifest.contract(m) for m in samples}
        accepted = check_inputs(samples, contracts, allow)
        for message in accepted:
            warnings.warn(message, UserWarning, stacklevel=3)
        return accepted

    def _settings(self, min_valid: float, source_kind: str = "arrays") -> ReadSettings:
        """How tiles are read and prepared; ``source_kind`` (``files`` or ``arrays``) picks the default
        number of reader threads (``run_options.DEFAULT_READERS``) unless ``readers`` was given."""
        return ReadSettings(
            self.manifest.modalities,
            min_valid,
            self.context_margin,
            self.fill_value,
            self.mask_dilation,
            readers=DEFAULT_READERS[source_kind] if self.readers is None else self.readers,
        )

    def _tiling(self, tile: int | None, overlap: int | None) -> tuple[int, int]:
        """``tile`` (None: the manifest's) and ``overlap`` (None: a quarter tile, at most 64), checked: 0 or
        a negative size is refused, never taken for "default"."""
        tile = self.manifest.tile_size if tile is None else tile
        overlap = min(64, tile // 4) if overlap is None else overlap
        check_tiling(tile, overlap)
        if self.manifest.logits_stride != 1:
            check_stride4(tile, overlap)
        return tile, overlap

    def _chunks(self, grid: TileGrid, chunk_width: int | None) -> list[Chunk]:
        """Column chunks; with stride-4 engines each also runs the tiles bilinear reads beyond its edges."""
        return plan_chunks(grid, chunk_width, CHUNK_HALO if self.manifest.logits_stride != 1 else 0)

    def predict_arrays(
        self,
        inputs: Mapping[str, np.ndarray],
        valid: Mapping[str, np.ndarray] | None = None,
        cloud_mask: np.ndarray | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        batch: int | None = None,
        min_valid: float = DEFAULT_MIN_VALID,
        chunk_width: int | None = None,
        allow_out_of_range: bool = False,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class map ``uint8 (H, W)`` (255 = nodata) and pattern map ``uint8 (H, W)`` (0 = none) of
        in-memory physical ``(bands, H, W)`` arrays; NaN/inf and ``valid == False`` pixels are invalid.
        ``tile`` defaults to the manifest's tile size, ``overlap`` to a quarter tile (at most 64). Arrays
        are tested against the engines' input contract like files (``allow_out_of_range`` warns instead)."""
        tile, overlap = self._tiling(tile, overlap)
        check_run_options(tile, overlap, 1 if batch is None else batch, min_valid)
        source = ArraySource(inputs, valid, cloud_mask)
        check_band_counts(
            source.band_counts(),
            self.manifest.modalities,
            {m: f"input array {m!r}" for m in source.modalities},
        )
        self._check_contract(source.sample_values(), allow_out_of_range)
        patterns = all_patterns(source.modalities)
        engines = self._engine_set(patterns, tile)
        batch = default_batch(engines.backend) if batch is None else batch
        grid = TileGrid(source.height, source.width, tile, overlap)
        classes = np.full((source.height, source.width), CLASS_NODATA, dtype=np.uint8)
        pattern_map = np.zeros((source.height, source.width), dtype=np.uint8)
        settings = self._settings(min_valid)
        for chunk in self._chunks(grid, chunk_width):
            stream = stream_chunk(
                source,
                grid,
                chunk,
                engines,
                settings,
                Timer(),
                batch,
                0,
                self.classes,
                None,
                patterns,
                EngineUse(),
            )
            for _, bands in stream:
                rows, cols = bands.classes.shape[0], slice(chunk.x_start, chunk.x_stop)
                classes[bands.start : bands.start + rows, cols] = bands.classes
                pattern_map[bands.start : bands.start + rows, cols] = bands.patterns
        return classes, pattern_map

    #: ``predict_arrays`` for a sensor that hands over rows, with memory bounded by the tile:
    #: ``runtime.row_stream.stream_rows`` (``self`` is its ``predictor``).
    predict_rows = row_stream.stream_rows

    #: A scene from GeoTIFFs, end to end: ``runtime.scene.predict_scene`` (its own module; ``self`` is its
    #: ``predictor``).
    predict_scene = scene.predict_scene

    def measure_latency(
        self,
        tile: int | None = None,
        runs: int = 10,
        warmup: int = 2,
        batch: int = 1,
        patterns: Sequence[Pattern | str] | None = None,
        in_flight: int | None = None,
    ) -> dict[str, float]:
        """Median milliseconds of one engine call (``batch`` random normalised tiles) per pattern, at the
        occupancy a scene gives it: engines with several streams (OpenVINO) are timed with one call in flight
        per stream, each call counted at its share of that time (a single call alone runs on one stream).
        ``in_flight`` overrides how many calls run at once (benchmarks: ONNX Runtime sessions are safe to call
        from several threads, each with its ``threads``).

        Covers the given patterns, or every pattern the manifest has an engine for at this precision; the
        backend is chosen as for a scene. For quick reports (the demo); ``benchmarks/latency.py`` measures
        formally.
        """
        tile, _ = self._tiling(tile, 0)
        if runs < 1 or warmup < 0 or batch < 1 or (in_flight is not None and in_flight < 1):
            raise ConfigError(
                f"runs, batch and in_flight must be >= 1 and warmup >= 0, got {runs}, {batch}, {in_flight}, "
                f"{warmup}"
            )
        if patterns is None:
            chosen = tuple(p for p in self.manifest.patterns if self.manifest.find(p, self.precision))
        else:
            chosen = tuple(Pattern.parse(p) if isinstance(p, str) else p for p in patterns)
        if not chosen:
            raise ManifestError(
                f"{self.manifest.root}: no {self.precision} engine to time; available: "
                f"{self.manifest.describe_engines()}"
            )
        engines = self._engine_set(chosen, None)
        bands = {m: self.manifest.modalities[m].bands for m in self.manifest.modalities}
        return engine_call_latency(engines, chosen, bands, tile, runs, warmup, batch, in_flight)

    def close(self) -> None:
        """Release every loaded engine."""
        for engines in self._engines.values():
            engines.close()
        self._engines.clear()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
