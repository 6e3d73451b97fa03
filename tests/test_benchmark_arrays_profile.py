"""``benchmarks/arrays_profile.py``: predict_arrays profiled stage by stage with the reader's work serial."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from latency_models import write_engine_folder  # noqa: E402

from benchmarks import arrays_profile  # noqa: E402


def test_functions_are_given_to_their_stage_by_file() -> None:
    assert arrays_profile.stage_of("/x/runtime/backends/openvino_backend.py") == "engine calls"
    assert arrays_profile.stage_of("/x/runtime/blending_stride4.py") == "blending and upsampling"
    assert arrays_profile.stage_of("/x/runtime/array_source.py") == "cutting tiles"
    assert arrays_profile.stage_of("/x/numpy/_core/fromnumeric.py") == "other"


def test_the_profile_covers_the_run_and_keeps_the_threaded_map(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("rasterio")
    folder = write_engine_folder(tmp_path / "engines")
    out = tmp_path / "profile.json"
    argv = [
        "--engines",
        str(folder),
        "--precision",
        "fp32",
        "--size",
        "256",
        "--workdir",
        str(tmp_path / "w"),
    ]
    assert arrays_profile.main([*argv, "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    assert record["same_class_map"] is True
    # every engine call ran where the profile sees it (calls in flight would run on worker threads)
    assert record["engine_calls_profiled"] > 0
    stages = record["stage_seconds"]
    assert (
        stages["engine calls"] > 0 and stages["cutting tiles"] > 0 and stages["blending and upsampling"] > 0
    )
    # the stages account for the profiled call: nothing large is lost between them
    assert (
        0.5 * record["serial_profiled_seconds"]
        < sum(stages.values())
        <= record["serial_profiled_seconds"] * 1.05
    )
    # the runtime's own reader thread is back in place afterwards
    import runtime.scheduling
    import runtime.writing

    assert runtime.writing.Prefetcher is runtime.scheduling.Prefetcher
