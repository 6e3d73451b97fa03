"""Stand-ins for ``tensorrt`` and ``cuda.bindings.runtime``, so that the wiring of the TensorRT backend and
builder can be exercised on a CPU (``test_runtime_tensorrt_fake.py``, ``test_export_tensorrt.py``).

They implement just the documented calls the project makes (name-based tensors, set_input_shape,
set_tensor_address, execute_async_v3, cudaMalloc/cudaMallocHost/cudaMemcpyAsync on one stream; the builder
half of the TensorRT 10/11 API), with "device" memory that is ordinary host memory. The fake engine is a
1x1 convolution described in JSON, so results can be compared with the ONNX engines.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import json
import sys
import types
from typing import Any

import numpy as np

FAKE_VERSION = "10.9.0"
FAKE_CAPABILITY = "8.9"


class FakeCudaRuntime(types.ModuleType):
    """``cuda.bindings.runtime`` stand-in: every call returns ``(err, *values)`` like cuda-python."""

    def __init__(self) -> None:
        super().__init__("cuda.bindings.runtime")
        self.__spec__ = importlib.machinery.ModuleSpec(self.__name__, None)
        self.cudaError_t = types.SimpleNamespace(cudaSuccess=0)
        self.cudaMemcpyKind = types.SimpleNamespace(cudaMemcpyHostToDevice=1, cudaMemcpyDeviceToHost=2)
        self.cudaDeviceAttr = types.SimpleNamespace(
            cudaDevAttrComputeCapabilityMajor="major", cudaDevAttrComputeCapabilityMinor="minor"
        )
        self.allocations: dict[int, np.ndarray] = {}
        self.copies: list[int] = []

    def _allocate(self, nbytes: int) -> tuple[int, int]:
        buffer = np.zeros(nbytes, dtype=np.uint8)
        address = buffer.ctypes.data
        self.allocations[address] = buffer
        return 0, address

    def cudaGetDeviceCount(self) -> tuple[int, int]:
        return 0, 1

    def cudaSetDevice(self, device: int) -> tuple[int]:
        return (0,)

    def cudaDeviceGetAttribute(self, attribute: str, device: int) -> tuple[int, int]:
        major, minor = FAKE_CAPABILITY.split(".")
        return 0, int(major if attribute == "major" else minor)

    def cudaGetDeviceProperties(self, device: int) -> tuple[int, Any]:
        major, minor = FAKE_CAPABILITY.split(".")
        return 0, types.SimpleNamespace(major=int(major), minor=int(minor))

    def cudaStreamCreate(self) -> tuple[int, int]:
        return 0, 7

    def cudaStreamSynchronize(self, stream: int) -> tuple[int]:
        return (0,)

    def cudaStreamDestroy(self, stream: int) -> tuple[int]:
        return (0,)

    def cudaMalloc(self, nbytes: int) -> tuple[int, int]:
        return self._allocate(nbytes)

    def cudaMallocHost(self, nbytes: int) -> tuple[int, int]:
        return self._allocate(nbytes)

    def cudaFree(self, pointer: int) -> tuple[int]:
        del self.allocations[pointer]
        return (0,)

    def cudaFreeHost(self, pointer: int) -> tuple[int]:
        del self.allocations[pointer]
        return (0,)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: int, stream: int) -> tuple[int]:
        assert stream == 7, "every copy goes on the backend's one stream"
        ctypes.memmove(dst, src, count)
        self.copies.append(kind)
        return (0,)


def _view(address: int, shape: tuple[int, ...]) -> np.ndarray:
    pointer = ctypes.cast(address, ctypes.POINTER(ctypes.c_float))
    return np.ctypeslib.as_array(pointer, (int(np.prod(shape)),)).reshape(shape)


class _FakeContext:
    def __init__(self, engine: _FakeEngine) -> None:
        self.engine = engine
        self.shapes: dict[str, tuple[int, ...]] = {}
        self.addresses: dict[str, int] = {}
        self.executions = 0

    def set_input_shape(self, name: str, shape: tuple[int, ...]) -> bool:
        low, _, high = self.engine.get_tensor_profile_shape(name, 0)
        if not all(a <= b <= c for a, b, c in zip(low, shape, high, strict=True)):
            return False
        self.shapes[name] = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        n, _, h, w = self.shapes[self.engine.inputs[0]]
        return (n, self.engine.classes, h, w)

    def set_tensor_address(self, name: str, address: int) -> None:
        self.addresses[name] = address

    def execute_async_v3(self, stream: int) -> bool:
        stacked = np.concatenate(
            [_view(self.addresses[n], self.shapes[n]) for n in self.engine.inputs], axis=1
        )
        logits = (
            np.einsum("cb,nbhw->nchw", self.engine.weight, stacked) + self.engine.bias[None, :, None, None]
        )
        _view(self.addresses["logits"], logits.shape)[...] = logits
        self.executions += 1
        return True


class _FakeEngine:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.inputs: list[str] = spec["inputs"]
        self.bands: dict[str, int] = spec["bands"]
        self.weight = np.asarray(spec["weight"], dtype=np.float32)
        self.bias = np.asarray(spec["bias"], dtype=np.float32)
        self.classes = self.weight.shape[0]
        self.max_batch = spec["max_batch"]
        self.tile = spec["tile"]
        self.contexts: list[_FakeContext] = []
        self.num_io_tensors = len(self.inputs) + 1

    def get_tensor_name(self, index: int) -> str:
        return [*self.inputs, "logits"][index]

    def get_tensor_mode(self, name: str) -> str:
        return "INPUT" if name in self.inputs else "OUTPUT"

    def get_tensor_dtype(self, name: str) -> str:
        return "FLOAT"

    def get_tensor_profile_shape(self, name: str, profile: int) -> tuple[tuple[int, ...], ...]:
        bands = self.bands[name]
        return (
            (1, bands, 32, 32),
            (1, bands, self.tile, self.tile),
            (self.max_batch, bands, self.tile, self.tile),
        )

    def create_execution_context(self) -> _FakeContext:
        context = _FakeContext(self)
        self.contexts.append(context)
        return context


def _fake_tensorrt() -> types.ModuleType:
    module = types.ModuleType("tensorrt")
    module.__spec__ = importlib.machinery.ModuleSpec("tensorrt", None)
    module.__version__ = FAKE_VERSION  # type: ignore[attr-defined]
    module.TensorIOMode = types.SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")  # type: ignore[attr-defined]
    module.DataType = types.SimpleNamespace(FLOAT="FLOAT")  # type: ignore[attr-defined]
    module.Logger = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})  # type: ignore[attr-defined]

    class Runtime:
        def __init__(self, logger: object) -> None:
            module.engines = []  # type: ignore[attr-defined]

        def deserialize_cuda_engine(self, blob: bytes) -> _FakeEngine | None:
            try:
                engine = _FakeEngine(json.loads(blob))
            except ValueError:
                return None
            module.engines.append(engine)
            return engine

    module.Runtime = Runtime  # type: ignore[attr-defined]
    _add_fake_builder(module)
    return module


class _FakeTimingCache:
    def __init__(self, blob: bytes) -> None:
        self.entries: list[str] = json.loads(blob) if blob else []

    def serialize(self) -> bytes:
        return json.dumps(self.entries).encode()


def _add_fake_builder(module: types.ModuleType) -> None:
    """The builder half of the TensorRT 10/11 API: parse a conv ONNX and emit the fake engine's JSON.

    ``module.fail`` names one call that reports failure by its return value (None / False / -1), as the real
    API does, so tests can check that every such return is checked. ``module.builds`` records each build.
    """
    module.fail = ""  # type: ignore[attr-defined]
    module.builds = []  # type: ignore[attr-defined]
    module.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=1)  # type: ignore[attr-defined]
    module.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")  # type: ignore[attr-defined]

    def failing(name: str, value: Any, failed: Any) -> Any:
        return failed if module.fail == name else value

    class Tensor:
        def __init__(self, name: str) -> None:
            self.name = name

    class Network:
        def __init__(self, flags: int) -> None:
            self.flags = flags
            self.onnx: Any = None

        @property
        def num_inputs(self) -> int:
            return len(self.onnx.graph.input)

        def get_input(self, index: int) -> Tensor:
            return Tensor(self.onnx.graph.input[index].name)

    class OnnxParser:
        num_errors = 0

        def __init__(self, network: Network, logger: object) -> None:
            self.network = network

        def parse_from_file(self, path: str) -> bool:
            import onnx

            self.network.onnx = onnx.load(path)
            return failing("parse_from_file", True, False)

        def get_error(self, index: int) -> str:
            return "fake parse error"

    class Profile:
        def __init__(self) -> None:
            self.shapes: dict[str, tuple[Any, ...]] = {}

        def set_shape(self, name: str, low: Any, opt: Any, high: Any) -> None:
            self.shapes[name] = (tuple(low), tuple(opt), tuple(high))

    class Config:
        def __init__(self) -> None:
            self.profiles: list[Profile] = []
            self.cache: _FakeTimingCache | None = None

        def set_memory_pool_limit(self, pool: str, size: int) -> None:
            self.workspace = size

        def add_optimization_profile(self, profile: Profile) -> int:
            self.profiles.append(profile)
            return failing("add_optimization_profile", len(self.profiles) - 1, -1)

        def create_timing_cache(self, blob: bytes) -> _FakeTimingCache | None:
            return failing("create_timing_cache", _FakeTimingCache(blob), None)

        def set_timing_cache(self, cache: _FakeTimingCache, ignore_mismatch: bool) -> bool:
            assert ignore_mismatch is False, "a cache from another GPU/version must never be used"
            self.cache = cache
            return failing("set_timing_cache", True, False)

        def get_timing_cache(self) -> _FakeTimingCache | None:
            return self.cache

    class Builder:
        def __init__(self, logger: object) -> None:
            pass

        def create_network(self, flags: int) -> Network:
            return Network(flags)

        def create_builder_config(self) -> Config:
            return Config()

        def create_optimization_profile(self) -> Profile:
            return Profile()

        def build_serialized_network(self, network: Network, config: Config) -> bytes | None:
            from onnx import numpy_helper

            assert network.flags == 1 << 1, "networks must be strongly typed"
            graph = network.onnx.graph
            conv = next(n for n in graph.node if n.op_type == "Conv")
            initializers = {i.name: i for i in graph.initializer}
            weight, bias = (initializers[name] for name in conv.input[1:3])
            values = {"weight": numpy_helper.to_array(weight), "bias": numpy_helper.to_array(bias)}
            types_ = {weight.data_type, bias.data_type}
            (profile,) = config.profiles
            first = next(iter(profile.shapes.values()))
            module.builds.append({"types": types_, "shapes": profile.shapes, "workspace": config.workspace})
            assert config.cache is not None
            config.cache.entries.append(graph.name)
            spec = {
                "inputs": [i.name for i in graph.input],
                "bands": {name: shape[0][1] for name, shape in profile.shapes.items()},
                "weight": values["weight"].astype(np.float32)[:, :, 0, 0].tolist(),
                "bias": values["bias"].astype(np.float32).tolist(),
                "max_batch": first[2][0],
                "tile": first[1][2],
            }
            return failing("build_serialized_network", json.dumps(spec).encode(), None)

    module.Builder = Builder  # type: ignore[attr-defined]
    module.OnnxParser = OnnxParser  # type: ignore[attr-defined]


def install_fakes(setitem: Any = None) -> FakeCudaRuntime:
    """Put the ``tensorrt`` and ``cuda.bindings.runtime`` stand-ins in ``sys.modules``."""
    setitem = setitem or (lambda mapping, key, value: mapping.__setitem__(key, value))
    runtime_module = FakeCudaRuntime()
    for name in ("cuda", "cuda.bindings"):
        package = types.ModuleType(name)
        package.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        setitem(sys.modules, name, package)
    setitem(sys.modules, "cuda.bindings.runtime", runtime_module)
    setitem(sys.modules, "tensorrt", _fake_tensorrt())
    return runtime_module
