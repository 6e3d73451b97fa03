"""TensorRT engines from the ONNX artifacts, with the TensorRT 10/11 API only.

Every network is *strongly typed* (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): the precision comes from
the ONNX graph itself (float32 graph -> FP32 engine, the float16 graph -> FP16, the Q/DQ graph -> INT8), which
is the only way TensorRT 11 accepts reduced precision now that the FP16/INT8 builder flags and the implicit
calibrators are gone. One optimisation profile covers the dynamic batch/height/width; one timing cache file is
shared by every build so later patterns reuse the tactic timings of earlier ones. The engine file name carries
the TensorRT version and the GPU's compute capability, because an engine only runs where it was built.

``tensorrt`` is imported lazily: this module imports on machines without it, and ``tensorrt_status`` says why
TensorRT cannot be used there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stars_edge.errors import BackendUnavailableError, ExportError
from stars_edge.io import atomic_path
from stars_edge.modalities import Pattern

TIMING_CACHE_NAME = "tensorrt.timing.cache"
WORKSPACE_BYTES = 2 << 30


@dataclass(frozen=True)
class TensorRTTarget:
    """The TensorRT version and GPU an engine is built for (both are part of the engine's identity)."""

    version: str
    compute_capability: str  # e.g. "8.9"

    @property
    def tag(self) -> str:
        """``trt10.9.0.sm89``: the part of the engine file name that says where it runs."""
        return f"trt{self.version}.sm{self.compute_capability.replace('.', '')}"


def tensorrt_status() -> tuple[TensorRTTarget | None, str]:
    """``(target, "")`` where TensorRT and a CUDA GPU are usable, else ``(None, reason)``."""
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or the bindings failing to find libnvinfer
        return None, f"the tensorrt Python package is not usable here ({type(exc).__name__}: {exc})"
    major = int(str(trt.__version__).split(".")[0])
    if major < 10:
        return None, f"TensorRT {trt.__version__} is too old; stars-edge needs TensorRT >= 10"
    try:
        capability = _compute_capability()
    except Exception as exc:  # no driver, no device, no cuda-python: all mean "no usable GPU"
        return None, f"no CUDA GPU is usable ({type(exc).__name__}: {exc})"
    return TensorRTTarget(str(trt.__version__), capability), ""


def _compute_capability(device: int = 0) -> str:
    """Compute capability of ``device`` via cuda-python (the bindings NVIDIA's samples use)."""
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # cuda-python < 12.6 layout
    attr = cudart.cudaDeviceAttr
    err, major = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device)
    if int(err) != 0:
        raise RuntimeError(f"cudaDeviceGetAttribute failed with error {err}")
    err, minor = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device)
    if int(err) != 0:
        raise RuntimeError(f"cudaDeviceGetAttribute failed with error {err}")
    return f"{major}.{minor}"


def engine_file_name(pattern: Pattern, precision: str, target: TensorRTTarget) -> str:
    """``<pattern>.<precision>.trt<version>.sm<cc>.engine`` (docs/ARCHITECTURE.md)."""
    return f"{pattern}.{precision}.{target.tag}.engine"


def build_tensorrt_engine(
    onnx_path: str | Path,
    engine_path: str | Path,
    input_bands: Mapping[str, int],
    tile_size: int,
    timing_cache: str | Path,
    max_batch: int = 4,
    min_size: int = 32,
) -> Path:
    """Parse ``onnx_path`` into a strongly typed network and write the serialized engine atomically.

    The optimisation profile allows batch 1..``max_batch`` and square-or-not tiles from ``min_size`` to
    ``tile_size`` pixels, tuned for ``(1, bands, tile_size, tile_size)``.
    """
    target, reason = tensorrt_status()
    if target is None:
        raise BackendUnavailableError(f"cannot build {engine_path}: {reason}; use --backend onnxruntime")
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = builder.create_optimization_profile()
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        bands = input_bands[tensor.name]
        profile.set_shape(
            tensor.name,
            (1, bands, min_size, min_size),
            (1, bands, tile_size, tile_size),
            (max_batch, bands, tile_size, tile_size),
        )
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path}; see the TensorRT log above")
    engine_path = Path(engine_path)
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(memoryview(serialized))
    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(memoryview(config.get_timing_cache().serialize()))
    return engine_path


def describe_engine(engine_path: str | Path) -> dict[str, Any]:
    """Input/output names, dtypes and shapes of a serialized engine (used by the tensorrt tests)."""
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise ExportError(
            f"TensorRT cannot deserialize {engine_path}; rebuild it on this GPU/TensorRT version"
        )
    tensors = {}
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        tensors[name] = {
            "mode": "input" if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else "output",
            "dtype": str(engine.get_tensor_dtype(name)),
            "shape": tuple(engine.get_tensor_shape(name)),
        }
    return tensors
