"""Benchmark harness: FLOP counting on ONNX graphs and the timing protocol's statistics.

Nothing here asserts a speed: timings on a shared 2-core machine are noise. The tests check that the harness
counts exactly and summarises correctly.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from latency_models import CLASSES, tiny_graph, tiny_macs  # noqa: E402

from benchmarks.common import BenchmarkError, TimingStats, count_flops, throughput, time_callable, verdict  # noqa: E402
from stars_edge.modalities import DEFAULT_SPECS, Pattern  # noqa: E402

# ------------------------------------------------------------------------------------------------ FLOPs


@pytest.mark.parametrize("int8", [False, True])
def test_flop_counter_is_exact_on_a_known_graph(int8: bool) -> None:
    pattern = Pattern.parse("optical+sar+dsm")
    count = count_flops(tiny_graph(pattern, int8), {m: [1, DEFAULT_SPECS[m].bands, 64, 64] for m in pattern})
    assert count.complete
    assert count.macs == tiny_macs(pattern, 64)
    assert count.flops == 2 * count.macs
    assert count.nodes_by_op == {"Conv": 4}


def test_flop_counter_scales_with_batch_and_counts_matmul_gemm_and_transpose() -> None:
    nodes = [
        helper.make_node("ConvTranspose", ["x", "wt"], ["up"], strides=[2, 2]),  # (1,3,8,8) -> (1,5,16,16)
        helper.make_node("Reshape", ["up", "shape"], ["flat"]),  # (1, 5*16*16) = (1, 1280)
        helper.make_node("Gemm", ["flat", "wg"], ["g"], transB=1),  # (1,1280) x (7,1280)^T
        helper.make_node("MatMul", ["g", "wm"], ["y"]),  # (1,7) x (7,2)
    ]
    initializers = [
        numpy_helper.from_array(np.zeros((3, 5, 2, 2), np.float32), "wt"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "shape"),
        numpy_helper.from_array(np.zeros((7, 1280), np.float32), "wg"),
        numpy_helper.from_array(np.zeros((7, 2), np.float32), "wm"),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    one = count_flops(model, {"x": [1, 3, 8, 8]})
    assert one.macs_by_op == {"ConvTranspose": 3 * 8 * 8 * 5 * 4, "Gemm": 1280 * 7, "MatMul": 7 * 2}
    assert one.complete
    # Reshape to (0, -1) keeps the batch, so every op scales linearly with it.
    assert count_flops(model, {"x": [3, 3, 8, 8]}).macs == 3 * one.macs


@pytest.mark.parametrize("pattern_name", ["optical+sar+dsm", "sar+dsm"])
def test_flop_counter_matches_torch_on_the_exported_stars_model(pattern_name: str, tmp_path: Path) -> None:
    """The real exported graph (resizes, concats, dynamic shapes) counts what PyTorch's counter counts."""
    pytest.importorskip("torch")
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from export.onnx_export import export_onnx
    from stars_edge.models import create_model, export_module

    pattern = Pattern.parse(pattern_name)
    bands = {m: DEFAULT_SPECS[m].bands for m in ("optical", "sar", "dsm")}
    torch.manual_seed(0)
    module = export_module(create_model("tiny", in_channels=bands, classes=CLASSES), pattern).eval()
    path = export_onnx(module, pattern, bands, tmp_path / f"{pattern}.onnx")
    tile = 96  # not the export's trace size: shapes must come from inference, not from the trace
    inputs = [torch.randn(2, bands[m], tile, tile) for m in pattern]
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        module(*inputs)
    count = count_flops(path, {m: [2, bands[m], tile, tile] for m in pattern})
    assert count.complete
    assert count.flops == counter.get_total_flops()


def test_flop_counter_refuses_an_unknown_input_name() -> None:
    with pytest.raises(BenchmarkError, match="no input named 'radar'"):
        count_flops(tiny_graph(Pattern.parse("sar"), False), {"radar": [1, 2, 32, 32]})


# ------------------------------------------------------------------------------------------------ statistics


def test_timing_stats_median_p90_and_spread() -> None:
    stats = TimingStats.from_seconds([0.010, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.007, 0.008, 0.009])
    assert stats.runs == 10
    assert stats.median_ms == pytest.approx(5.5)
    assert stats.p90_ms == pytest.approx(9.1)  # linear interpolation between 9 and 10 ms
    assert stats.min_ms == pytest.approx(1.0) and stats.max_ms == pytest.approx(10.0)
    assert stats.mean_ms == pytest.approx(5.5)
    assert stats.stdev_ms == pytest.approx(float(np.std(np.arange(1, 11), ddof=1)))


def test_timing_stats_reject_empty_or_negative_samples() -> None:
    with pytest.raises(BenchmarkError):
        TimingStats.from_seconds([])
    with pytest.raises(BenchmarkError):
        TimingStats.from_seconds([0.1, -0.1])


def test_time_callable_honours_warmup_and_run_counts() -> None:
    calls: list[int] = []
    stats = time_callable(lambda: calls.append(1), warmup=2, min_runs=5, max_runs=5, min_seconds=0.0)
    assert stats.runs == 5
    assert len(calls) == 7
    with pytest.raises(BenchmarkError):
        time_callable(lambda: None, min_runs=0)


def test_throughput_and_verdict() -> None:
    rates = throughput(ms_per_call=100.0, batch=4, tile=512)
    assert rates["ms_per_tile"] == pytest.approx(25.0)
    assert rates["tiles_per_s"] == pytest.approx(40.0)
    assert rates["mpx_per_s"] == pytest.approx(4 * 512 * 512 / 0.1 / 1e6)
    assert verdict(1.6, 1.5) == "PASS" and verdict(1.4, 1.5) == "MISS" and verdict(None, 1.5) == "N/A"
    assert verdict(0.05, 0.10, higher_is_better=False) == "PASS"
