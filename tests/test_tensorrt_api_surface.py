"""Every TensorRT name the project uses is bound by every supported release (10.3 / JetPack 6, newest 10.x,
newest 11.x), read from the checked-in name lists of NVIDIA's bindings wheels; no TensorRT or GPU needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from export.tensorrt_api import NAMES_DIR, SUPPORTED_VERSIONS, names_file
from export.tensorrt_api.surface import (
    Names,
    collect_project,
    collect_source,
    missing_tensorrt_names,
    supported_names,
    union_index,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
ALL = ", ".join(SUPPORTED_VERSIONS)
NEWEST_11 = next(v for v in SUPPORTED_VERSIONS if v.startswith("11."))


@pytest.fixture(scope="module")
def names() -> dict[str, dict[str, tuple[str, str | None]]]:
    return supported_names()


@pytest.fixture(scope="module")
def index(names: dict[str, Names]) -> dict[str, tuple[str, str | None]]:
    return union_index(names)


def test_one_sorted_name_list_per_supported_release() -> None:
    expected = {names_file(v).name for v in SUPPORTED_VERSIONS}
    assert {p.name for p in NAMES_DIR.glob("tensorrt-*.txt")} == expected
    for version in SUPPORTED_VERSIONS:
        lines = [line for line in names_file(version).read_text().splitlines() if not line.startswith("#")]
        body = [line.split()[0] for line in lines]
        assert body == sorted(set(body)), f"{names_file(version)} is not sorted or has duplicates"
        assert len(body) > 1500
        core = {"Builder class", "IExecutionContext.execute_async_v3 method", "__version__ value"}
        assert core <= set(lines)


def test_project_uses_only_names_every_supported_tensorrt_binds(
    names: dict[str, Names], index: Names
) -> None:
    uses = collect_project(PROJECT_ROOT, index)
    assert missing_tensorrt_names(uses, names) == []
    used = {u.name for u in uses if u.module == "tensorrt"}
    # The collector reaches objects several calls away from the module (builder -> network -> tensor,
    # runtime -> engine -> context, self. attributes, a pass-through helper), else it would check little.
    assert {
        "Builder.build_serialized_network",
        "IBuilderConfig.set_timing_cache",
        "ITensor.name",
        "ICudaEngine.get_tensor_name",
        "IExecutionContext.execute_async_v3",
        "NetworkDefinitionCreationFlag.STRONGLY_TYPED",
    } <= used


REMOVED = {
    "execute_async_v2": (
        """
import tensorrt as trt
engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(blob)
context = engine.create_execution_context()
context.execute_async_v2(bindings, stream)
""",
        "IExecutionContext.execute_async_v2",
        ALL,
    ),
    "build_engine": (
        """
import tensorrt
def build(logger):
    builder = tensorrt.Builder(logger)
    with builder.create_network(0) as network:
        return builder.build_engine(network, builder.create_builder_config())
""",
        "Builder.build_engine",
        ALL,
    ),
    "EXPLICIT_BATCH": (
        """
from importlib import import_module
trt = import_module("tensorrt")
flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
""",
        "NetworkDefinitionCreationFlag.EXPLICIT_BATCH",
        NEWEST_11,
    ),
    "IInt8EntropyCalibrator2": (
        """
import tensorrt as trt
class Calibrator(trt.IInt8EntropyCalibrator2):
    pass
""",
        "IInt8EntropyCalibrator2",
        NEWEST_11,
    ),
    "BuilderFlag.INT8 and int8_calibrator": (
        """
import tensorrt as trt
class Build:
    def __init__(self, logger: trt.ILogger) -> None:
        self.builder = trt.Builder(logger)
    def config(self, calibrator):
        config = self.builder.create_builder_config()
        config.set_flag(trt.BuilderFlag.INT8)
        config.int8_calibrator = calibrator
""",
        "IBuilderConfig.int8_calibrator",
        NEWEST_11,
    ),
}


@pytest.mark.parametrize("case", sorted(REMOVED))
def test_a_removed_name_is_reported_with_the_releases_that_lack_it(
    case: str, names: dict[str, Names], index: Names
) -> None:
    source, name, lacking = REMOVED[case]
    problems = missing_tensorrt_names(collect_source(source, "snippet.py", index), names)
    assert any(f"tensorrt.{name} is not bound by TensorRT {lacking}" in p for p in problems), problems
    assert all(p.startswith("snippet.py:") for p in problems)


def test_flag_removed_in_11_is_reported_once_per_use(names: dict[str, Names], index: Names) -> None:
    source, _, _ = REMOVED["BuilderFlag.INT8 and int8_calibrator"]
    problems = missing_tensorrt_names(collect_source(source, "snippet.py", index), names)
    assert problems == [
        f"snippet.py:8: tensorrt.BuilderFlag.INT8 is not bound by TensorRT {NEWEST_11}",
        f"snippet.py:9: tensorrt.IBuilderConfig.int8_calibrator is not bound by TensorRT {NEWEST_11}",
    ]


def test_probing_with_hasattr_is_not_a_use(names: dict[str, Names], index: Names) -> None:
    source = """
import tensorrt as trt
legacy = hasattr(trt.IExecutionContext, "execute_async_v2")
"""
    uses = collect_source(source, "snippet.py", index)
    assert [u.name for u in uses] == ["IExecutionContext"]
    assert missing_tensorrt_names(uses, names) == []


def test_uses_after_an_optional_import_and_across_branches_are_collected(
    names: dict[str, Names], index: Names
) -> None:
    """``except ImportError: trt = None``, if/else and loop bodies do not hide the uses that follow them."""
    source = """
try:
    import tensorrt as trt
except ImportError:
    trt = None
if trt is not None:
    builder = trt.Builder(logger)
else:
    builder = None
builder.build_engine(network, config)
for _ in range(2):
    context = trt.Runtime(logger).deserialize_cuda_engine(blob).create_execution_context()
context.execute_async_v2(bindings, stream)
"""
    problems = missing_tensorrt_names(collect_source(source, "snippet.py", index), names)
    assert [p.split(" is not bound")[0] for p in problems] == [
        "snippet.py:10: tensorrt.Builder.build_engine",
        "snippet.py:13: tensorrt.IExecutionContext.execute_async_v2",
    ]
