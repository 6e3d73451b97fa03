"""TensorRT engines from the ONNX artifacts, with the TensorRT 10/11 API only.

Every network is *strongly typed* (``NetworkDefinitionCreationFlag.STRONGLY_TYPED``): the precision comes from
the ONNX graph itself (float32 graph -> FP32 engine, the float16 graph -> FP16, the Q/DQ graph -> INT8), which
is the only way TensorRT 11 accepts reduced precision now that the FP16/INT8 builder flags and the implicit
calibrators are gone. Because the graph carries the types, an INT8 engine built from the Q/DQ ONNX as is would
run every layer that is not quantized (the head, upsampling, attention) in FP32: ``fp16_base_graph`` writes a
copy whose float parts are FP16 (opset >= 19, FP16 Q/DQ scales, float32 IO), the *FP16 base* TensorRT
recommends for INT8 engines. One optimisation profile covers the dynamic batch/height/width. The timing cache
is shared by every build of one TensorRT version on one GPU and its file name says which
(``tensorrt.trt10.9.0.sm89.timing.cache``): a cache from another version or GPU is never fed to the builder.
Every builder call that reports failure by its return value (parse, profile, timing cache, build) is checked.
The engine file name carries the TensorRT version and the GPU's compute capability, because an engine only
runs where it was built.

Unverified here: no TensorRT libraries or GPU exist on this project's machines; the calls follow the
documented TensorRT 10/11 Python API and are exercised by stand-ins in the tests.

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

TIMING_CACHE_NAME = "tensorrt.timing.cache"  # legacy un-keyed name; see timing_cache_name
#: Opset at which QuantizeLinear/DequantizeLinear accept float16 scales (needed for an FP16 base).
FP16_QDQ_OPSET = 19
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
    """``(target, "")`` where TensorRT and a CUDA GPU are usable, else ``(None, reason)``.

    Both are checked even when the first fails, so one run on a new machine names everything missing.
    """
    reasons = []
    try:
        import tensorrt as trt
    except Exception as exc:  # ImportError, or the bindings failing to find libnvinfer
        trt = None
        reasons.append(f"the tensorrt Python package is not usable here ({type(exc).__name__}: {exc})")
    if trt is not None and int(str(trt.__version__).split(".")[0]) < 10:
        reasons.append(f"TensorRT {trt.__version__} is too old; stars-edge needs TensorRT >= 10")
    try:
        capability = _compute_capability()
    except Exception as exc:  # no driver, no device, no cuda-python: all mean "no usable GPU"
        reasons.append(f"no CUDA GPU is usable ({type(exc).__name__}: {exc})")
    if reasons or trt is None:
        return None, "; ".join(reasons)
    return TensorRTTarget(str(trt.__version__), capability), ""


def _compute_capability(device: int = 0) -> str:
    """Compute capability of ``device`` via cuda-python (the bindings NVIDIA's samples use)."""
    from runtime.backends.tensorrt_backend import describe_cuda_error

    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # cuda-python < 12.6 layout
    attr = cudart.cudaDeviceAttr
    err, major = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, device)
    if int(err) != 0:
        raise RuntimeError(describe_cuda_error(cudart, err, "cudaDeviceGetAttribute"))
    err, minor = cudart.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, device)
    if int(err) != 0:
        raise RuntimeError(describe_cuda_error(cudart, err, "cudaDeviceGetAttribute"))
    return f"{major}.{minor}"


def engine_file_name(pattern: Pattern, precision: str, target: TensorRTTarget) -> str:
    """``<pattern>.<precision>.trt<version>.sm<cc>.engine`` (docs/ARCHITECTURE.md)."""
    return f"{pattern}.{precision}.{target.tag}.engine"


def timing_cache_name(target: TensorRTTarget) -> str:
    """``tensorrt.trt<version>.sm<cc>.timing.cache``: one cache per TensorRT version and GPU."""
    return f"tensorrt.{target.tag}.timing.cache"


def fp16_base_graph(qdq_path: str | Path, out_path: str | Path) -> Path:
    """Write a copy of a Q/DQ graph whose unquantized float parts compute in FP16 (IO stays float32).

    Strongly typed TensorRT takes each layer's type from the graph, so this is how an INT8 engine gets an
    FP16 rather than FP32 base. The copy is raised to opset 19 (float16 Q/DQ scales) first.
    """
    import onnx
    from onnx import version_converter

    from export.fp16 import convert_to_fp16

    model = onnx.load(str(qdq_path))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    try:
        if opset < FP16_QDQ_OPSET:
            model = version_converter.convert_version(model, FP16_QDQ_OPSET)
        half = convert_to_fp16(model)
        onnx.checker.check_model(half)
    except Exception as exc:  # the version converter and checker raise their own error types
        raise ExportError(
            f"cannot make an FP16-base copy of {qdq_path}: {type(exc).__name__}: {exc}"
        ) from exc
    out_path = Path(out_path)
    with atomic_path(out_path) as tmp:
        onnx.save(half, str(tmp))
    return out_path


def _checked(result: Any, what: str, onnx_path: str | Path) -> Any:
    """A builder return value, or ExportError when it signals failure (None, False or a negative index)."""
    failed = (
        result is None
        or result is False
        or (isinstance(result, int) and not isinstance(result, bool) and result < 0)
    )
    if failed:
        raise ExportError(f"TensorRT {what} failed while building {onnx_path}; see the TensorRT log above")
    return result


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
    builder = _checked(trt.Builder(logger), "Builder()", onnx_path)
    network = _checked(
        builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)),
        "create_network(STRONGLY_TYPED)",
        onnx_path,
    )
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = _checked(builder.create_builder_config(), "create_builder_config", onnx_path)
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    profile = _checked(builder.create_optimization_profile(), "create_optimization_profile", onnx_path)
    for index in range(network.num_inputs):
        tensor = network.get_input(index)
        if tensor.name not in input_bands:
            raise ExportError(
                f"{onnx_path} has input {tensor.name!r}, not in the manifest's {sorted(input_bands)}"
            )
        bands = input_bands[tensor.name]
        profile.set_shape(
            tensor.name,
            (1, bands, min_size, min_size),
            (1, bands, tile_size, tile_size),
            (max_batch, bands, tile_size, tile_size),
        )
    _checked(config.add_optimization_profile(profile), "add_optimization_profile", onnx_path)

    cache_path = Path(timing_cache)
    cache = _checked(
        config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b""),
        f"create_timing_cache({cache_path.name})",
        onnx_path,
    )
    _checked(config.set_timing_cache(cache, ignore_mismatch=False), "set_timing_cache", onnx_path)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ExportError(f"TensorRT failed to build an engine from {onnx_path}; see the TensorRT log above")
    engine_path = Path(engine_path)
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(memoryview(serialized))
    updated = _checked(config.get_timing_cache(), "get_timing_cache", onnx_path)
    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(memoryview(updated.serialize()))
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
