"""What a run reports (``RunSummary``) and records about itself (output tags, the resume fingerprint)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from runtime.outputs import CLASS_NODATA, OutputSpec
from runtime.sources import gdal_path, local_file
from stars_edge import __version__
from stars_edge.modalities import ALL_PATTERNS, Pattern


def code_counts(codes: np.ndarray, length: int = 8) -> np.ndarray:
    """``np.bincount(codes.ravel(), minlength=length)`` of small non-negative integer codes (pattern codes or
    indices, all below ``length``): one min/max pass where a single code fills the array (most tiles and
    block bands), else one comparison pass per code between the least and the largest. The same counts, 3.5x
    faster than ``bincount``, which widens every value to ``intp`` first (0.7 against 2.5 ms for a 256 x 4096
    band of pattern indices; 16 such bands per 4096 px scene on the main thread)."""
    counts = np.zeros(length, dtype=np.intp)
    if codes.size == 0:
        return counts
    low, high = int(codes.min()), int(codes.max())
    if low == high:
        counts[low] = codes.size
        return counts
    for code in range(low, high + 1):
        counts[code] = np.count_nonzero(codes == code)
    return counts


@dataclass
class RunSummary:
    """What a run did: pixels per pattern, tiles, engine calls and pixels, time per stage and throughput."""

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
    #: Pixels fed to each pattern's engine (whole tiles and windows around invalid regions).
    engine_pixels: dict[str, int] = field(default_factory=dict)
    #: Engine calls per input shape ``"BxHxW"`` (batch, height, width), per pattern name: whole-tile batches
    #: and windows, this call's only (like ``engine_runs``: a resume counts what it ran itself).
    engine_shapes: dict[str, dict[str, int]] = field(default_factory=dict)
    tile_rows: int = 0
    resumed: bool = False
    chunks: int = 1
    resumed_chunk: int = 0
    #: Engine calls kept in flight at once (``--streams`` as the backend honoured it: 1 on TensorRT and GPUs).
    engine_streams: int = 1
    #: Threads that read and prepared tiles; ``stage_seconds`` "read" and "preprocess" sum over them.
    reader_threads: int = 1
    #: The per-pixel kernels the run chose (``runtime/kernels.py``): ``c``, ``numba`` or ``numpy``; the same
    #: maps either way, so this says where the time went, not what was computed.
    kernels: str = "numpy"
    #: What the run decided about its inputs (bands reordered or selected) and contract warnings it accepted.
    input_notes: list[str] = field(default_factory=list)
    #: CPU seconds of the thread that ran each stage (``stage_seconds`` are wall seconds, which include the
    #: time a thread waited for a core); the process's CPU beyond their sum is the engines' own threads.
    stage_cpu_seconds: dict[str, float] = field(default_factory=dict)

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
            "engine_pixels": dict(self.engine_pixels),
            "engine_shapes": {name: dict(calls) for name, calls in self.engine_shapes.items()},
            "pattern_pixels": dict(self.pattern_pixels),
            "stage_seconds": {k: round(v, 4) for k, v in self.stage_seconds.items()},
            "stage_cpu_seconds": {k: round(v, 4) for k, v in self.stage_cpu_seconds.items()},
            "wall_seconds": round(self.wall_seconds, 4),
            "megapixels_per_second": round(self.megapixels_per_second, 4),
            "backend": self.backend,
            "device": self.device,
            "precision": self.precision,
            "engine_streams": self.engine_streams,
            "reader_threads": self.reader_threads,
            "kernels": self.kernels,
            "outputs": dict(self.outputs),
            "resumed": self.resumed,
            "resumed_from_row": self.resumed_from_row,
            "tile_rows": self.tile_rows,
            "chunks": self.chunks,
            "resumed_chunk": self.resumed_chunk,
            "processed_pixels": self.processed_pixels,
            "input_notes": list(self.input_notes),
        }

    def format(self) -> str:
        """A short human-readable report for the end of ``stars-edge run``."""
        total = max(1, self.height * self.width)
        resumed = ""
        if self.resumed:
            resumed = f", resumed at tile row {self.resumed_from_row} of {self.tile_rows}"
            if self.chunks > 1:
                resumed += f" (column chunk {self.resumed_chunk + 1} of {self.chunks})"
        lines = [
            f"scene {self.width}x{self.height} px, {self.tiles} tiles, {self.wall_seconds:.2f} s "
            f"({self.megapixels_per_second:.3f} Mpx/s) with {self.device or self.backend}, "
            f"{self.precision} engines, {self.engine_streams} call(s) in flight, {self.kernels} kernels"
            + resumed,
            "pixels per pattern:",
        ]
        for name, count in self.pattern_pixels.items():
            lines.append(f"  {name:<16} {count:>12d}  {100.0 * count / total:5.1f} %")
        stages = ", ".join(f"{k} {v:.2f}" for k, v in self.stage_seconds.items())
        readers = (
            "a reader thread" if self.reader_threads == 1 else f"{self.reader_threads} reader threads, summed"
        )
        lines.append(
            f"time per stage (s): {stages} (read/preprocess run in {readers}, encode in the writer thread, "
            "overlapping)"
        )
        if self.stage_cpu_seconds:
            cpu = ", ".join(f"{k} {v:.2f}" for k, v in self.stage_cpu_seconds.items() if v >= 0.005)
            lines.append(f"CPU per stage (s, the engines' own threads not included): {cpu}")
        runs = ", ".join(f"{k} {v}" for k, v in self.engine_runs.items()) or "none"
        lines.append(f"engine runs (tiles and windows) per pattern: {runs}")
        for kind, path in self.outputs.items():
            lines.append(f"{kind}: {path}")
        lines.extend(f"input: {note}" for note in self.input_notes)
        return "\n".join(lines)


def count_names(counts: np.ndarray) -> dict[str, int]:
    """Pixel counts per pattern index as ``{"none": n, pattern name: n, ...}``."""
    names = {"none": int(counts[0])}
    for pattern in ALL_PATTERNS:
        if counts[pattern.index]:
            names[pattern.name] = int(counts[pattern.index])
    return names


def names_to_counts(names: Mapping[str, int]) -> np.ndarray:
    counts = np.zeros(len(ALL_PATTERNS) + 1, dtype=np.int64)
    for name, count in names.items():
        counts[0 if name == "none" else Pattern.parse(name).index] = count
    return counts


def output_specs(
    targets: Mapping[str, Path],
    common: Mapping[str, str],
    classes: int,
    class_names: tuple[str, ...],
    probabilities_dtype: str,
) -> list[OutputSpec]:
    """The class map, and the optional pattern map and probabilities, with their tags."""
    pattern_names = {"0": "none", **{str(p.index): p.name for p in ALL_PATTERNS}}
    tags = {
        "STARS_EDGE_VERSION": __version__,
        **common,
        "STARS_PATTERN_NAMES": json.dumps(pattern_names),
        "STARS_CLASS_NAMES": json.dumps(list(class_names)),
    }
    content = f"class index, {CLASS_NODATA} = no valid modality"
    specs = [
        OutputSpec(
            "classes",
            targets["classes"],
            1,
            "uint8",
            CLASS_NODATA,
            {**tags, "STARS_CONTENT": content},
            ("class",),
        )
    ]
    if "patterns" in targets:
        content = "Pattern.index of the engine behind each pixel, 0 = none"
        specs.append(
            OutputSpec(
                "patterns",
                targets["patterns"],
                1,
                "uint8",
                0,
                {**tags, "STARS_CONTENT": content},
                ("pattern",),
            )
        )
    if "probabilities" in targets:
        uint8 = probabilities_dtype == "uint8"
        content = "per-class probability; " + (
            "uint8 = round(p * 255), all bands 0 = nodata" if uint8 else "float32, NaN = nodata"
        )
        specs.append(
            OutputSpec(
                "probabilities",
                targets["probabilities"],
                classes,
                probabilities_dtype,
                None if uint8 else float("nan"),
                {**tags, "STARS_CONTENT": content, "STARS_SCALE": str(1 / 255 if uint8 else 1.0)},
                tuple(class_names),
            )
        )
    return specs


def input_fingerprint(files: Mapping[str, Path]) -> dict[str, Any]:
    """Path, size and mtime of every input file (a resumed run must read the same files)."""
    inputs: dict[str, Any] = {}
    for name, path in files.items():
        local = local_file(path)
        if local is None:  # remote or in-memory: only its name can be compared
            inputs[name] = {"path": gdal_path(path)}
            continue
        stat = local.stat()
        inputs[name] = {
            "path": gdal_path(path) if gdal_path(path).startswith("/vsi") else str(local.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }
    return inputs
