"""The engines of one manifest on one backend: resolved per pattern, checked and loaded on first use."""

from __future__ import annotations

import re
import threading
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from runtime.backends import (
    MANIFEST_BACKEND,
    Backend,
    OnnxRuntimeBackend,
    TensorRTBackend,
    gpu_compute_capability,
    manifest_backend,
    open_backend,
)
from stars_edge.errors import ConfigError, ManifestError
from stars_edge.io import sha256_file
from stars_edge.manifest import BACKENDS, PRECISIONS, EngineEntry, Manifest
from stars_edge.modalities import Pattern

#: A protobuf ``StringStringEntryProto`` with key "location": how ONNX names a tensor's external data file.
_EXTERNAL_LOCATION = re.compile(rb"\x0a\x08location\x12")


def confined_path(root: Path, relative: str, what: str) -> Path:
    """``root / relative`` after refusing absolute paths and anything that resolves outside ``root``
    (``..`` components, symlinks pointing out)."""
    candidate = Path(relative)
    if candidate.is_absolute() or ".." in candidate.parts:
        raise ManifestError(f"{root}: {what} {relative!r} must be a plain path inside the engines folder")
    resolved = (root / candidate).resolve()
    if not resolved.is_relative_to(root.resolve()):
        raise ManifestError(
            f"{root}: {what} {relative!r} resolves to {resolved}, outside the engines folder; copy the file "
            "into the folder instead of linking it"
        )
    return root / candidate


def external_data_locations(data: bytes) -> list[str]:
    """File names an ONNX model's tensors keep their data in (``external_data`` location entries)."""
    locations = []
    for match in _EXTERNAL_LOCATION.finditer(data):
        at, length, shift = match.end(), 0, 0
        while at < len(data):
            byte = data[at]
            length |= (byte & 0x7F) << shift
            at += 1
            shift += 7
            if not byte & 0x80:
                break
        locations.append(data[at : at + length].decode("utf-8", errors="replace"))
    return locations


def checked_engine(manifest: Manifest, entry: EngineEntry) -> tuple[Path, bool]:
    """The entry's file, refused when it lies (or keeps external data) outside the engines folder, is
    missing, or does not hash to the recorded sha256; and whether that sha256 covers all of it (no external
    data files)."""
    if manifest.root is None:
        raise ManifestError("manifest has no folder yet; save_manifest or load_manifest it first")
    root = Path(manifest.root)
    path = confined_path(root, entry.path, "engine path")
    if not path.is_file():
        raise ManifestError(f"{root}: engine file {path} is missing; rebuild: `stars-edge build-engines`")
    digest = sha256_file(path)
    if digest != entry.sha256:
        raise ManifestError(
            f"{root}: {path} has sha256 {digest[:12]}... but the manifest records {entry.sha256[:12]}...; "
            "the file was altered, rebuild with `stars-edge build-engines`"
        )
    locations = external_data_locations(path.read_bytes()) if path.suffix == ".onnx" else []
    for location in locations:
        confined_path(path.parent, location, f"external data of {path.name}")
    return path, not locations


class EngineSet:
    """Picks the manifest entry for each pattern on one backend and precision, and runs it."""

    def __init__(
        self,
        manifest: Manifest,
        backend: str,
        precision: str,
        threads: int | None = None,
        allow_flagged: bool = False,
        requested: str | None = None,
        streams: int = 1,
    ) -> None:
        self.manifest = manifest
        self.backend = backend
        #: The ``--backend`` that resolved to ``backend`` (e.g. ``auto``), named in errors.
        self.requested = requested or backend
        self.precision = precision
        self.threads = threads
        self.allow_flagged = allow_flagged
        #: Calls in flight at once per engine: OpenVINO streams, ONNX Runtime on the CPU; 1 otherwise
        #: (TensorRT, ONNX Runtime with a GPU provider).
        on_cpu = backend == "openvino" or (backend == "onnxruntime" and OnnxRuntimeBackend.cpu_only())
        self.streams = streams if on_cpu else 1
        self._on_cpu = on_cpu
        self._loaded: dict[Pattern, Backend] = {}
        self._loading = threading.Lock()  # engines load on first use, possibly from several threads
        self._preloading: threading.Thread | None = None
        self.device = ""

    def entry(self, pattern: Pattern) -> EngineEntry:
        """The manifest entry that serves ``pattern`` (TensorRT: built by this TensorRT for this GPU)."""
        if self.backend != "tensorrt":
            files = manifest_backend(self.backend)
            if not self.manifest.find(pattern, self.precision, files):
                raise ManifestError(self._missing(pattern, files))
            chosen = self.manifest.select(pattern, self.precision, files)
        else:
            chosen = self._tensorrt_entry(pattern)
        if chosen.gate == "flagged" and not self.allow_flagged:
            raise ManifestError(
                f"{self.manifest.root}: the {chosen.describe()} engine was flagged by the accuracy gate at "
                "export; use another --precision or pass --allow-flagged to run it anyway"
            )
        return chosen

    def _missing(self, pattern: Pattern, files: str) -> str:
        """One line: no ``precision`` engine for ``pattern`` on the backend that was chosen, the precisions
        the manifest holds for each backend, and what to do."""
        chosen = (
            self.backend if self.requested == self.backend else f"{self.backend} (chosen by --backend auto)"
        )
        held: dict[str, list[str]] = {
            kind: [
                p
                for p in PRECISIONS
                if any(e.backend == kind and e.precision == p for e in self.manifest.engines)
            ]
            for kind in BACKENDS
        }
        if self.precision in held[files]:
            having = [str(q) for q in self.manifest.patterns if self.manifest.find(q, self.precision, files)]
            problem = f"its {self.precision} {_kind_name(files)} cover only {', '.join(having)}"
        else:
            problem = " and ".join(
                f"{', '.join(held[kind])} {_kind_name(kind)}" if held[kind] else f"no {_kind_name(kind)}"
                for kind in BACKENDS
            )
            problem = f"the manifest has {problem}"
        others = [p for p in PRECISIONS if p != self.precision and self.manifest.find(pattern, p, files)]
        fixes = [f"run with --precision {' or '.join(others)}"] if others else []
        if files != "tensorrt" and self.precision in held["tensorrt"]:
            fixes.append("run with --backend tensorrt on the GPU they were built for")
        fixes.append(f"build them with `stars-edge build-engines --precision fp32,{self.precision}`")
        return (
            f"{self.manifest.root} has no engine for {pattern} in {self.precision} to run on {chosen}; "
            f"{problem}; {', or '.join(fixes)}"
        )

    def _tensorrt_entry(self, pattern: Pattern) -> EngineEntry:
        capability = gpu_compute_capability()
        version = TensorRTBackend.version()
        for entry in self.manifest.find(pattern, self.precision, "tensorrt"):
            if entry.compute_capability == capability and entry.tensorrt_version == version:
                return entry
        raise ManifestError(
            f"{self.manifest.root}: no TensorRT {self.precision} engine for {pattern} built with TensorRT "
            f"{version} for compute capability {capability}; build them on this device with "
            "`stars-edge build-engines --backend tensorrt` or run with --backend onnxruntime"
        )

    def check(self, patterns: tuple[Pattern, ...], tile: int | None = None) -> None:
        """Fail before any tile is read when a pattern the scene may need has no (unflagged) engine, or
        (TensorRT, whose optimisation profiles end at the tile size they were built for) ``tile`` is too big.
        The files themselves are verified at first use."""
        for pattern in patterns:
            entry = self.entry(pattern)
            if tile is not None and self.backend == "tensorrt" and tile > entry.tile_size:
                raise ConfigError(
                    f"{self.manifest.engine_path(entry)} takes tiles up to {entry.tile_size} px; "
                    f"use --tile {entry.tile_size} or smaller (or rebuild the engines for {tile})"
                )

    @property
    def concurrency(self) -> int:
        """``run`` calls that may be in flight at once from different threads."""
        return self.streams

    def preload(self, pattern: Pattern) -> None:
        """Start loading ``pattern``'s engine on a background thread, so that it loads while a scene's first
        tiles are read instead of after them (the first engine call otherwise waits 0.3-0.5 s for it).

        CPU backends only (a GPU context belongs with the thread that runs the engine), one preload at a
        time, nothing for an engine already loaded. A failed preload leaves nothing behind: the first
        ``run`` of the pattern loads it again and raises the error there, where the run can report it."""
        if not self._on_cpu or pattern in self._loaded:
            return
        if self._preloading is not None and self._preloading.is_alive():
            return
        self._preloading = threading.Thread(
            target=self._preload, args=(pattern,), name="stars-edge-preload", daemon=True
        )
        self._preloading.start()

    def _preload(self, pattern: Pattern) -> None:
        try:
            self._engine(pattern)
        except Exception:  # deferred, not lost: the first run of this pattern raises it (see ``preload``)
            return

    def _engine(self, pattern: Pattern) -> Backend:
        engine = self._loaded.get(pattern)
        if engine is not None:
            return engine
        with self._loading:
            return self._load(pattern)

    def _load(self, pattern: Pattern) -> Backend:
        engine = self._loaded.get(pattern)
        if engine is None:
            entry = self.entry(pattern)
            path, whole = checked_engine(self.manifest, entry)
            engine = open_backend(
                self.backend,
                path,
                threads=self.threads,
                output_name=entry.output,
                input_bands={item["name"]: int(item["bands"]) for item in entry.inputs},
                streams=self.streams,
                content_id=entry.sha256 if whole else None,
            )
            self.device = engine.device
            self._loaded[pattern] = engine
        return engine

    @property
    def loaded(self) -> tuple[Pattern, ...]:
        """Patterns whose engine was verified and loaded so far."""
        return tuple(self._loaded)

    def run(self, pattern: Pattern, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Logits ``float32 (N, classes, H, W)`` of ``pattern``'s engine for a batch of inputs."""
        logits = self._engine(pattern).run({m: inputs[m] for m in pattern})
        classes = self.manifest.model.classes
        if logits.ndim != 4 or logits.shape[1] != classes:
            raise ManifestError(
                f"{self.manifest.engine_path(self.entry(pattern))} returned logits of shape {logits.shape}, "
                f"but the manifest declares {classes} classes; it belongs to another model, rebuild it"
            )
        return logits

    def close(self) -> None:
        """Release every loaded engine (after a preload in flight has finished)."""
        if self._preloading is not None:
            self._preloading.join()
            self._preloading = None
        for engine in self._loaded.values():
            engine.close()
        self._loaded.clear()


def _kind_name(kind: str) -> str:
    """What a manifest backend's files are, and which runtime backends run them (OpenVINO runs ONNX too)."""
    noun = "TensorRT engines" if kind == "tensorrt" else "ONNX files"
    readers = [name for name, files in MANIFEST_BACKEND.items() if files == kind]
    return f"{noun} (for {' and '.join(readers)})" if len(readers) > 1 else noun
