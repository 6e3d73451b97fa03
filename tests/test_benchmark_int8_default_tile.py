"""``benchmarks/int8_default_tile.py``: interleaved INT8 vs ONNX Runtime FP32 at the default tile."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from latency_models import write_engine_folder  # noqa: E402

from benchmarks import int8_default_tile  # noqa: E402


def test_ratios_compare_per_batch_best_of_each_and_the_runtime_defaults() -> None:
    ms = {
        "openvino int8 batch 1": 3.0,
        "openvino int8 batch 4": 2.0,
        "onnxruntime fp32 batch 1": 4.5,
        "onnxruntime fp32 batch 4": 3.0,
    }
    got = int8_default_tile.ratios(ms, (1, 4))
    assert got["batch 1"] == pytest.approx(1.5) and got["batch 4"] == pytest.approx(1.5)
    assert got["best of each"] == pytest.approx(3.0 / 2.0)
    # the runtime runs OpenVINO at 4 tiles per call and ONNX Runtime at 1
    assert got["runtime defaults"] == pytest.approx(4.5 / 2.0)
    # a faster form of the baseline (two single-thread calls in flight) is the one "best of each" takes
    ms["onnxruntime fp32 2x1 batch 4"] = 2.5
    assert int8_default_tile.ratios(ms, (1, 4))["best of each"] == pytest.approx(2.5 / 2.0)
    assert got["best INT8 of any backend"] == pytest.approx(3.0 / 2.0)
    assert "onnxruntime int8 over its fp32" not in got  # not timed
    # ONNX Runtime's INT8 (NNCF's) faster than OpenVINO's: the best INT8 of any backend is it
    ms |= {"onnxruntime int8 batch 1": 1.8, "onnxruntime int8 batch 4": 2.2}
    got = int8_default_tile.ratios(ms, (1, 4))
    assert got["best INT8 of any backend"] == pytest.approx(2.5 / 1.8)
    assert got["onnxruntime int8 over its fp32"] == pytest.approx(4.5 / 1.8)  # at its default batch, 1


def test_the_benchmark_times_every_configuration_on_real_engines(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    folder = write_engine_folder(tmp_path / "engines")
    out = tmp_path / "int8.json"
    argv = ["--engines", str(folder), "--tile", "64", "--rounds", "2", "--calls", "2", "--json", str(out)]
    assert int8_default_tile.main(argv) == 0
    record = json.loads(out.read_text())
    assert record["settings"]["tile"] == 64
    assert set(record["ms_per_tile"]) == {
        f"{label} batch {b}" for label in int8_default_tile.CONFIGS for b in (1, 4)
    }
    assert all(v > 0 for v in record["ms_per_tile"].values())
    assert set(record["int8_speedup_over_ort_fp32"]) == {
        "batch 1",
        "batch 4",
        "best of each",
        "runtime defaults",
        "best INT8 of any backend",
        "onnxruntime int8 over its fp32",
    }
    assert record["machine"]["load_start"] is not None
