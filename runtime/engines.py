"""The engines of one manifest on one backend: resolved per pattern, loaded on first use, cached."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from runtime.backends import Backend, OnnxRuntimeBackend, TensorRTBackend, gpu_compute_capability
from stars_edge.errors import ConfigError, ManifestError
from stars_edge.manifest import EngineEntry, Manifest
from stars_edge.modalities import Pattern


class EngineSet:
    """Picks the manifest entry for each pattern on one backend and precision, and runs it."""

    def __init__(self, manifest: Manifest, backend: str, precision: str, threads: int | None = None) -> None:
        self.manifest = manifest
        self.backend = backend
        self.precision = precision
        self.threads = threads
        self._loaded: dict[Pattern, Backend] = {}
        self.device = ""

    def entry(self, pattern: Pattern) -> EngineEntry:
        """The manifest entry that serves ``pattern`` (TensorRT: built by this TensorRT for this GPU)."""
        if self.backend != "tensorrt":
            return self.manifest.select(pattern, self.precision, self.backend)
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
        """Fail before any tile is read when a pattern the scene may need has no engine, or (TensorRT,
        whose optimisation profiles end at the tile size they were built for) when ``tile`` is too big."""
        for pattern in patterns:
            entry = self.entry(pattern)
            if tile is not None and self.backend == "tensorrt" and tile > entry.tile_size:
                raise ConfigError(
                    f"{self.manifest.engine_path(entry)} takes tiles up to {entry.tile_size} px; "
                    f"use --tile {entry.tile_size} or smaller (or rebuild the engines for {tile})"
                )

    def _engine(self, pattern: Pattern) -> Backend:
        engine = self._loaded.get(pattern)
        if engine is None:
            entry = self.entry(pattern)
            path = self.manifest.engine_path(entry)
            if self.backend == "tensorrt":
                engine = TensorRTBackend(path)
            else:
                engine = OnnxRuntimeBackend(path, threads=self.threads, output_name=entry.output)
            self.device = engine.device
            self._loaded[pattern] = engine
        return engine

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
        """Release every loaded engine."""
        for engine in self._loaded.values():
            engine.close()
        self._loaded.clear()
