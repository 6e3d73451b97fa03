"""OpenVINO backend: the manifest's FP32 and Q/DQ INT8 ONNX files compiled for the CPU.

Why it exists: ONNX Runtime's CPU provider cannot run a symmetric-int8 Q/DQ convnet as integer kernels on x86
(its Relu fold needs a zero point at the range minimum, its s8xs8 kernels need AVX-VNNI-INT8), so the
TensorRT-legal INT8 file is *slower* than FP32 there. OpenVINO reads the very same file and runs its
convolutions as INT8 (VNNI / AMX), and its FP32 convolutions are faster too (oneDNN, blocked layouts).

Compile settings are explicit: ``streams`` inference streams (one infer request each, so that many
``run`` calls can be in flight from different threads), ``INFERENCE_NUM_THREADS`` = ``--threads`` shared
among them, and an explicit ``INFERENCE_PRECISION_HINT`` (OpenVINO otherwise silently runs "FP32" models
in BF16 on CPUs with AVX512-BF16 or AMX, which is not what the accuracy gate measured).
``precision_hint="bf16"`` opts in.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from runtime.backends.base import rejected_inputs
from stars_edge.errors import BackendUnavailableError, DataError, ManifestError

#: ``precision_hint`` values and the OpenVINO element type names they map to.
PRECISION_HINTS: dict[str, str] = {"f32": "f32", "fp32": "f32", "bf16": "bf16", "f16": "f16", "fp16": "f16"}

_CORE: Any = None
_CORE_LOCK = threading.Lock()
#: Where OpenVINO keeps compiled models between runs (``STARS_EDGE_CACHE_DIR``, else the user cache).
CACHE_ENV = "STARS_EDGE_CACHE_DIR"


def compiled_model_cache() -> Path | None:
    """The folder for OpenVINO's compiled-model cache, created if needed; None where it cannot be (a
    read-only home): compiling then simply starts from scratch each run.

    Why: compiling is per run and per pattern (0.46 s per INT8 pattern measured on the edge engines; a
    tiny FP32 engine 0.118 s cold, 0.041 s from the cache), a visible share of a scene's time."""
    base = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "stars-edge"
    )
    folder = Path(base) / "openvino"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None
    return folder if os.access(folder, os.W_OK) else None


def _core() -> Any:
    """One ``openvino.Core`` per process (OpenVINO recommends sharing it: plugins load once).

    It also converts one array through OpenVINO's numpy bridge before any engine runs: the bridge
    initialises itself at its first use, and two threads doing that first use at once (two streams' first
    calls) deadlocked in pybind11 (one thread holding the GIL waits on a C++ static guard, the other holds
    the guard and waits for the GIL; seen with 2 streams on a fresh process)."""
    global _CORE
    with _CORE_LOCK:
        if _CORE is None:
            import openvino as ov

            bridge = ov.Tensor(np.zeros((1, 1), dtype=np.float32))
            bridge.data[:] = np.ones((1, 1), dtype=np.float32)
            np.array(bridge.data, copy=True)
            _CORE = ov.Core()
    return _CORE


class OpenVINOCompileError(BackendUnavailableError):
    """OpenVINO is installed but cannot compile this graph on this CPU (the caller may fall back)."""


class OpenVINOBackend:
    """One compiled model per engine file on the CPU, with one infer request per stream.

    ``streams`` > 1 compiles that many independent streams (the threads split among them) and lets as many
    ``run`` calls run at once, each on its own request, so the runtime can keep the engines busy while it
    blends (``runtime/pipelining.py``), and a stream that loses its core to other work does not stall the
    other (one stream's threads wait for each other).
    """

    name = "openvino"

    def __init__(
        self,
        path: str | Path,
        threads: int | None = None,
        output_name: str = "logits",
        precision_hint: str = "f32",
        perf_counts: bool = False,
        streams: int = 1,
        content_id: str | None = None,
    ) -> None:
        if not self.is_available():
            raise BackendUnavailableError(
                "openvino is not installed; install it with `pip install stars-edge[openvino]` "
                "or use --backend onnxruntime"
            )
        if precision_hint not in PRECISION_HINTS:
            raise ManifestError(
                f"unknown OpenVINO precision hint {precision_hint!r}; choose {', '.join(PRECISION_HINTS)}"
            )
        if streams < 1:
            raise ManifestError(f"OpenVINO needs at least one stream, got {streams}")
        self.path = Path(path)
        if not self.path.is_file():
            raise ManifestError(
                f"{self.path} does not exist; rebuild the engines with `stars-edge build-engines`"
            )
        core = _core()
        self.precision_hint = PRECISION_HINTS[precision_hint]
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY" if streams == 1 else "THROUGHPUT",
            "NUM_STREAMS": str(streams),
            "INFERENCE_PRECISION_HINT": self.precision_hint,
            "PERF_COUNT": "YES" if perf_counts else "NO",
        }
        if threads is not None:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        cache = compiled_model_cache()
        source: Any
        if cache is not None and content_id:
            # From the file's path, a cached model loads without reading and hashing the graph (four INT8
            # engines 0.29-0.42 s against 0.47-0.58 s, quiet). OpenVINO keys such a cache by the path, not
            # the content, so each content (the manifest's sha256, checked just before) gets a folder of its
            # own: a file rebuilt in place never meets the blob of its former content.
            config["CACHE_DIR"] = str(cache / f"sha256-{content_id[:32]}")
            source = str(self.path)
        else:
            if cache is not None:
                config["CACHE_DIR"] = str(cache)
            source = self._read(core)
        try:
            self._compiled = core.compile_model(source, "CPU", config)
        except Exception as exc:  # known on some AMD VMs: a CPU-plugin primitive the host cannot run
            if isinstance(source, str):
                self._read(core)  # an unreadable file is a ManifestError, not a compile failure
            raise OpenVINOCompileError(
                f"OpenVINO cannot compile {self.path} on this CPU ({_first_line(exc)}); "
                "use --backend onnxruntime"
            ) from exc
        outputs = [name for port in self._compiled.outputs for name in port.get_names()]
        if output_name not in outputs:
            raise ManifestError(
                f"{self.path} has outputs {outputs}, expected {output_name!r}; rebuild it with "
                "`stars-edge build-engines`"
            )
        inputs = self._compiled.inputs
        self.input_names = tuple(port.get_any_name() for port in inputs)
        # OpenVINO does not always reject a wrong band count (it may read past a smaller tensor): check here.
        self._bands = {port.get_any_name(): _static_dim(port.get_partial_shape(), 1) for port in inputs}
        self.output_name = output_name
        #: ``run`` calls that may be in flight at once (one per stream and infer request).
        self.concurrency = streams
        self._requests: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for _ in range(streams):
            self._requests.put(self._compiled.create_infer_request())
        self._last_request: Any = None
        import openvino as ov

        # The hint is the precision of the float layers (an INT8 file's quantized convolutions stay int8).
        self.device = (
            f"openvino {ov.get_version().split('-')[0]} on CPU (float layers in {self.precision_hint})"
        )

    def _read(self, core: Any) -> Any:
        """The engine file as an OpenVINO model; a file OpenVINO cannot read is a ManifestError."""
        try:
            return core.read_model(str(self.path))
        except Exception as exc:  # OpenVINO raises RuntimeError subclasses for unreadable files
            raise ManifestError(
                f"{self.path} cannot be read by OpenVINO ({_first_line(exc)}); rebuild it with "
                "`stars-edge build-engines`"
            ) from exc

    @classmethod
    def is_available(cls) -> bool:
        """True when openvino can be imported and offers a CPU device (nothing is compiled)."""
        if importlib.util.find_spec("openvino") is None:
            return False
        try:
            return "CPU" in _core().available_devices
        except Exception:  # a broken install: treat as absent, ONNX Runtime takes over
            return False

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run one batch of named ``float32 (N, bands, H, W)`` inputs; returns ``logits``."""
        missing = [name for name in self.input_names if name not in inputs]
        if missing:
            raise DataError(f"{self.path} needs input(s) {', '.join(missing)}; got {', '.join(inputs)}")
        feed = {name: np.ascontiguousarray(inputs[name], dtype=np.float32) for name in self.input_names}
        wrong = [
            f"{name} {tuple(array.shape)} (expected (N, {self._bands[name]}, H, W))"
            for name, array in feed.items()
            if array.ndim != 4 or self._bands[name] not in (None, array.shape[1])
        ]
        request = self._requests.get()  # blocks while every stream's request is busy
        try:
            try:
                if wrong:
                    raise ValueError("; ".join(wrong))
                # zero-copy: the request reads the arrays in place (infer returns before anyone reuses them)
                request.infer(feed, share_inputs=True)
            except Exception as exc:  # shape or type mismatches surface as OpenVINO RuntimeErrors
                raise rejected_inputs(self.path, feed, exc) from exc
            logits = np.array(request.get_tensor(self.output_name).data, dtype=np.float32, copy=True)
        finally:
            self._last_request = request
            self._requests.put(request)
        return logits

    def profile(self) -> dict[str, float]:
        """Milliseconds per executed layer type of the last run (needs ``perf_counts=True``)."""
        totals: dict[str, float] = {}
        for info in self._last_request.profiling_info if self._last_request is not None else ():
            if info.real_time.total_seconds() <= 0:
                continue
            key = f"{info.node_type} ({info.exec_type})"
            totals[key] = totals.get(key, 0.0) + info.real_time.total_seconds() * 1e3
        return dict(sorted(totals.items(), key=lambda item: -item[1]))

    def close(self) -> None:
        """Drop the request and the compiled model (OpenVINO frees them when collected)."""
        self._requests = queue.SimpleQueue()
        self._last_request = None
        self._compiled = None


def _static_dim(shape: Any, index: int) -> int | None:
    """Dimension ``index`` of an OpenVINO PartialShape when static, else None."""
    if shape.rank.is_dynamic or len(shape) <= index or shape[index].is_dynamic:
        return None
    return int(shape[index].get_length())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
