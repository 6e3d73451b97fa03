"""Native TensorRT backend (TensorRT 10/11 API) with cuda-python device and pinned host buffers.

Written against the documented name-based tensor API: ``deserialize_cuda_engine``, ``num_io_tensors`` /
``get_tensor_name`` / ``get_tensor_mode``, ``set_input_shape``, ``set_tensor_address`` and
``execute_async_v3`` on one CUDA stream. Nothing CUDA is touched at import: ``tensorrt`` and
``cuda.bindings`` are imported inside the methods, so the module imports on machines without them.
Tests for this class are marked ``tensorrt`` and run only where TensorRT and a GPU are present.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from stars_edge.errors import BackendUnavailableError, DataError, ManifestError


def _cudart() -> Any:
    """cuda-python's CUDA runtime bindings (``cuda.bindings.runtime``; older releases ``cuda.cudart``)."""
    try:
        return importlib.import_module("cuda.bindings.runtime")
    except ImportError as exc:
        try:
            return importlib.import_module("cuda.cudart")
        except ImportError:
            raise exc from None  # name the current layout, not the legacy one


#: cuda-python error names that mean "this machine has no usable NVIDIA driver or GPU", with what to do.
_NO_GPU_ERRORS = {
    "cudaErrorInsufficientDriver": "no NVIDIA driver is loaded, or it is older than the CUDA runtime of this "
    "cuda-python: on a GPU machine install or upgrade the NVIDIA driver (or a cuda-python matching it)",
    "cudaErrorNoDevice": "the NVIDIA driver sees no CUDA GPU: check `nvidia-smi` and CUDA_VISIBLE_DEVICES",
    "cudaErrorCallRequiresNewerDriver": "the NVIDIA driver is older than this cuda-python needs: upgrade it",
}


def describe_cuda_error(cudart: Any, err: Any, what: str) -> str:
    """One line naming the failed call, the error and what it means, e.g. that no driver/GPU is present."""
    texts = []
    for getter in ("cudaGetErrorName", "cudaGetErrorString"):
        try:
            value = getattr(cudart, getter)(err)[1]
            texts.append(value.decode() if isinstance(value, bytes) else str(value))
        except Exception:  # stand-ins and old releases may lack the getters
            texts.append(str(err))
    name, text = texts
    meaning = _NO_GPU_ERRORS.get(name, "check the GPU and its driver (`nvidia-smi`)")
    return f"{what} failed with {name} ({text}): {meaning}"


def _check(result: Any, what: str) -> Any:
    """Unpack a cuda-python ``(err, *values)`` tuple, raising on any error code."""
    cudart = _cudart()
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        raise BackendUnavailableError(f"CUDA call {describe_cuda_error(cudart, err, what)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else tuple(values)


def cuda_status() -> tuple[int, str]:
    """``(number of CUDA GPUs, "")`` through cuda-python, or ``(0, reason)`` saying why none is usable."""
    try:
        cudart = _cudart()
    except ImportError as exc:
        return 0, f"cuda-python is not installed ({exc}); `pip install cuda-python`"
    except Exception as exc:  # installed but unloadable (a broken or mismatched build)
        return 0, f"cuda-python cannot be loaded ({type(exc).__name__}: {exc})"
    try:
        count = _check(cudart.cudaGetDeviceCount(), "cudaGetDeviceCount")
    except BackendUnavailableError as exc:
        return 0, f"no CUDA GPU is usable: {exc}"
    if not count:
        return 0, "no CUDA GPU is usable: cudaGetDeviceCount found none"
    return int(count), ""


def gpu_compute_capability(device: int = 0) -> str | None:
    """``"8.9"``-style compute capability of a GPU, or None where CUDA is unusable."""
    try:
        cudart = _cudart()
        props = _check(cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    except Exception:
        return None
    return f"{props.major}.{props.minor}"


@dataclass
class _Buffer:
    """A pinned host buffer and a device buffer of the same byte capacity."""

    host_ptr: int
    device_ptr: int
    capacity: int


class TensorRTBackend:
    """One deserialised TensorRT engine, one execution context and one CUDA stream."""

    name = "tensorrt"
    #: One ``run`` at a time: the runtime does not call it from several threads.
    concurrency = 1

    def __init__(self, path: str | Path, device_index: int = 0) -> None:
        reason = self.unavailable_reason()
        if reason is not None:
            raise BackendUnavailableError(f"TensorRT is not usable here: {reason}; use --backend onnxruntime")
        import tensorrt as trt

        self._trt = trt
        self._cudart = _cudart()
        self.path = Path(path)
        _check(self._cudart.cudaSetDevice(device_index), "cudaSetDevice")
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self._engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self._engine is None:
            raise ManifestError(
                f"{self.path} could not be deserialised by TensorRT {trt.__version__}; engines are tied to "
                "the TensorRT version and GPU that built them, rebuild with `stars-edge build-engines`"
            )
        self._context = self._engine.create_execution_context()
        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        self.input_names = tuple(
            n for n in names if self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT
        )
        self.output_names = tuple(n for n in names if n not in self.input_names)
        for name in names:
            if self._engine.get_tensor_dtype(name) != trt.DataType.FLOAT:
                raise ManifestError(
                    f"{self.path}: tensor {name!r} is {self._engine.get_tensor_dtype(name)}, the runtime "
                    "contract is float32 IO; rebuild with `stars-edge build-engines`"
                )
        # Larger batches than the optimisation profile allows are split into several executions.
        self.max_batch = min(int(self._engine.get_tensor_profile_shape(n, 0)[2][0]) for n in self.input_names)
        self._stream = _check(self._cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, _Buffer] = {}
        capability = gpu_compute_capability(device_index)
        self.device = f"tensorrt {trt.__version__} on GPU {device_index} (compute capability {capability})"

    @classmethod
    def is_available(cls) -> bool:
        """True when tensorrt and cuda-python import and at least one CUDA GPU answers."""
        return cls.unavailable_reason() is None

    @classmethod
    def unavailable_reason(cls) -> str | None:
        """None where this backend can run, else all reasons it cannot (tensorrt, cuda-python, GPU)."""
        reasons = []
        if importlib.util.find_spec("tensorrt") is None:
            reasons.append("the tensorrt package is not installed (`pip install stars-edge[tensorrt]`)")
        else:
            try:
                importlib.import_module("tensorrt")
            except Exception as exc:  # ImportError, or the bindings failing to find libnvinfer
                reasons.append(f"tensorrt cannot be imported ({type(exc).__name__}: {exc})")
        count, reason = cuda_status()
        if not count:
            reasons.append(reason)
        return "; ".join(reasons) or None

    @staticmethod
    def version() -> str | None:
        """The installed TensorRT version, or None."""
        try:
            return str(importlib.import_module("tensorrt").__version__)
        except Exception:
            return None

    def _buffer(self, name: str, nbytes: int) -> _Buffer:
        """The buffer pair for ``name``, regrown when a larger batch or tile arrives."""
        current = self._buffers.get(name)
        if current is not None and current.capacity >= nbytes:
            return current
        if current is not None:
            self._free(current)
        host = _check(self._cudart.cudaMallocHost(nbytes), "cudaMallocHost")
        device = _check(self._cudart.cudaMalloc(nbytes), "cudaMalloc")
        buffer = _Buffer(host_ptr=int(host), device_ptr=int(device), capacity=nbytes)
        self._buffers[name] = buffer
        return buffer

    @staticmethod
    def _host_view(buffer: _Buffer, shape: tuple[int, ...]) -> np.ndarray:
        count = int(np.prod(shape))
        pointer = ctypes.cast(buffer.host_ptr, ctypes.POINTER(ctypes.c_float))
        return np.ctypeslib.as_array(pointer, (count,)).reshape(shape)

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Logits for a batch, split into chunks the engine's optimisation profile accepts."""
        count = len(next(iter(inputs.values())))
        if count <= self.max_batch:
            return self._run_once(inputs)
        chunks = [
            self._run_once({k: v[start : start + self.max_batch] for k, v in inputs.items()})
            for start in range(0, count, self.max_batch)
        ]
        return np.concatenate(chunks)

    def _run_once(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Copy inputs to the GPU, enqueue the engine on the stream, copy ``logits`` back and wait."""
        cudart = self._cudart
        to_device = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
        to_host = cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name in self.input_names:
            if name not in inputs:
                raise DataError(f"{self.path} needs input {name!r}; got {', '.join(inputs)}")
            array = np.ascontiguousarray(inputs[name], dtype=np.float32)
            if not self._context.set_input_shape(name, tuple(array.shape)):
                raise DataError(
                    f"{self.path}: input {name} shape {tuple(array.shape)} is outside the engine's "
                    "optimisation profile; use a tile size and batch within the range it was built for"
                )
            buffer = self._buffer(name, array.nbytes)
            self._host_view(buffer, array.shape)[...] = array
            _check(
                cudart.cudaMemcpyAsync(
                    buffer.device_ptr, buffer.host_ptr, array.nbytes, to_device, self._stream
                ),
                "cudaMemcpyAsync",
            )
            self._context.set_tensor_address(name, buffer.device_ptr)
        shapes: dict[str, tuple[int, ...]] = {}
        for name in self.output_names:
            shape = tuple(int(d) for d in self._context.get_tensor_shape(name))
            shapes[name] = shape
            buffer = self._buffer(name, int(np.prod(shape)) * 4)
            self._context.set_tensor_address(name, buffer.device_ptr)
        if not self._context.execute_async_v3(self._stream):
            raise DataError(f"{self.path}: TensorRT execution failed; see the TensorRT log above")
        output = "logits" if "logits" in shapes else self.output_names[0]
        buffer = self._buffers[output]
        nbytes = int(np.prod(shapes[output])) * 4
        _check(
            cudart.cudaMemcpyAsync(buffer.host_ptr, buffer.device_ptr, nbytes, to_host, self._stream),
            "cudaMemcpyAsync",
        )
        _check(cudart.cudaStreamSynchronize(self._stream), "cudaStreamSynchronize")
        return self._host_view(buffer, shapes[output]).copy()

    def _free(self, buffer: _Buffer) -> None:
        _check(self._cudart.cudaFree(buffer.device_ptr), "cudaFree")
        _check(self._cudart.cudaFreeHost(buffer.host_ptr), "cudaFreeHost")

    def close(self) -> None:
        """Free every buffer and the stream; the engine and context go with the object."""
        for buffer in self._buffers.values():
            self._free(buffer)
        self._buffers.clear()
        if getattr(self, "_stream", None) is not None:
            _check(self._cudart.cudaStreamDestroy(self._stream), "cudaStreamDestroy")
            self._stream = None
