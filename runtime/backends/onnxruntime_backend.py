"""ONNX Runtime backend: CPU everywhere, CUDA / TensorRT execution providers where the build has them.

The GPU providers get options (``provider_options``): without them ONNX Runtime's TensorRT provider rebuilds
every engine in every new session (minutes per pattern) and knows nothing of the dynamic shapes. With them it
keeps an engine cache and a timing cache beside the engines (or in the user cache when that folder is
read-only), builds one optimisation profile for batch 1..``max_batch`` and tiles up to the manifest's tile,
and runs on ``device_id``. Option names are those documented for the TensorRT and CUDA execution providers;
they are exercised only where a GPU build of onnxruntime runs (unverified on this project's CPU machines).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import rejected_inputs
from runtime.cpus import usable_cores
from stars_edge.errors import BackendUnavailableError, DataError, ManifestError

#: Execution providers we use when the installed onnxruntime offers them, fastest first.
PREFERRED_PROVIDERS: tuple[str, ...] = (
    "TensorrtExecutionProvider",
    "CUDAExecutionProvider",
    "CPUExecutionProvider",
)


#: Smallest tile the TensorRT provider's optimisation profile accepts (the model's input multiple).
MIN_PROFILE_TILE = 32


def trt_cache_dir(engine_path: Path) -> Path:
    """Where the TensorRT provider keeps engines: beside the ONNX file, else the user cache when read-only."""
    beside = engine_path.parent / "ort_tensorrt_cache"
    if os.access(engine_path.parent, os.W_OK):
        return beside
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "stars-edge" / "ort_tensorrt_cache"


def _shapes(input_bands: Mapping[str, int], batch: int, tile: int) -> str:
    """``optical:1x4x512x512,sar:1x2x512x512``: the provider's profile-shape syntax."""
    return ",".join(f"{name}:{batch}x{bands}x{tile}x{tile}" for name, bands in input_bands.items())


def provider_options(
    providers: Sequence[str],
    engine_path: Path,
    device_id: int = 0,
    input_bands: Mapping[str, int] | None = None,
    tile: int | None = None,
    max_batch: int = 4,
) -> list[dict[str, str]]:
    """One options dict per provider: caches, profile shapes and device for TensorRT; device for CUDA."""
    options: list[dict[str, str]] = []
    for provider in providers:
        if provider == "TensorrtExecutionProvider":
            cache = trt_cache_dir(engine_path)
            trt: dict[str, str] = {
                "device_id": str(device_id),
                "trt_engine_cache_enable": "True",
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": "True",
                "trt_timing_cache_path": str(cache),
                # The Q/DQ graph and the FP16 graph carry their precision; no implicit FP16/INT8 here.
                "trt_fp16_enable": "False",
                "trt_int8_enable": "False",
            }
            if input_bands and tile:
                trt["trt_profile_min_shapes"] = _shapes(input_bands, 1, MIN_PROFILE_TILE)
                trt["trt_profile_opt_shapes"] = _shapes(input_bands, 1, tile)
                trt["trt_profile_max_shapes"] = _shapes(input_bands, max_batch, tile)
            options.append(trt)
        elif provider == "CUDAExecutionProvider":
            options.append({"device_id": str(device_id), "cudnn_conv_algo_search": "HEURISTIC"})
        else:
            options.append({})
    return options


class OnnxRuntimeBackend:
    """One ``onnxruntime.InferenceSession`` per engine file.

    ``threads`` sets intra-op threads (``--threads``); None lets ONNX Runtime use every core. ``providers``
    overrides the execution providers (default: those of ``PREFERRED_PROVIDERS`` that this build has).
    ``streams`` > 1 (CPU only) splits the threads among that many calls in flight at once from different
    threads (a session's ``run`` is thread-safe): on 2 cores, two single-thread calls in flight ran a 256 px
    tile 1.75x faster than one two-thread call at a time (3.00 against 5.25 ms; 1.25x at four tiles per
    call), ``benchmarks/int8_default_tile.py``'s ``onnxruntime fp32 2x1``.
    """

    name = "onnxruntime"

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        providers: Sequence[str] | None = None,
        output_name: str = "logits",
        device_id: int = 0,
        input_bands: Mapping[str, int] | None = None,
        tile: int | None = None,
        streams: int = 1,
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
        chosen = list(providers) if providers is not None else self.default_providers()
        #: ``run`` calls that may be in flight at once (``streams`` on the CPU; GPU providers take one).
        self.concurrency = max(1, streams) if self.cpu_only(chosen) else 1
        if self.concurrency > 1:
            threads = max(1, (usable_cores() if threads is None else threads) // self.concurrency)
        if threads is not None:
            options.intra_op_num_threads = int(threads)
            options.inter_op_num_threads = 1
        # Spinning intra-op threads busy-wait between calls and starve the reader thread that shares the
        # cores (measured on 2 cores: --threads 1 was 28-76 % faster end to end than spinning threads).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.provider_options = provider_options(chosen, self.path, device_id, input_bands, tile)
        if "TensorrtExecutionProvider" in chosen:
            trt_cache_dir(self.path).mkdir(parents=True, exist_ok=True)
        try:
            self._session = ort.InferenceSession(
                str(self.path), sess_options=options, providers=chosen, provider_options=self.provider_options
            )
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
        self.device = _describe_device(ort.__version__, self.providers, device_id)

    @classmethod
    def is_available(cls) -> bool:
        """True when onnxruntime can be imported (no session or device is created)."""
        return importlib.util.find_spec("onnxruntime") is not None

    @classmethod
    def cpu_only(cls, providers: Sequence[str] | None = None) -> bool:
        """True when ``providers`` (default: ``default_providers``) are the CPU provider alone: the sessions
        that take several ``run`` calls at once (``streams``)."""
        return list(providers if providers is not None else cls.default_providers()) == [
            "CPUExecutionProvider"
        ]

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
            raise rejected_inputs(self.path, feed, exc) from exc
        return np.asarray(logits, dtype=np.float32)

    def close(self) -> None:
        """Drop the session (onnxruntime frees its memory when the session is collected)."""
        self._session = None


def _describe_device(version: str, providers: Sequence[str], device_id: int) -> str:
    """Where a session runs, plainly: ``onnxruntime 1.20.1 on CPU`` or ``onnxruntime 1.20.1 on GPU 0
    (TensorRT, CUDA execution providers; CPU for the rest)``."""
    names = [p.removesuffix("ExecutionProvider").replace("Tensorrt", "TensorRT") for p in providers]
    gpu = [name for name in names if name != "CPU"]
    if not gpu:
        return f"onnxruntime {version} on CPU"
    rest = "; CPU for the rest" if "CPU" in names else ""
    plural = "s" if len(gpu) > 1 else ""
    return f"onnxruntime {version} on GPU {device_id} ({', '.join(gpu)} execution provider{plural}{rest})"
