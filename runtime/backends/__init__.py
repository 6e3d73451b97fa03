"""Inference backends behind one protocol; ``resolve_backend_name`` picks one by availability/manifest."""

from __future__ import annotations

from runtime.backends.base import Backend
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.backends.tensorrt_backend import TensorRTBackend, gpu_compute_capability
from stars_edge.errors import BackendUnavailableError, ConfigError
from stars_edge.manifest import Manifest
from stars_edge.modalities import Pattern

BACKEND_CHOICES: tuple[str, ...] = ("auto", "onnxruntime", "tensorrt")

__all__ = [
    "BACKEND_CHOICES",
    "Backend",
    "OnnxRuntimeBackend",
    "TensorRTBackend",
    "gpu_compute_capability",
    "resolve_backend_name",
    "tensorrt_engines_for_this_gpu",
]


def tensorrt_engines_for_this_gpu(manifest: Manifest, patterns: tuple[Pattern, ...], precision: str) -> bool:
    """True when every pattern has a TensorRT engine built by this TensorRT version for this GPU."""
    capability = gpu_compute_capability()
    version = TensorRTBackend.version()
    if capability is None or version is None:
        return False
    for pattern in patterns:
        matches = [
            e
            for e in manifest.find(pattern, precision, "tensorrt")
            if e.compute_capability == capability and e.tensorrt_version == version
        ]
        if not matches:
            return False
    return True


def resolve_backend_name(
    requested: str, manifest: Manifest, patterns: tuple[Pattern, ...], precision: str
) -> str:
    """The backend to run: ``auto`` means TensorRT when usable and built for this GPU, else ONNX Runtime."""
    if requested not in BACKEND_CHOICES:
        raise ConfigError(f"unknown backend {requested!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if requested == "tensorrt":
        if not TensorRTBackend.is_available():
            raise BackendUnavailableError(
                "--backend tensorrt needs the tensorrt and cuda-python packages and an NVIDIA GPU; "
                "use --backend onnxruntime or auto"
            )
        return "tensorrt"
    usable = requested == "auto" and TensorRTBackend.is_available()
    if usable and tensorrt_engines_for_this_gpu(manifest, patterns, precision):
        return "tensorrt"
    if not OnnxRuntimeBackend.is_available():
        raise BackendUnavailableError(
            "no inference backend: install onnxruntime (`pip install stars-edge[runtime]`)"
        )
    return "onnxruntime"
