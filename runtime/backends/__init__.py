"""Inference backends behind one protocol; ``resolve_backend_name`` picks one, ``open_backend`` loads it.

``auto`` picks the fastest backend that can run the manifest on this device, in this order:

1. **tensorrt** (native) when TensorRT and a GPU are usable and the manifest has engines built by this
   TensorRT version for this GPU's compute capability: its own kernels, no provider partitioning.
2. **onnxruntime** when its build has the TensorRT or CUDA provider and a GPU answers: a GPU still beats any
   CPU path, and the provider keeps its own engine cache (see ``onnxruntime_backend``).
3. **openvino** on a CPU: it runs the same ONNX files faster than ONNX Runtime's CPU provider (FP32 12.7 vs
   15.2 ms per 512 px tile on 2 Xeon cores), and it runs the TensorRT-legal Q/DQ INT8 file with integer
   convolutions, where ONNX Runtime cannot (9.2 vs 30.1 ms; see docs/EXPORT.md).
4. **onnxruntime** on the CPU: always installed, the fallback.

OpenVINO reads the manifest's ``onnxruntime`` entries (the ONNX files); it has no artifacts of its own.
A model OpenVINO cannot read or compile (known on some AMD VMs) falls back to ONNX Runtime with one warning.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from runtime.backends.base import Backend
from runtime.backends.onnxruntime_backend import OnnxRuntimeBackend
from runtime.backends.openvino_backend import OpenVINOBackend
from runtime.backends.tensorrt_backend import TensorRTBackend, cuda_status, gpu_compute_capability
from stars_edge.errors import BackendUnavailableError, ConfigError, ManifestError
from stars_edge.manifest import Manifest
from stars_edge.modalities import Pattern

BACKEND_CHOICES: tuple[str, ...] = ("auto", "onnxruntime", "openvino", "tensorrt")
#: Which manifest backend's files each runtime backend reads (OpenVINO reads the ONNX files).
MANIFEST_BACKEND: dict[str, str] = {
    "onnxruntime": "onnxruntime",
    "openvino": "onnxruntime",
    "tensorrt": "tensorrt",
}
_GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")

_log = logging.getLogger("stars_edge.runtime")
_warned: set[str] = set()

__all__ = [
    "BACKEND_CHOICES",
    "MANIFEST_BACKEND",
    "Backend",
    "OnnxRuntimeBackend",
    "OpenVINOBackend",
    "TensorRTBackend",
    "cuda_status",
    "gpu_compute_capability",
    "manifest_backend",
    "open_backend",
    "resolve_backend_name",
    "tensorrt_engines_for_this_gpu",
]


def manifest_backend(backend: str) -> str:
    """The manifest ``backend`` whose files ``backend`` runs (``openvino`` -> ``onnxruntime``)."""
    if backend not in MANIFEST_BACKEND:
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    return MANIFEST_BACKEND[backend]


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


def _onnxruntime_has_gpu() -> bool:
    """True when this onnxruntime build offers a GPU provider and a GPU answers."""
    if not OnnxRuntimeBackend.is_available():
        return False
    providers = OnnxRuntimeBackend.default_providers()
    return any(p in providers for p in _GPU_PROVIDERS) and gpu_compute_capability() is not None


def resolve_backend_name(
    requested: str, manifest: Manifest, patterns: tuple[Pattern, ...], precision: str
) -> str:
    """The backend to run ``requested`` (``auto``: the order in this module's docstring)."""
    if requested not in BACKEND_CHOICES:
        raise ConfigError(f"unknown backend {requested!r}; choose one of {', '.join(BACKEND_CHOICES)}")
    if requested == "tensorrt":
        reason = TensorRTBackend.unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(
                f"--backend tensorrt cannot run here: {reason}; use --backend onnxruntime or auto"
            )
        return "tensorrt"
    if requested == "openvino":
        if not OpenVINOBackend.is_available():
            raise BackendUnavailableError(
                "--backend openvino needs the openvino package (`pip install stars-edge[openvino]`); "
                "use --backend onnxruntime or auto"
            )
        return "openvino"
    if requested == "auto":
        if TensorRTBackend.is_available() and tensorrt_engines_for_this_gpu(manifest, patterns, precision):
            return "tensorrt"
        if not _onnxruntime_has_gpu() and OpenVINOBackend.is_available():
            return "openvino"
    if not OnnxRuntimeBackend.is_available():
        raise BackendUnavailableError(
            "no inference backend: install onnxruntime (`pip install stars-edge[runtime]`)"
        )
    return "onnxruntime"


def open_backend(
    backend: str,
    path: str | Path,
    *,
    threads: int | None = None,
    output_name: str = "logits",
    input_bands: Mapping[str, int] | None = None,
    tile: int | None = None,
    device_index: int = 0,
    streams: int = 1,
    content_id: str | None = None,
) -> Backend:
    """Load one engine file on ``backend`` (a resolved name, not ``auto``). ``content_id`` (the file's
    checked sha256, for a file without external data) lets OpenVINO load its cached model by path.

    OpenVINO failing to read or compile a file ONNX Runtime can run is not fatal: the engine runs on ONNX
    Runtime and one warning line says why (once per reason and process). ``streams`` (calls in flight at
    once) applies to OpenVINO and to ONNX Runtime on the CPU; TensorRT runs one call at a time.
    """
    if backend == "tensorrt":
        return TensorRTBackend(path, device_index=device_index)
    if backend == "openvino":
        try:
            return OpenVINOBackend(
                path, threads=threads, output_name=output_name, streams=streams, content_id=content_id
            )
        except (BackendUnavailableError, ManifestError) as exc:
            reason = str(exc)
            if reason not in _warned:
                _warned.add(reason)
                _log.warning("warning: OpenVINO failed, using ONNX Runtime instead: %s", reason)
    elif backend != "onnxruntime":
        raise ConfigError(f"unknown backend {backend!r}; choose one of {', '.join(BACKEND_CHOICES[1:])}")
    return OnnxRuntimeBackend(
        path,
        streams=streams,
        threads=threads,
        output_name=output_name,
        device_id=device_index,
        input_bands=input_bands,
        tile=tile,
    )
