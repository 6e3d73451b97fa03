"""The runtime's entry point: stream a scene tile by tile, pick the engine per tile (and per pixel), blend,
write a georeferenced result.

Per tile, each modality's valid fraction (over the tile's pixels inside the raster) decides whether it is
present (``>= min_valid``). Each pixel then uses the present modalities that are valid *at that pixel*: a
modality present on most of a tile but invalid on some pixels makes the tile run twice (with and without
it) and each pixel takes the engine of its own pattern. Invalid pixels are filled with the band mean (0
after normalisation) only so the engine has an input there; their outputs are never used. A pixel where no
present modality is valid falls back to whatever is valid there; where nothing is valid it is nodata.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import threading
import time
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio

from runtime.backends import BACKEND_CHOICES, resolve_backend_name
from runtime.blending import RowBands, RowBlender
from runtime.engines import EngineSet
from runtime.outputs import (
    CLASS_NODATA,
    GeoTiffSink,
    Journal,
    OutputSpec,
    RasterGrid,
    build_overviews,
    check_output_target,
    commit,
    discard,
    journal_path,
)
from runtime.sources import ArraySource, RasterSource, RawTile, TileSource, check_band_counts
from runtime.tiling import TileGrid, check_tiling
from stars_edge import __version__
from stars_edge.errors import ConfigError, DataError, ManifestError, OutputError, StarsEdgeError
from stars_edge.manifest import PRECISIONS, Manifest, load_manifest
from stars_edge.modalities import (
    ALL_PATTERNS,
    DEFAULT_MIN_VALID,
    MODALITIES,
    ModalitySpec,
    Pattern,
    all_patterns,
)

#: GDAL block cache for a run, unless GDAL_CACHEMAX is set: at least this, and enough for the blocks around
#: a few neighbouring tiles (``tile_cache_bytes``), so that overlapping tiles do not decompress the same
#: blocks again. Independent of the scene's size, so memory stays flat as scenes grow.
GDAL_CACHE_MB = 32
GDAL_CACHE_MAX_MB = 512
#: Tiles' worth of blocks kept: the current tile's and its right neighbour's, with headroom for the LRU.
CACHED_TILE_WINDOWS = 3

#: Bit of each modality in a per-pixel pattern code (optical 1, sar 2, dsm 4).
MODALITY_BITS: dict[str, int] = {m: 1 << i for i, m in enumerate(MODALITIES)}
#: Pattern of each 3-bit code (None for 0), and its ``Pattern.index`` (0 for none).
CODE_PATTERNS: tuple[Pattern | None, ...] = tuple(
    Pattern(tuple(m for m in MODALITIES if code & MODALITY_BITS[m])) if code else None for code in range(8)
)
CODE_TO_INDEX = np.array([p.index if p is not None else 0 for p in CODE_PATTERNS], dtype=np.uint8)
PROBABILITY_DTYPES: tuple[str, ...] = ("uint8", "float32")
STAGES: tuple[str, ...] = ("read", "preprocess", "wait", "inference", "blend", "write")


@dataclass
class RunSummary:
    """What a run did: pixels per pattern, tiles, time per stage and throughput."""

    height: int
    width: int
    tiles: int
    engine_runs: dict[str, int]
    pattern_pixels: dict[str, int]
    stage_seconds: dict[str, float]
    wall_seconds: float
    backend: str
    device: str
    precision: str
    outputs: dict[str, str] = field(default_factory=dict)
    resumed_from_row: int = 0
    #: Pixels predicted by this call (fewer than height x width when it resumed an interrupted run).
    processed_pixels: int | None = None

    @property
    def megapixels_per_second(self) -> float:
        """Throughput of this call over its wall time."""
        pixels = self.height * self.width if self.processed_pixels is None else self.processed_pixels
        return pixels / 1e6 / self.wall_seconds if self.wall_seconds > 0 else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "height": self.height,
            "width": self.width,
            "tiles": self.tiles,
            "engine_runs": dict(self.engine_runs),
            "pattern_pixels": dict(self.pattern_pixels),
            "stage_seconds": {k: round(v, 4) for k, v in self.stage_seconds.items()},
            "wall_seconds": round(self.wall_seconds, 4),
            "megapixels_per_second": round(self.megapixels_per_second, 4),
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "outputs": dict(self.outputs),
            "resumed_from_row": self.resumed_from_row,
            "processed_pixels": self.processed_pixels,
        }

    def format(self) -> str:
        """A short human-readable report for the end of ``stars-edge run``."""
        total = max(1, self.height * self.width)
        lines = [
            f"scene {self.width}x{self.height} px, {self.tiles} tiles, {self.wall_seconds:.2f} s "
            f"({self.megapixels_per_second:.3f} Mpx/s) on {self.device or self.backend}, {self.precision}"
            + (f", resumed at tile row {self.resumed_from_row}" if self.resumed_from_row else ""),
            "pixels per pattern:",
        ]
        for name, count in self.pattern_pixels.items():
            lines.append(f"  {name:<16} {count:>12d}  {100.0 * count / total:5.1f} %")
        stages = ", ".join(f"{k} {v:.2f}" for k, v in self.stage_seconds.items())
        lines.append(f"time per stage (s): {stages} (read/preprocess run in a reader thread, overlapping)")
        runs = ", ".join(f"{k} {v}" for k, v in self.engine_runs.items()) or "none"
        lines.append(f"engine runs (tiles) per pattern: {runs}")
        for kind, path in self.outputs.items():
            lines.append(f"{kind}: {path}")
        return "\n".join(lines)


@dataclass
class _PreparedTile:
    row: int
    col: int
    inputs: dict[str, np.ndarray]
    codes: np.ndarray


class _Timer:
    """Seconds per stage, safe to add to from the reader thread and the main thread."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(STAGES, 0.0)
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.seconds[stage] += seconds


_END = object()


def tile_cache_bytes(paths: Sequence[str | os.PathLike[str]], tile: int) -> int:
    """Bytes of decoded blocks that one tile window can touch across the inputs: (tile + block)^2 each.

    A window that straddles block edges touches up to four blocks per band, and its right neighbour shares
    half of them; when they stay cached each block is decompressed about once instead of up to four times
    (measured: 8192^2 three-modality scene, 512 px deflate blocks, end-to-end 2.3 -> 3.5 Mpx/s).
    Unreadable files count 0: their error comes later, with a proper message, from ``RasterSource``.
    """
    total = 0
    for path in paths:
        try:
            with rasterio.open(path) as dataset:
                block_rows, block_cols = dataset.block_shapes[0] if dataset.block_shapes else (1, 1)
                itemsize = max(np.dtype(dtype).itemsize for dtype in dataset.dtypes)
                total += (tile + block_rows) * (tile + block_cols) * dataset.count * itemsize
        except (rasterio.errors.RasterioError, OSError):
            continue
    return total


@contextlib.contextmanager
def gdal_cache_limit(tile_bytes: int = 0) -> Iterator[None]:
    """Size GDAL's block cache for a run: ``CACHED_TILE_WINDOWS`` tiles' worth of blocks, between
    ``GDAL_CACHE_MB`` and ``GDAL_CACHE_MAX_MB``. GDAL's own default (5 % of RAM) ignores the layout."""
    wanted = -(-CACHED_TILE_WINDOWS * tile_bytes // (1024 * 1024))
    megabytes = min(max(GDAL_CACHE_MB, wanted), GDAL_CACHE_MAX_MB)
    options = {} if "GDAL_CACHEMAX" in os.environ else {"GDAL_CACHEMAX": megabytes * 1024 * 1024}
    with rasterio.Env(**options):
        yield


def pixel_codes(raw: RawTile, min_valid: float) -> np.ndarray:
    """Per-pixel 3-bit pattern codes of a tile (0 = no prediction), following the module's rules."""
    inside = raw.inside
    codes = np.zeros(inside.shape, dtype=np.uint8)
    inside_count = int(inside.sum())
    if inside_count == 0:
        return codes
    fractions = {m: float(np.count_nonzero(v & inside)) / inside_count for m, v in raw.valid.items()}
    present = [m for m, f in fractions.items() if f >= min_valid] or [
        m for m, f in fractions.items() if f > 0
    ]
    fallback = np.zeros_like(codes)
    for name, valid in raw.valid.items():
        bit = np.uint8(MODALITY_BITS[name])
        fallback |= np.where(valid, bit, np.uint8(0))
        if name in present:
            codes |= np.where(valid, bit, np.uint8(0))
    codes = np.where(codes == 0, fallback, codes)
    codes[~inside] = 0
    return codes


def prepare_tile(raw: RawTile, specs: Mapping[str, ModalitySpec]) -> dict[str, np.ndarray]:
    """Normalised ``float32 (bands, T, T)`` inputs; invalid pixels set to 0 (the band mean), never used."""
    prepared: dict[str, np.ndarray] = {}
    for name, values in raw.values.items():
        normalised = specs[name].normalize(values)
        np.copyto(normalised, 0.0, where=~raw.valid[name][None])
        prepared[name] = normalised
    return prepared


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    """Numerically stable softmax in float32."""
    shifted = logits - logits.max(axis=axis, keepdims=True)
    np.exp(shifted, out=shifted)
    shifted /= shifted.sum(axis=axis, keepdims=True)
    return shifted


class _Prefetcher:
    """A reader thread filling a bounded queue with prepared tiles, row-major from ``first_row``."""

    def __init__(
        self,
        source: TileSource,
        grid: TileGrid,
        specs: Mapping[str, ModalitySpec],
        first_row: int,
        min_valid: float,
        timer: _Timer,
        depth: int,
    ) -> None:
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._args = (source, grid, specs, first_row, min_valid, timer)
        self._thread = threading.Thread(target=self._work, name="stars-edge-reader", daemon=True)
        self._thread.start()

    def _put(self, item: Any) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _work(self) -> None:
        source, grid, specs, first_row, min_valid, timer = self._args
        try:
            for row in range(first_row, grid.rows):
                for col in range(grid.cols):
                    if self._stop.is_set():
                        return
                    y, x = grid.origin(row, col)
                    start = time.perf_counter()
                    raw = source.read(y, x, grid.tile)
                    middle = time.perf_counter()
                    tile = _PreparedTile(row, col, prepare_tile(raw, specs), pixel_codes(raw, min_valid))
                    timer.add("read", middle - start)
                    timer.add("preprocess", time.perf_counter() - middle)
                    if not self._put(tile):
                        return
            self._put(_END)
        except BaseException as exc:  # handed to the main thread, which re-raises it
            self._put(exc)

    def get(self) -> _PreparedTile:
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        if item is _END:
            raise RuntimeError("reader thread ended early")
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Predictor:
    """Runs a manifest's engines over scenes (GeoTIFFs) or arrays; one engine per pattern, loaded lazily.

    ``backend``: ``auto`` (TensorRT when usable and built for this GPU, else ONNX Runtime), ``onnxruntime``
    or ``tensorrt``. ``expected_model_sha256`` refuses engines exported from another checkpoint.
    """

    def __init__(
        self,
        engines_dir: str | os.PathLike[str],
        backend: str = "auto",
        precision: str = "fp32",
        threads: int | None = None,
        expected_model_sha256: str | None = None,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
        if backend not in BACKEND_CHOICES:
            raise ConfigError(f"--backend must be one of {', '.join(BACKEND_CHOICES)}, got {backend!r}")
        if threads is not None and threads < 1:
            raise ConfigError(f"--threads must be at least 1, got {threads}")
        self.manifest: Manifest = load_manifest(Path(engines_dir), verify=True)
        digest = self.manifest.model.checkpoint_sha256
        if expected_model_sha256 is not None and expected_model_sha256 != digest:
            raise ManifestError(
                f"{self.manifest.root}: engines were exported from checkpoint {digest[:12]}..., expected "
                f"{expected_model_sha256[:12]}...; rebuild them from that checkpoint"
            )
        self.requested_backend = backend
        self.precision = precision
        self.threads = threads
        self._engines: dict[str, EngineSet] = {}

    @property
    def classes(self) -> int:
        return self.manifest.model.classes

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.manifest.model.class_names

    def _engine_set(self, modalities: tuple[str, ...], tile: int) -> EngineSet:
        """The engines for every pattern these modalities can form, checked before any tile is read."""
        patterns = all_patterns(modalities)
        backend = resolve_backend_name(self.requested_backend, self.manifest, patterns, self.precision)
        engines = self._engines.get(backend)
        if engines is None:
            engines = EngineSet(self.manifest, backend, self.precision, self.threads)
            self._engines[backend] = engines
        engines.check(patterns, tile)
        return engines

    def _stream(
        self,
        source: TileSource,
        grid: TileGrid,
        engines: EngineSet,
        timer: _Timer,
        batch: int,
        min_valid: float,
        first_row: int,
        probabilities: str | None,
        runs: dict[str, int],
        progress: bool,
    ) -> Generator[tuple[int, RowBands], None, None]:
        """Yield ``(tile_row, finished rows)`` from ``first_row`` on; a resume recomputes the row before it
        (without yielding) to rebuild the overlap carry exactly as an uninterrupted run had it."""
        from tqdm import tqdm

        warmup = first_row - 1 if first_row > 0 else None
        start_row = first_row if warmup is None else warmup
        blender = RowBlender(grid, self.classes, probabilities, all_patterns(source.modalities))
        prefetch = _Prefetcher(
            source, grid, self.manifest.modalities, start_row, min_valid, timer, 2 * batch + 2
        )
        bar = tqdm(
            total=(grid.rows - first_row) * grid.cols,
            unit="tile",
            disable=not progress,
            desc="stars-edge run",
        )
        began = time.perf_counter()
        pixels_done = 0
        try:
            for row in range(start_row, grid.rows):
                blender.start_row(row, fresh=row == start_row)
                for chunk in range(0, grid.cols, batch):
                    waited = time.perf_counter()
                    tiles = [prefetch.get() for _ in range(min(batch, grid.cols - chunk))]
                    timer.add("wait", time.perf_counter() - waited)
                    probs = self._infer(tiles, engines, timer, batch, runs if row != warmup else {})
                    blended = time.perf_counter()
                    for tile, tile_probs in zip(tiles, probs, strict=True):
                        blender.add(tile.col, tile_probs, CODE_TO_INDEX[tile.codes])
                    timer.add("blend", time.perf_counter() - blended)
                    if row != warmup:
                        bar.update(len(tiles))
                if row == warmup:
                    continue
                bands = blender.finish_row()
                pixels_done += bands.classes.size
                elapsed = max(time.perf_counter() - began, 1e-9)
                bar.set_postfix_str(f"{pixels_done / elapsed / 1e6:.2f} Mpx/s")
                yield row, bands
        finally:
            bar.close()
            prefetch.close()

    def _infer(
        self,
        tiles: list[_PreparedTile],
        engines: EngineSet,
        timer: _Timer,
        batch: int,
        runs: dict[str, int],
    ) -> list[np.ndarray | None]:
        """Per tile, probabilities composed per pixel from the engine of each pixel's pattern."""
        start = time.perf_counter()
        jobs: dict[int, list[int]] = {}
        for index, tile in enumerate(tiles):
            for found in np.flatnonzero(np.bincount(tile.codes.ravel(), minlength=8)[1:]) + 1:
                jobs.setdefault(int(found), []).append(index)
        composed: list[np.ndarray | None] = [None] * len(tiles)
        for code in sorted(jobs, key=lambda c: int(CODE_TO_INDEX[c])):
            pattern = CODE_PATTERNS[code]
            assert pattern is not None
            members = jobs[code]
            runs[pattern.name] = runs.get(pattern.name, 0) + len(members)
            for offset in range(0, len(members), batch):
                part = members[offset : offset + batch]
                inputs = {m: np.stack([tiles[i].inputs[m] for i in part]) for m in pattern}
                probabilities = softmax(engines.run(pattern, inputs))
                for slot, index in enumerate(part):
                    target = composed[index]
                    if target is None:  # the tile's first pattern: take it whole, later ones patch pixels
                        composed[index] = probabilities[slot]
                    else:
                        np.copyto(target, probabilities[slot], where=(tiles[index].codes == code)[None])
        timer.add("inference", time.perf_counter() - start)
        return composed

    def predict_arrays(
        self,
        inputs: Mapping[str, np.ndarray],
        valid: Mapping[str, np.ndarray] | None = None,
        cloud_mask: np.ndarray | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        batch: int = 1,
        min_valid: float = DEFAULT_MIN_VALID,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Class map ``uint8 (H, W)`` (255 = nodata) and pattern map ``uint8 (H, W)`` (0 = none) of
        in-memory physical ``(bands, H, W)`` arrays; NaN/inf and ``valid == False`` pixels are invalid.
        ``tile`` defaults to the manifest's tile size, ``overlap`` to a quarter tile (at most 64)."""
        tile = tile or self.manifest.tile_size
        overlap = min(64, tile // 4) if overlap is None else overlap
        _check_run_options(tile, overlap, batch, min_valid)
        source = ArraySource(inputs, valid, cloud_mask)
        check_band_counts(
            source.band_counts(),
            self.manifest.modalities,
            {m: f"input array {m!r}" for m in source.modalities},
        )
        engines = self._engine_set(source.modalities, tile)
        grid = TileGrid(source.height, source.width, tile, overlap)
        classes = np.full((source.height, source.width), CLASS_NODATA, dtype=np.uint8)
        patterns = np.zeros((source.height, source.width), dtype=np.uint8)
        for _, bands in self._stream(source, grid, engines, _Timer(), batch, min_valid, 0, None, {}, False):
            rows = bands.classes.shape[0]
            classes[bands.start : bands.start + rows] = bands.classes
            patterns[bands.start : bands.start + rows] = bands.patterns
        return classes, patterns

    def predict_scene(
        self,
        optical: str | os.PathLike[str] | None = None,
        sar: str | os.PathLike[str] | None = None,
        dsm: str | os.PathLike[str] | None = None,
        cloud_mask: str | os.PathLike[str] | None = None,
        *,
        out: str | os.PathLike[str],
        pattern_map: str | os.PathLike[str] | None = None,
        probabilities: str | os.PathLike[str] | None = None,
        tile: int = 512,
        overlap: int = 64,
        batch: int = 1,
        min_valid: float = DEFAULT_MIN_VALID,
        resume: bool = False,
        progress: bool = True,
        probabilities_dtype: str = "uint8",
        overviews: bool = False,
        on_row_done: Callable[[int], None] | None = None,
    ) -> RunSummary:
        """Predict a scene from GeoTIFFs and write ``out`` (and the optional pattern map / probabilities).

        The first given raster (optical, SAR, DSM order) is the reference grid. ``on_row_done(row)`` is
        called after each tile row is written (progress hooks; an exception there interrupts the run, which
        ``resume=True`` then continues).
        """
        began = time.perf_counter()
        _check_run_options(tile, overlap, batch, min_valid)
        if probabilities_dtype not in PROBABILITY_DTYPES:
            raise ConfigError(f"--probabilities-dtype must be uint8 or float32, got {probabilities_dtype!r}")
        targets = {"classes": Path(out), "patterns": pattern_map, "probabilities": probabilities}
        chosen = {k: check_output_target(Path(v)) for k, v in targets.items() if v is not None}
        resolved = [p.resolve() for p in chosen.values()]
        if len(set(resolved)) != len(resolved):
            raise OutputError("--out, --pattern-map and --probabilities must be different files")
        paths = {"optical": optical, "sar": sar, "dsm": dsm}
        given = [p for p in (optical, sar, dsm, cloud_mask) if p is not None]
        with gdal_cache_limit(tile_cache_bytes(given, tile)):
            source = RasterSource(
                {k: v for k, v in paths.items() if v is not None}, self.manifest.modalities, cloud_mask
            )
            try:
                engines = self._engine_set(source.modalities, tile)
                grid = TileGrid(source.height, source.width, tile, overlap)
                outputs = self._output_specs(
                    chosen, source, engines, tile, overlap, min_valid, probabilities_dtype
                )
                journal_file = journal_path(chosen["classes"])
                fingerprint = self._fingerprint(source, engines, tile, overlap, min_valid, outputs)
                if resume:
                    journal = Journal.resume_or_new(journal_file, fingerprint, outputs)
                else:
                    discard(outputs, journal_file)
                    journal = Journal(journal_file, fingerprint)
                first_row = min(journal.rows_done, grid.rows)
                runs: dict[str, int] = {}
                timer = _Timer()
                probabilities_kind = probabilities_dtype if "probabilities" in chosen else None
                stream = self._stream(
                    source,
                    grid,
                    engines,
                    timer,
                    batch,
                    min_valid,
                    first_row,
                    probabilities_kind,
                    runs,
                    progress,
                )
                sink = GeoTiffSink(
                    RasterGrid(grid.height, grid.width, source.crs, source.transform), outputs, first_row > 0
                )
                counts = _write_rows(stream, sink, journal, outputs, timer, on_row_done)
                if counts[1:].sum() == 0:
                    discard(outputs, journal.path)
                    raise DataError(
                        f"no valid pixel in {', '.join(str(p) for p in source.paths.values())} (all "
                        "nodata, masked, NaN or clouded); check the inputs and their nodata values"
                    )
                if overviews:
                    build_overviews(outputs)
                commit(outputs)
                journal.path.unlink(missing_ok=True)
            finally:
                source.close()
        return RunSummary(
            height=grid.height,
            width=grid.width,
            tiles=len(grid),
            engine_runs=runs,
            pattern_pixels=_count_names(counts),
            stage_seconds=dict(timer.seconds),
            wall_seconds=time.perf_counter() - began,
            backend=engines.backend,
            device=engines.device,
            precision=self.precision,
            outputs={spec.kind: str(spec.target) for spec in outputs},
            resumed_from_row=first_row,
            processed_pixels=(grid.height - grid.final_rows(first_row)[0]) * grid.width
            if first_row < grid.rows
            else 0,
        )

    def _output_specs(
        self,
        targets: Mapping[str, Path],
        source: RasterSource,
        engines: EngineSet,
        tile: int,
        overlap: int,
        min_valid: float,
        probabilities_dtype: str,
    ) -> list[OutputSpec]:
        pattern_names = {"0": "none", **{str(p.index): p.name for p in ALL_PATTERNS}}
        common = {
            "STARS_EDGE_VERSION": __version__,
            "STARS_MODEL_SHA256": self.manifest.model.checkpoint_sha256,
            "STARS_MODEL": f"{self.manifest.model.variant}/{self.manifest.model.method}",
            "STARS_PRECISION": self.precision,
            "STARS_BACKEND": engines.backend,
            "STARS_TILE": str(tile),
            "STARS_OVERLAP": str(overlap),
            "STARS_MIN_VALID": str(min_valid),
            "STARS_INPUTS": json.dumps({m: p.name for m, p in source.paths.items()}),
            "STARS_PATTERN_NAMES": json.dumps(pattern_names),
            "STARS_CLASS_NAMES": json.dumps(list(self.class_names)),
        }
        specs = [
            OutputSpec(
                "classes",
                targets["classes"],
                1,
                "uint8",
                CLASS_NODATA,
                {**common, "STARS_CONTENT": f"class index, {CLASS_NODATA} = no valid modality"},
                ("class",),
            )
        ]
        if "patterns" in targets:
            specs.append(
                OutputSpec(
                    "patterns",
                    targets["patterns"],
                    1,
                    "uint8",
                    0,
                    {
                        **common,
                        "STARS_CONTENT": "Pattern.index of the engine behind each pixel, 0 = none",
                    },
                    ("pattern",),
                )
            )
        if "probabilities" in targets:
            uint8 = probabilities_dtype == "uint8"
            specs.append(
                OutputSpec(
                    "probabilities",
                    targets["probabilities"],
                    self.classes,
                    probabilities_dtype,
                    None if uint8 else float("nan"),
                    {
                        **common,
                        "STARS_CONTENT": "per-class probability; "
                        + (
                            "uint8 = round(p * 255), all bands 0 = nodata"
                            if uint8
                            else "float32, NaN = nodata"
                        ),
                        "STARS_SCALE": str(1 / 255 if uint8 else 1.0),
                    },
                    tuple(self.class_names),
                )
            )
        return specs

    def _fingerprint(
        self,
        source: RasterSource,
        engines: EngineSet,
        tile: int,
        overlap: int,
        min_valid: float,
        outputs: list[OutputSpec],
    ) -> dict[str, Any]:
        """Everything that must match for a resumed run to equal an uninterrupted one."""
        files = dict(source.paths)
        if source.cloud_path is not None:
            files["cloud_mask"] = source.cloud_path
        inputs = {}
        for name, path in files.items():
            stat = path.stat()
            inputs[name] = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
        return {
            "model": {
                "checkpoint_sha256": self.manifest.model.checkpoint_sha256,
                "classes": self.classes,
                "class_names": list(self.class_names),
            },
            "engines": {p.name: engines.entry(p).sha256 for p in all_patterns(source.modalities)},
            "precision": self.precision,
            "backend": engines.backend,
            "inputs": inputs,
            "tile": tile,
            "overlap": overlap,
            "min_valid": min_valid,
            "outputs": {s.kind: [str(s.target.resolve()), s.dtype] for s in outputs},
        }

    def measure_latency(
        self,
        tile: int | None = None,
        runs: int = 10,
        warmup: int = 2,
        batch: int = 1,
        patterns: Sequence[Pattern | str] | None = None,
    ) -> dict[str, float]:
        """Median milliseconds of one engine call (``batch`` random normalised tiles) per pattern.

        Covers the given patterns, or every pattern the manifest has an engine for at this precision; the
        backend is chosen as for a scene. For quick reports (the demo); ``benchmarks/latency.py`` measures
        formally.
        """
        tile = tile or self.manifest.tile_size
        check_tiling(tile, 0)
        if runs < 1 or warmup < 0 or batch < 1:
            raise ConfigError(f"runs and batch must be >= 1 and warmup >= 0, got {runs}, {batch}, {warmup}")
        if patterns is None:
            chosen = tuple(p for p in self.manifest.patterns if self.manifest.find(p, self.precision))
        else:
            chosen = tuple(Pattern.parse(p) if isinstance(p, str) else p for p in patterns)
        if not chosen:
            raise ManifestError(
                f"{self.manifest.root}: no {self.precision} engine to time; available: "
                f"{self.manifest.describe_engines()}"
            )
        backend = resolve_backend_name(self.requested_backend, self.manifest, chosen, self.precision)
        engines = self._engines.setdefault(
            backend, EngineSet(self.manifest, backend, self.precision, self.threads)
        )
        engines.check(chosen)
        rng = np.random.default_rng(0)
        latencies: dict[str, float] = {}
        for pattern in chosen:
            inputs = {
                m: rng.standard_normal(
                    (batch, self.manifest.modalities[m].bands, tile, tile), dtype=np.float32
                )
                for m in pattern
            }
            for _ in range(warmup):
                engines.run(pattern, inputs)
            times = []
            for _ in range(runs):
                start = time.perf_counter()
                engines.run(pattern, inputs)
                times.append(time.perf_counter() - start)
            latencies[pattern.name] = float(np.median(times) * 1000.0)
        return latencies

    def close(self) -> None:
        """Release every loaded engine."""
        for engines in self._engines.values():
            engines.close()
        self._engines.clear()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_rows(
    stream: Generator[tuple[int, RowBands], None, None],
    sink: GeoTiffSink,
    journal: Journal,
    outputs: list[OutputSpec],
    timer: _Timer,
    on_row_done: Callable[[int], None] | None,
) -> np.ndarray:
    """Write every finished row band; returns pixel counts per pattern index (0 = none).

    An interruption (or a failed write, e.g. a full disk) keeps the partial files and saves the journal so
    ``--resume`` continues; any other ``StarsEdgeError`` (bad data, which would fail again) removes them.
    """
    counts = np.zeros(len(ALL_PATTERNS) + 1, dtype=np.int64)
    for name, count in journal.pattern_pixels.items():
        counts[0 if name == "none" else Pattern.parse(name).index] = count
    try:
        for row, bands in stream:
            written = time.perf_counter()
            data = {"classes": bands.classes[None], "patterns": bands.patterns[None]}
            if bands.probabilities is not None:
                data["probabilities"] = bands.probabilities
            sink.write_rows(bands.start, data)
            counts += np.bincount(bands.patterns.ravel(), minlength=counts.size)
            timer.add("write", time.perf_counter() - written)
            journal.rows_done = row + 1
            journal.pattern_pixels = _count_names(counts)
            if on_row_done is not None:
                on_row_done(row)
    except BaseException as exc:
        stream.close()  # stops the reader thread
        sink.close()
        resumable = isinstance(exc, OutputError) or not isinstance(exc, StarsEdgeError)
        if journal.rows_done > 0 and resumable:
            journal.save()
        else:
            discard(outputs, journal.path)
        raise
    sink.close()
    return counts


def _count_names(counts: np.ndarray) -> dict[str, int]:
    names = {"none": int(counts[0])}
    for pattern in ALL_PATTERNS:
        if counts[pattern.index]:
            names[pattern.name] = int(counts[pattern.index])
    return names


def _check_run_options(tile: int, overlap: int, batch: int, min_valid: float) -> None:
    check_tiling(tile, overlap)
    if batch < 1:
        raise ConfigError(f"--batch must be at least 1, got {batch}")
    if not 0.0 < min_valid <= 1.0:
        raise ConfigError(f"--min-valid must be in (0, 1], got {min_valid}")
