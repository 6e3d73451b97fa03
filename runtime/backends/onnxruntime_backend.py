"""ONNX Runtime backend: CPU everywhere, CUDA / TensorRT execution providers where the build has them."""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stars_edge.errors import BackendUnavailableError, DataError, ManifestError

#: Execution providers we use when the installed onnxruntime offers them, fastest first.
PREFERRED_PROVIDERS: tuple[str, ...] = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)


class OnnxRuntimeBackend:
    """One ``onnxruntime.InferenceSession`` per engine file.

    ``threads`` sets intra-op threads (``--threads``); None lets ONNX Runtime use every core. ``providers``
    overrides the execution providers (default: those of ``PREFERRED_PROVIDERS`` that this build has).
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        output_name: str = "logits",
    ) -> None:
        if not self.is_available():
            raise BackendUnavailableError(
                "onnxruntime is not installed; install it with `pip install stars-edge[runtime]`"
            )
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        chosen = list(providers) if providers is not None else self.default_providers()
        try:
            self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=chosen)
        except Exception as exc:  # onnxruntime raises its own untyped exceptions for bad model files
            raise ManifestError(
                f"{self.path} cannot be loaded by onnxruntime ({str(exc).splitlines()[0]}); "
                "rebuild it with `stars-edge build-engines`"
            ) from exc
        self.input_names = tuple(item.name for item in self._session.get_inputs())
        outputs = [item.name for item in self._session.get_outputs()]
        if output_name not in outputs:
            raise ManifestError(
                f"{self.path} has outputs {outputs}, expected {output_name!r}; rebuild it with "
                "`stars-edge build-engines`"
            )
        self.output_name = output_name
        self.providers = tuple(self._session.get_providers())
        self.device = "onnxruntime " + ",".join(p.removesuffix("ExecutionProvider") for p in self.providers)

    @classmethod
    def is_available(cls) -> bool:
        """True when onnxruntime can be imported (no session or device is created)."""
        return importlib.util.find_spec("onnxruntime") is not None

    @staticmethod
    def default_providers() -> list[str]:
        """The preferred execution providers this onnxruntime build offers, fastest first."""
        import onnxruntime as ort

        available = set(ort.get_available_providers())
        return [p for p in PREFERRED_PROVIDERS if p in available] or ["CPUExecutionProvider"]

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run one batch of named ``float32 (N, bands, H, W)`` inputs; returns ``logits``."""
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise DataError(f"{self.path} needs input(s) {', '.join(missing)}; got {', '.join(inputs)}")
        feed: dict[str, Any] = {
            name: np.ascontiguousarray(inputs[name], dtype=np.float32) for name in self.input_names
        }
        try:
            (logits,) = self._session.run([self.output_name], feed)
        except Exception as exc:  # shape or type mismatches surface as onnxruntime exceptions
            shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in feed.items())
            raise DataError(
                f"{self.path} rejected inputs {shapes}: {str(exc).splitlines()[0]}; check that the rasters "
                "match the bands the engines were built for"
            ) from exc
        return np.asarray(logits, dtype=np.float32)

    def close(self) -> None:
        """Drop the session (onnxruntime frees its memory when the session is collected)."""
        self._session = None
