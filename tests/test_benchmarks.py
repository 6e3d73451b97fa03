"""Benchmark harness: FLOP counting, timing statistics, the latency JSON schema, report rendering.

Nothing here asserts a speed: timings on a shared 2-core machine are noise. The tests check that the harness
counts exactly, summarises correctly, writes the documented schema and renders a report from it.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks import latency, report  # noqa: E402
from benchmarks.common import BenchmarkError, TimingStats, count_flops, throughput, time_callable, verdict  # noqa: E402
from stars_edge.io import sha256_file  # noqa: E402
from stars_edge.manifest import EngineEntry, Manifest, ModelInfo, engine_inputs, save_manifest  # noqa: E402
from stars_edge.modalities import ALL_PATTERNS, DEFAULT_SPECS, Pattern  # noqa: E402

CLASSES = 3
INT8_PATTERNS = ("optical+sar+dsm", "sar")
FULL = Pattern.parse("optical+sar+dsm")
WIDTH = 4


def _conv_weight(name: str, shape: tuple[int, ...], seed: int) -> Any:
    rng = np.random.default_rng(seed)
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.1).astype(np.float32), name)


def tiny_graph(pattern: Pattern, int8: bool) -> Any:
    """Per modality Conv3x3 -> Relu, summed, Conv1x1 -> logits; ``int8`` adds TensorRT-style Q/DQ."""
    nodes: list[Any] = []
    initializers: list[Any] = []
    inputs = []
    branch_outputs = []
    if int8:
        initializers += [
            numpy_helper.from_array(np.array(0.05, np.float32), "act_scale"),
            numpy_helper.from_array(np.array(0, np.int8), "zero"),
        ]

    def quantized(tensor: str, weight_name: str, weight: Any) -> tuple[str, str]:
        if not int8:
            initializers.append(weight)
            return tensor, weight_name
        array = numpy_helper.to_array(weight)
        scale = np.abs(array).reshape(array.shape[0], -1).max(axis=1) / 127.0
        q = np.clip(np.round(array / scale[:, None, None, None]), -127, 127).astype(np.int8)
        initializers.extend(
            [
                numpy_helper.from_array(q, weight_name + "_q"),
                numpy_helper.from_array(scale.astype(np.float32), weight_name + "_scale"),
                numpy_helper.from_array(np.zeros(array.shape[0], np.int8), weight_name + "_zero"),
            ]
        )
        nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [weight_name + "_q", weight_name + "_scale", weight_name + "_zero"],
                [weight_name + "_dq"],
                axis=0,
            )
        )
        nodes.append(helper.make_node("QuantizeLinear", [tensor, "act_scale", "zero"], [tensor + "_q"]))
        nodes.append(
            helper.make_node("DequantizeLinear", [tensor + "_q", "act_scale", "zero"], [tensor + "_dq"])
        )
        return tensor + "_dq", weight_name + "_dq"

    for seed, modality in enumerate(pattern):
        bands = DEFAULT_SPECS[modality].bands
        inputs.append(helper.make_tensor_value_info(modality, TensorProto.FLOAT, ["N", bands, "H", "W"]))
        data, weight = quantized(
            modality, f"w_{modality}", _conv_weight(f"w_{modality}", (WIDTH, bands, 3, 3), seed)
        )
        nodes.append(helper.make_node("Conv", [data, weight], [f"c_{modality}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c_{modality}"], [f"r_{modality}"]))
        branch_outputs.append(f"r_{modality}")
    nodes.append(helper.make_node("Sum", branch_outputs, ["fused"]))
    data, weight = quantized("fused", "w_head", _conv_weight("w_head", (CLASSES, WIDTH, 1, 1), 99))
    nodes.append(helper.make_node("Conv", [data, weight], ["logits"]))
    graph = helper.make_graph(
        nodes,
        "tiny",
        inputs,
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", CLASSES, "H", "W"])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def tiny_macs(pattern: Pattern, tile: int) -> int:
    """Hand count for ``tiny_graph``: per output pixel, WIDTH*bands*9 per branch plus CLASSES*WIDTH."""
    per_pixel = sum(WIDTH * DEFAULT_SPECS[m].bands * 9 for m in pattern) + CLASSES * WIDTH
    return per_pixel * tile * tile


@pytest.fixture(scope="module")
def engine_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest with fp32 engines for all 7 patterns (the runtime needs them all) and int8 ones for the
    full pattern and for ``sar``."""
    folder = tmp_path_factory.mktemp("engines")
    manifest = Manifest(
        model=ModelInfo(
            variant="tiny",
            method="stars",
            checkpoint_sha256="0" * 64,
            classes=CLASSES,
            class_names=("a", "b", "c"),
        ),
        modalities=dict(DEFAULT_SPECS),
        tile_size=64,
    )
    for pattern in ALL_PATTERNS:
        for precision in ("fp32", "int8") if pattern.name in INT8_PATTERNS else ("fp32",):
            name = f"{pattern.name}.{precision}.onnx"
            onnx.save(tiny_graph(pattern, precision == "int8"), str(folder / name))
            manifest.add(
                EngineEntry(
                    pattern=pattern,
                    precision=precision,
                    backend="onnxruntime",
                    path=name,
                    sha256=sha256_file(folder / name),
                    inputs=engine_inputs(pattern, DEFAULT_SPECS),
                    tile_size=64,
                )
            )
    save_manifest(manifest, folder)
    return folder


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


# ------------------------------------------------------------------------------------------------ latency.py


def test_quick_run_writes_the_documented_schema(engine_folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "latency_test.json"
    argv = [
        "--engines",
        str(engine_folder),
        "--tile",
        "64",
        "--batch",
        "1,2",
        "--threads",
        "1",
        "--quick",
        "--e2e-size",
        "0",
        "--patterns",
        "optical+sar+dsm,sar",
        "--json",
        str(out),
    ]
    assert latency.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["schema"] == latency.RESULT_SCHEMA
    machine = result["machine"]
    for key in ("cpu_model", "logical_cores", "threads", "versions", "matmul"):
        assert key in machine
    assert machine["threads"] == 1 and machine["matmul"]["gflops"] > 0
    assert isinstance(machine["loaded"], bool) and "load_average_1m_end" in machine
    assert isinstance(machine["cpu_flags"], list)
    rows = result["rows"]
    bf16 = bool({"avx512_bf16", "amx_bf16"} & set(machine["cpu_flags"]))
    patterns = [Pattern.parse(p) for p in INT8_PATTERNS]
    expected = {
        (p.name, "fp32", be, b) for p in patterns for b in (1, 2) for be in ("onnxruntime", "openvino")
    }
    expected |= {
        (p, "int8", be, b) for p in INT8_PATTERNS for b in (1, 2) for be in ("onnxruntime", "openvino")
    }
    if bf16:
        expected |= {(p.name, "bf16", "openvino", b) for p in patterns for b in (1, 2)}
    assert {(r["pattern"], r["precision"], r["backend"], r["batch"]) for r in rows} == expected
    for row in rows:
        assert row["tile"] == 64 and row["runs"] >= 3
        assert 0 < row["ms_median"] <= row["ms_p90"] + 1e-9
        assert row["mpx_per_s"] == pytest.approx(row["batch"] * 64 * 64 / row["ms_median"] * 1e3 / 1e6)
        pattern = Pattern.parse(row["pattern"])
        assert row["gflop_per_tile"] == pytest.approx(2 * tiny_macs(pattern, 64) / 1e9)
        assert row["gflops_fraction"] > 0
    assert result["e2e"]["runs"] == [] and result["skipped"] == []
    assert not result["gpu"]["available"] or result["gpu"]["devices"]
    if result["gpu"]["tensorrt_reason"] is None:
        assert result["gpu"]["tensorrt"]
    names = [t["target"] for t in result["targets"]]
    assert len(names) == 12 and all(t["verdict"] in ("PASS", "MISS", "N/A") for t in result["targets"])
    assert all(t["fair"] == (not machine["loaded"]) for t in result["targets"])
    by_name = {t["target"]: t for t in result["targets"]}
    assert by_name["ORT FP32 >= 1.5x PyTorch eager"]["measured"] is None  # no --checkpoint given
    assert by_name["best INT8 CPU engine >= 1.5x ORT FP32"]["measured"] > 0
    assert by_name["OpenVINO INT8 >= 1.3x OpenVINO FP32"]["measured"] > 0
    markdown = out.with_suffix(".md").read_text()
    assert "| `optical+sar+dsm` | fp32 | onnxruntime | cpu | 1 |" in markdown
    assert "| `optical+sar+dsm` | int8 | openvino (f32) | cpu | 1 |" in markdown
    assert "CPU flags:" in markdown and "interleaved" in markdown
    assert "## Targets (measured in this run)" in markdown and "## Where the time goes" in markdown


def test_a_run_started_on_a_loaded_machine_is_flagged() -> None:
    from benchmarks.common import is_loaded

    assert is_loaded(3.0, 2, 0.5) and not is_loaded(0.9, 2, 0.5) and not is_loaded(None, 2, 0.5)
    result = _latency_result("edge")
    result["machine"]["loaded"] = True
    result["machine"]["load_average_1m"] = 6.7
    result["targets"] = latency.evaluate_targets(result)
    assert all(not t["fair"] and "LOADED MACHINE" in t["detail"] for t in result["targets"])
    markdown = latency.render_markdown({**result, "engines": "e", "skipped": []})
    assert "WARNING: the machine was loaded" in markdown and "load average 6.7" in markdown


def test_quick_run_measures_the_streaming_runtime_end_to_end(engine_folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("rasterio")
    out = tmp_path / "latency_e2e.json"
    argv = [
        "--engines", str(engine_folder), "--tile", "64", "--batch", "1", "--threads", "1", "--quick",
        "--precision", "fp32", "--e2e-size", "128,256", "--overlap", "16", "--backends", "openvino",
        "--workdir", str(tmp_path / "work"), "--json", str(out),
    ]  # fmt: skip
    assert latency.main(argv) == 0
    e2e = json.loads(out.read_text())["e2e"]
    assert e2e["precision"] == "fp32" and e2e["tile"] == 64 and e2e["overlap"] == 16
    assert [run["size"] for run in e2e["runs"]] == [128, 256]
    for run in e2e["runs"]:
        assert run["tiles"] == run["summary"]["tiles"] > 0
        # a fully valid three-modality scene runs the full-pattern engine on every tile, once
        assert run["engine_runs"] == {"optical+sar+dsm": run["tiles"]}
        assert run["mpx_per_s"] == pytest.approx(run["size"] ** 2 / 1e6 / run["predict_s"])
        assert run["peak_rss_mib"] > 10 and run["sampled_peak_rss_mib"] > 10
        assert run["engine_busy_fraction"] > 0 and run["fraction_of_engine_only"] > 0
        assert set(run["stages"]) >= {"read", "inference", "write"}
    assert (tmp_path / "work" / "e2e_256" / "prediction.tif").is_file()


@pytest.fixture(scope="module")
def s2like_run(engine_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One quick run on the Sentinel-2-like scene (128 and 256 px, and the cloudy variant at 256 px): its
    JSON and its work folder, shared by the tests that read it."""
    pytest.importorskip("rasterio")
    folder = tmp_path_factory.mktemp("s2like")
    out = folder / "latency_s2.json"
    argv = [
        "--engines", str(engine_folder), "--tile", "64", "--batch", "1", "--threads", "1", "--quick",
        "--precision", "fp32", "--e2e-size", "256", "--e2e-scene", "s2like", "--overlap", "16",
        "--backends", "openvino", "--patterns", "optical+sar+dsm", "--gdal-threads", "2",
        "--workdir", str(folder / "work"), "--json", str(out),
    ]  # fmt: skip
    assert latency.main(argv) == 0
    return json.loads(out.read_text()), folder / "work"


def test_end_to_end_on_a_sentinel2_like_scene_decodes_compressed_uint16(
    s2like_run: tuple[dict[str, Any], Path],
) -> None:
    import rasterio

    result, work = s2like_run
    e2e = result["e2e"]
    assert e2e["scene"] == "s2like" and e2e["gdal_num_threads"] == "2" and e2e["backend"] == "openvino"
    assert e2e["scenes"] == ["s2like", "s2like_clouds"]
    assert [(r["scene"], r["size"]) for r in e2e["runs"]] == [
        ("s2like", 128), ("s2like", 256), ("s2like_clouds", 256)
    ]  # fmt: skip
    (run,) = [r for r in e2e["runs"] if r["size"] == 256 and r["scene"] == "s2like"]
    assert (
        run["tiles"] > 0 and run["engine_busy_fraction"] > 0 and set(run["stages"]) >= {"read", "inference"}
    )
    optical = next(work.glob("scene_256_seed0_s2like/optical*.tif"))
    with rasterio.open(optical) as dataset:
        assert dataset.dtypes[0] == "uint16" and dataset.scales[0] == pytest.approx(1e-4)
        structure = dataset.tags(ns="IMAGE_STRUCTURE")
        assert structure["COMPRESSION"] == "DEFLATE" and structure["PREDICTOR"] == "2"
        assert dataset.block_shapes[0] == (512, 512)
    # the cloudy variant: the same storage, and its cloud mask stored as a product's (uint8, DEFLATE)
    with rasterio.open(work / "scene_256_seed0_s2like_clouds" / "cloud_mask.tif") as dataset:
        clouds = dataset.read(1)
        assert dataset.dtypes[0] == "uint8" and dataset.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
    assert 0.02 < float((clouds > 0).mean()) < 0.3
    (cloudy,) = [r for r in e2e["runs"] if r["scene"] == "s2like_clouds"]
    # clouded optical pixels fall back to sar+dsm: a second pattern runs
    assert cloudy["summary"]["pattern_pixels"].get("sar+dsm", 0) > 0 and len(cloudy["engine_runs"]) >= 2


def _files_blocks(paths: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Block windows and bands of each raster, counted independently of the benchmark."""
    import rasterio

    counts = {}
    for name, path in paths.items():
        with rasterio.open(path) as dataset:
            counts[name] = (len(list(dataset.block_windows(1))), dataset.count)
    return counts


def test_floor_and_arrays_fractions_are_recorded_for_the_clean_and_the_cloudy_scene(
    s2like_run: tuple[dict[str, Any], Path],
) -> None:
    """Issue 21: ``floor_fraction`` = (engine-only CPU of the runs needed + decoding every block once) /
    cores / wall, and ``arrays_fraction`` = engine-only wall / ``predict_arrays`` wall, both recomputed here
    from their parts, so an omitted term (e.g. the decode time) fails the test."""
    import math

    result, work = s2like_run
    e2e = result["e2e"]
    assert set(e2e["floor_fraction"]) == set(e2e["arrays_fraction"]) == {"s2like", "s2like_clouds"}
    for scene in ("s2like", "s2like_clouds"):
        for key in ("floor_fraction", "arrays_fraction"):
            value = e2e[key][scene]
            assert math.isfinite(value) and 0 < value <= 1.5, (scene, key, value)
    cores = result["machine"]["usable_cores"]
    bands = sum(DEFAULT_SPECS[m].bands for m in ("optical", "sar", "dsm"))
    for run in e2e["runs"]:
        folder = work / f"scene_{run['size']}_seed0_{run['scene']}"
        inputs = {"optical": "optical.tif", "sar": "sar.tif", "dsm": "dsm.tif"}
        if run["scene"] == "s2like_clouds":
            inputs["cloud_mask"] = "cloud_mask.tif"
        # decoding covered every block window of every input, cloud mask included, once
        decode = run["decode_once"]
        expected = _files_blocks({k: str(folder / v) for k, v in inputs.items()})
        assert {k: (r["block_windows"], r["bands"]) for k, r in decode["rasters"].items()} == expected
        assert decode["blocks"] == sum(w * b for w, b in expected.values())
        assert decode["cpu_seconds"] > 0
        assert decode["cpu_seconds"] == pytest.approx(
            sum(r["cpu_seconds"] for r in decode["rasters"].values())
        )
        # engine-only time of exactly the engine runs the scene took, per pattern, by pixels at the run's tile
        engine = run["engine_only"]
        tile = e2e["tile"]
        assert set(engine["per_pattern"]) == set(run["engine_runs"])
        for name, part in engine["per_pattern"].items():
            assert part["runs"] == run["engine_runs"][name]
            assert part["pixels"] == run["summary"]["engine_pixels"][name]
            assert part["tile_equivalents"] == pytest.approx(part["pixels"] / tile**2)
            assert part["whole_tiles_only"] == (part["pixels"] == part["runs"] * tile**2)
            assert part["cpu_ms_per_tile"] > 0 and part["wall_ms_per_tile"] > 0 and part["calls_timed"] >= 10
            assert part["cpu_seconds"] == pytest.approx(
                part["tile_equivalents"] * part["cpu_ms_per_tile"] / 1e3
            )
            assert part["wall_seconds"] == pytest.approx(
                part["tile_equivalents"] * part["wall_ms_per_tile"] / 1e3
            )
        assert engine["cpu_seconds"] == pytest.approx(
            sum(p["cpu_seconds"] for p in engine["per_pattern"].values())
        )
        exact = all(p["whole_tiles_only"] for p in engine["per_pattern"].values())
        assert engine["shapes"].startswith("exact" if exact else "approximated by pixels")
        # the floor: both terms, over the usable cores, against the scene's wall time
        floor = run["floor"]
        assert floor["engine_cpu_seconds"] == pytest.approx(engine["cpu_seconds"])
        assert floor["decode_cpu_seconds"] == pytest.approx(decode["cpu_seconds"])
        assert floor["cores"] == cores
        assert floor["floor_seconds"] == pytest.approx(
            (engine["cpu_seconds"] + decode["cpu_seconds"]) / cores
        )
        assert run["floor_fraction"] == pytest.approx(floor["floor_seconds"] / run["predict_s"])
        # the arrays run: the same scene in memory, the same patterns, the same engine-only time
        arrays = run["arrays"]
        assert arrays["pattern_pixels_match_file_run"]
        assert arrays["pattern_pixels"] == run["summary"]["pattern_pixels"]
        assert arrays["wall_seconds"] > 0 and arrays["array_bytes"] == run["size"] ** 2 * bands * 4
        assert run["arrays_fraction"] == pytest.approx(engine["wall_seconds"] / arrays["wall_seconds"])
    largest = {r["scene"]: r for r in e2e["runs"] if r["size"] == 256}
    assert e2e["floor_fraction"] == {s: r["floor_fraction"] for s, r in largest.items()}
    assert e2e["arrays_fraction"] == {s: r["arrays_fraction"] for s, r in largest.items()}
    targets = {t["target"]: t for t in result["targets"]}
    for name in (
        "CPU floor >= 80 % of wall, clean S2-like scene",
        "CPU floor >= 80 % of wall, cloudy S2-like scene",
        "from arrays: engine-only >= 70 % of wall, clean S2-like scene",
    ):
        assert targets[name]["measured"] is not None and targets[name]["verdict"] in ("PASS", "MISS")
    assert targets["CPU floor >= 80 % of wall, cloudy S2-like scene"]["measured"] == pytest.approx(
        e2e["floor_fraction"]["s2like_clouds"]
    )
    markdown = (work.parent / "latency_s2.md").read_text()
    assert "| s2like_clouds | 256 |" in markdown and "decode-once CPU" in markdown


def test_decode_once_reads_every_block_window_once_and_the_floor_adds_both_terms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rasterio = pytest.importorskip("rasterio")
    from rasterio.io import DatasetReader

    from benchmarks.latency_floor import cpu_floor, decode_once

    path = tmp_path / "tiled.tif"
    profile = {
        "driver": "GTiff", "width": 160, "height": 96, "count": 3, "dtype": "uint16", "tiled": True,
        "blockxsize": 32, "blockysize": 32, "compress": "deflate", "predictor": 2, "crs": "EPSG:32631",
        "transform": rasterio.Affine(1.0, 0.0, 500000.0, 0.0, -1.0, 5000000.0),
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(np.arange(3 * 96 * 160, dtype=np.uint16).reshape(3, 96, 160))
    reads: list[tuple[int, int, int, int]] = []
    shapes: set[tuple[int, ...]] = set()
    original = DatasetReader.read

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        window = kwargs["window"]
        reads.append((window.row_off, window.col_off, window.height, window.width))
        data = original(self, *args, **kwargs)
        shapes.add(data.shape)
        return data

    monkeypatch.setattr(DatasetReader, "read", spy)
    decode = decode_once({"optical": path})
    # 3 x 5 block windows, each read once with all its bands
    assert len(reads) == len(set(reads)) == 15
    assert shapes == {(3, 32, 32)}  # every band of the block
    assert decode["rasters"]["optical"]["block_windows"] == 15 and decode["blocks"] == 45
    assert decode["rasters"]["optical"]["compression"] == "DEFLATE" and decode["cpu_seconds"] > 0
    floor = cpu_floor({"cpu_seconds": 3.0}, {"cpu_seconds": 1.0}, wall_seconds=4.0, cores=2)
    assert floor["floor_seconds"] == pytest.approx(2.0) and floor["floor_fraction"] == pytest.approx(0.5)


def test_an_engine_that_cannot_load_in_a_worker_is_skipped_with_its_reason(
    engine_folder: Path, tmp_path: Path
) -> None:
    import shutil

    from stars_edge.manifest import load_manifest

    folder = tmp_path / "engines"
    shutil.copytree(engine_folder, folder)
    manifest = load_manifest(folder)
    broken = folder / "sar.int8.onnx"
    broken.write_bytes(b"not an onnx file")
    manifest.add(dataclasses.replace(manifest.select("sar", "int8"), sha256=sha256_file(broken)))
    save_manifest(manifest, folder)
    plan = latency.BenchmarkPlan(
        engines=folder, tile=32, batches=(1,), threads=1, timing=latency.TimingPlan.quick(),
        patterns=(Pattern.parse("sar"),),
    )  # fmt: skip
    skipped: list[str] = []
    rows = latency.benchmark_cpu_fair(load_manifest(folder), plan, None, {}, lambda line: None, skipped)
    assert {(r["precision"], r["backend"]) for r in rows} >= {("fp32", "onnxruntime"), ("fp32", "openvino")}
    assert all(r["precision"] != "int8" for r in rows)
    assert len(skipped) == 2 and all(reason.startswith("sar int8/") for reason in skipped)


def test_end_to_end_on_a_scene_with_gaps_runs_several_engines(engine_folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("rasterio")
    out = tmp_path / "latency_gaps.json"
    argv = [
        "--engines", str(engine_folder), "--tile", "64", "--batch", "1", "--threads", "1", "--quick",
        "--precision", "fp32", "--e2e-size", "256,512", "--e2e-scene", "gaps", "--overlap", "16",
        "--backends", "openvino", "--e2e-arrays-max-size", "256",
        "--workdir", str(tmp_path / "work"), "--json", str(out),
    ]  # fmt: skip
    assert latency.main(argv) == 0
    e2e = json.loads(out.read_text())["e2e"]
    assert e2e["scene"] == "gaps" and e2e["scenes"] == ["gaps"]  # no cloudy variant of its own
    # every run has its floor; only the runs up to --e2e-arrays-max-size are repeated from arrays
    assert set(e2e["floor_fraction"]) == set(e2e["arrays_fraction"]) == {"gaps"}
    small, large = e2e["runs"]
    assert small["arrays_fraction"] > 0 and small["floor_fraction"] > 0 and large["floor_fraction"] > 0
    assert "arrays" not in large and "--e2e-arrays-max-size 256" in large["arrays_skipped"]
    assert e2e["arrays_fraction"]["gaps"] == small["arrays_fraction"]
    largest = e2e["runs"][-1]
    pixels = largest["summary"]["pattern_pixels"]
    # the SAR swath and the clouds leave pixels where only some modalities are valid
    assert pixels.get("optical+sar+dsm", 0) > 0 and len([p for p in pixels if p != "none"]) >= 2
    assert sum(largest["engine_runs"].values()) >= largest["tiles"]
    # every pattern the runtime ran has an engine-only row, so the busy fraction is computed
    assert largest["engine_busy_fraction"] > 0


def test_end_to_end_failure_is_one_line_naming_the_cause(
    engine_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("rasterio")
    argv = [
        "--engines", str(engine_folder), "--tile", "64", "--batch", "1", "--threads", "1", "--quick",
        "--precision", "fp32", "--e2e-size", "64", "--e2e-precision", "int8", "--overlap", "0",
        "--backends", "openvino",
        "--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "out.json"),
    ]  # fmt: skip
    assert latency.main(argv) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    # only two patterns have int8 engines; the runtime needs all seven for a three-modality scene
    assert error.startswith("error: end-to-end run on") and "has no engine for" in error
    assert not (tmp_path / "out.json").exists()


def test_an_engine_that_cannot_load_is_skipped_with_its_reason(engine_folder: Path, tmp_path: Path) -> None:
    import shutil

    from stars_edge.manifest import load_manifest

    folder = tmp_path / "engines"
    shutil.copytree(engine_folder, folder)
    manifest = load_manifest(folder)
    broken = folder / "sar.int8.onnx"
    broken.write_bytes(b"not an onnx file")
    manifest.add(dataclasses.replace(manifest.select("sar", "int8"), sha256=sha256_file(broken)))
    save_manifest(manifest, folder)
    plan = latency.BenchmarkPlan(
        engines=folder, tile=32, batches=(1,), threads=1, timing=latency.TimingPlan.quick(),
        patterns=(Pattern.parse("sar"),),
    )  # fmt: skip
    skipped: list[str] = []
    rows = latency.benchmark_onnxruntime(load_manifest(folder), plan, None, {}, skipped=skipped)
    assert [(r["pattern"], r["precision"]) for r in rows] == [("sar", "fp32")]
    assert len(skipped) == 1 and skipped[0].startswith("sar int8/onnxruntime (cpu):")
    assert "cannot be loaded by onnxruntime" in skipped[0]


@pytest.mark.filterwarnings("ignore:Specified provider")
def test_a_gpu_provider_onnxruntime_did_not_enable_gives_no_rows(engine_folder: Path) -> None:
    """ONNX Runtime silently runs on the next provider when one fails to load (e.g. the TensorRT provider
    against another TensorRT release): such a run must be skipped, not timed under the provider's label."""
    import onnxruntime

    from stars_edge.manifest import load_manifest

    if "TensorrtExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("this onnxruntime has the TensorRT provider")
    plan = latency.BenchmarkPlan(
        engines=engine_folder, tile=32, batches=(1,), threads=1, timing=latency.TimingPlan.quick(),
        patterns=(Pattern.parse("sar"),), precisions=("fp32",),
    )  # fmt: skip
    skipped: list[str] = []
    providers = ("TensorrtExecutionProvider", "CPUExecutionProvider")
    rows = latency.benchmark_onnxruntime(
        load_manifest(engine_folder), plan, None, {}, print, providers, "cuda", skipped,
        backend_name="onnxruntime-tensorrt",
    )  # fmt: skip
    assert rows == []
    assert skipped == [
        "sar fp32/onnxruntime (onnxruntime-tensorrt cuda): onnxruntime did not enable "
        "TensorrtExecutionProvider (active: CPUExecutionProvider)"
    ]


def test_pytorch_eager_rows_use_the_same_inputs_and_flops(engine_folder: Path) -> None:
    pytest.importorskip("torch")
    from stars_edge.manifest import load_manifest

    manifest = load_manifest(engine_folder)
    plan = latency.BenchmarkPlan(
        engines=engine_folder, tile=32, batches=(1,), threads=1, timing=latency.TimingPlan.quick()
    )
    rows = latency.benchmark_pytorch(
        _TinyTorch(), manifest, manifest.patterns, plan, matmul_gflops=100.0, flops_cache={}
    )
    assert [(r["pattern"], r["backend"], r["precision"]) for r in rows] == [
        (p.name, "pytorch", "fp32") for p in ALL_PATTERNS
    ]
    assert rows[5]["pattern"] == "sar"
    assert rows[5]["gflop_per_tile"] == pytest.approx(2 * tiny_macs(Pattern.parse("sar"), 32) / 1e9)


def test_targets_compare_rows_of_the_same_run() -> None:
    def row(precision: str, backend: str, ms: float, variant: str | None = None) -> dict[str, Any]:
        rates = throughput(ms, 1, 512)
        return {
            "pattern": "optical+sar+dsm",
            "precision": precision,
            "backend": backend,
            "variant": variant,
            "device": "cpu",
            "batch": 1,
            "tile": 512,
            "ms_median": ms,
            "gflops_fraction": 0.5,
            **rates,
        }

    def floor(engine_cpu: float, decode_cpu: float, wall: float) -> dict[str, Any]:
        seconds = (engine_cpu + decode_cpu) / 2
        return {
            "engine_cpu_seconds": engine_cpu,
            "decode_cpu_seconds": decode_cpu,
            "cores": 2,
            "floor_seconds": seconds,
            "floor_fraction": seconds / wall,
        }

    result: dict[str, Any] = {
        "tile": 512,
        "default_tile": 512,
        "rows": [
            row("fp32", "onnxruntime", 100.0),
            row("int8", "onnxruntime", 200.0),
            row("fp32", "pytorch", 250.0, "eager"),
            row("fp32", "pytorch", 160.0, "channels_last"),
            row("fp32", "openvino", 80.0, "f32"),
            row("int8", "openvino", 50.0, "f32"),
        ],
        "manifest_engines": [
            {"pattern": "sar", "precision": "int8", "backend": "onnxruntime", "accuracy": {"miou_drop": 0.7}},
            {"pattern": "sar", "precision": "fp32", "backend": "onnxruntime", "accuracy": {"miou_drop": 0.0}},
            {"pattern": "dsm", "precision": "fp16", "backend": "onnxruntime", "accuracy": {"miou_drop": 0.1}},
        ],
        "model": {"variant": "edge"},
        "machine": {"matmul": {"gflops": 100.0}},
        "e2e": {
            "scene": "s2like",
            "backend": "openvino",
            "runs": [
                {
                    "size": 4096,
                    "peak_rss_mib": 400.0,
                    "tiles": 100,
                    "engine_busy_fraction": 0.8,
                    "engine_runs": {"optical+sar+dsm": 100},
                },
                {
                    "scene": "s2like",
                    "size": 8192,
                    "peak_rss_mib": 420.0,
                    "tiles": 400,
                    "predict_s": 20.0,
                    "stages": {"read": 12.0, "inference": 6.0},
                    "engine_runs": {"optical+sar+dsm": 400},
                    "engine_busy_fraction": 0.55,
                    "fraction_of_engine_only": 0.4,
                    "floor": floor(12.0, 8.0, 20.0),
                    "floor_fraction": 0.5,
                    "arrays": {"engine_wall_seconds": 6.0, "wall_seconds": 8.0},
                    "arrays_fraction": 0.75,
                },
                {  # the cloudy variant: its own targets, never the clean scene's
                    "scene": "s2like_clouds",
                    "size": 8192,
                    "peak_rss_mib": 900.0,
                    "tiles": 400,
                    "predict_s": 10.0,
                    "stages": {"inference": 8.0},
                    "engine_runs": {"optical+sar+dsm": 400, "sar+dsm": 90},
                    "engine_busy_fraction": 0.1,
                    "floor": floor(13.0, 4.0, 10.0),
                    "floor_fraction": 0.85,
                },
            ],
        },
    }
    targets = {t["target"]: t for t in latency.evaluate_targets(result)}
    assert targets["best INT8 CPU engine >= 1.5x ORT FP32"]["measured"] == pytest.approx(2.0)  # OpenVINO int8
    assert targets["OpenVINO INT8 >= 1.3x OpenVINO FP32"]["measured"] == pytest.approx(1.6)
    # eager is compared in the fastest way a user can run it (channels-last here)
    assert targets["ORT FP32 >= 1.5x PyTorch eager"]["measured"] == pytest.approx(1.6)
    loss = targets["mIoU lost <= 0.5 per pattern, every precision"]
    assert (
        loss["measured"] == pytest.approx(0.7) and loss["verdict"] == "MISS" and "sar int8" in loss["detail"]
    )
    assert targets["FP32 achieved GFLOP/s >= 70 % of matmul rate"]["verdict"] == "MISS"
    assert targets["edge model full pattern INT8 >= 3 Mpx/s"]["measured"] == pytest.approx(
        512 * 512 / 0.05 / 1e6
    )
    e2e = targets["end-to-end >= 60 % of engine-only"]
    assert e2e["measured"] == pytest.approx(0.55) and e2e["verdict"] == "MISS"
    assert "bound: read 12.0 s of 20.0 s" in e2e["detail"]
    rss = targets["peak RSS flat (largest vs smallest scene within 10 %)"]
    assert rss["measured"] == pytest.approx(0.05) and rss["verdict"] == "PASS"
    clean = targets["CPU floor >= 80 % of wall, clean S2-like scene"]
    assert clean["measured"] == pytest.approx(0.5) and clean["verdict"] == "MISS"
    assert (
        "8192 px: floor 10.00 s = (engine-only CPU 12.00 s + decode-once CPU 8.00 s) / 2 cores"
        in clean["detail"]
    )
    assert "vs wall 20.00 s; bound: read 12.0 s" in clean["detail"]
    cloudy = targets["CPU floor >= 80 % of wall, cloudy S2-like scene"]
    assert cloudy["measured"] == pytest.approx(0.85) and cloudy["verdict"] == "PASS"
    arrays = targets["from arrays: engine-only >= 70 % of wall, clean S2-like scene"]
    assert arrays["measured"] == pytest.approx(0.75) and arrays["verdict"] == "PASS"
    assert "engine-only 6.00 s / predict_arrays 8.00 s" in arrays["detail"]
    at_default = targets["best INT8 >= 1.5x ORT FP32 at the runtime's default tile"]
    assert at_default["measured"] == pytest.approx(2.0) and at_default["verdict"] == "PASS"
    # rows timed at another tile than the runtime's default say so instead of answering
    result["default_tile"] = 256
    targets = {t["target"]: t for t in latency.evaluate_targets(result)}
    at_default = targets["best INT8 >= 1.5x ORT FP32 at the runtime's default tile"]
    assert at_default["verdict"] == "N/A" and "rerun with --tile 256" in at_default["detail"]
    # without an S2-like end-to-end run the issue-21 targets are not measured
    result["e2e"]["runs"] = result["e2e"]["runs"][:1]
    targets = {t["target"]: t for t in latency.evaluate_targets(result)}
    for name in (
        "CPU floor >= 80 % of wall, cloudy S2-like scene",
        "from arrays: engine-only >= 70 % of wall, clean S2-like scene",
    ):
        assert targets[name]["verdict"] == "N/A" and "--e2e-scene s2like" in targets[name]["detail"]


def test_parse_plan_validates_options(tmp_path: Path) -> None:
    plan = latency.parse_plan(["--engines", str(tmp_path), "--e2e-size", "2048", "--batch", "1,8"])
    assert plan.e2e_sizes == (1024, 2048) and plan.batches == (1, 8)
    with pytest.raises(BenchmarkError, match="multiples of 32"):
        latency.parse_plan(["--engines", str(tmp_path), "--tile", "100"])
    assert latency.parse_plan(["--engines", str(tmp_path)]).e2e_arrays_max_size == 4096
    with pytest.raises(BenchmarkError, match="--e2e-arrays-max-size"):
        latency.parse_plan(["--engines", str(tmp_path), "--e2e-arrays-max-size", "-1"])
    with pytest.raises(BenchmarkError, match="--checkpoint"):
        latency.parse_plan(["--engines", str(tmp_path), "--checkpoint", str(tmp_path / "missing.pt")])


def test_main_reports_a_missing_manifest_as_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert latency.main(["--engines", str(tmp_path / "nowhere"), "--quick", "--e2e-size", "0"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.startswith("error:") and "\n" not in error


# ------------------------------------------------------------------------------------------------ report.py


def _latency_result(variant: str) -> dict[str, Any]:
    rows = []
    for pattern, precision, ms in (
        ("optical+sar+dsm", "fp32", 80.0),
        ("optical+sar+dsm", "int8", 40.0),
        ("sar", "fp32", 30.0),
    ):
        rows.append(
            {
                "pattern": pattern,
                "precision": precision,
                "backend": "onnxruntime",
                "device": "cpu",
                "batch": 1,
                "tile": 512,
                "ms_median": ms,
                "ms_p90": ms * 1.1,
                "achieved_gflops": 50.0,
                "gflops_fraction": 0.25,
                **throughput(ms, 1, 512),
            }
        )
    result: dict[str, Any] = {
        "schema": latency.RESULT_SCHEMA,
        "created": "2026-01-01T00:00:00+00:00",
        "quick": False,
        "tile": 512,
        "batches": [1],
        "timing": {"warmup": 3, "min_runs": 10},
        "model": {"variant": variant, "method": "stars"},
        "machine": {
            "cpu_model": "Test CPU",
            "threads": 2,
            "usable_cores": 2,
            "cpu_flags": ["avx2"],
            "matmul": {"gflops": 200.0, "backend": "numpy", "size": 2048, "threads": 2},
            "versions": {},
        },
        "rows": rows,
        "e2e": {
            "precision": "int8",
            "backend": "onnxruntime",
            "tile": 512,
            "overlap": 64,
            "threads": 2,
            "runs": [
                {
                    "size": 4096,
                    "tiles": 100,
                    "predict_s": 10.0,
                    "mpx_per_s": 1.68,
                    "peak_rss_mib": 300.0,
                    "engine_runs": {"optical+sar+dsm": 100},
                },
            ],
        },
        "gpu": {
            "available": False,
            "reason": "no NVIDIA GPU (nvidia-smi not found)",
            "tensorrt_reason": "the tensorrt package is not installed",
        },
    }
    result["targets"] = latency.evaluate_targets(result)
    return result


def test_report_renders_latency_and_accuracy_side_by_side(tmp_path: Path) -> None:
    results = tmp_path / "results"
    results.mkdir()
    (results / "latency_cpu.json").write_text(json.dumps(_latency_result("edge")))
    accuracy_rows = [
        {
            "method": method,
            "pattern": pattern,
            "miou": miou,
            "mf1": miou + 5,
            "seed": seed,
            "steps": 100,
            "experiment": "synthetic",
            "per_class_iou": {"background": miou + 10, "car": miou - 10},
        }
        for method, base in (("stars", 60.0), ("zero_fill", 50.0))
        for pattern in ("optical+sar+dsm", "sar")
        for seed, miou in ((0, base), (1, base + 2.0))
    ]
    (results / "accuracy_edge.json").write_text(json.dumps({"variant": "edge", "rows": accuracy_rows}))
    (results / "notes.json").write_text(json.dumps({"hello": 1}))
    placement = {
        "model": "edge", "tile": 512, "threads": 2, "repeats": 7, "onnxruntime": "1.0", "torch": "2.0",
        "geomean_int8_speedup": {"conv-only": 1.5}, "geomean_ort_vs_eager": 1.2,
        "fastest_legal_placement": "conv-only", "default_placement": "conv-only",
        "patterns": [
            {"pattern": p, "int8": {"conv-only": {"miou_lost": lost, "agreement": 99.0}}}
            for p, lost in (("sar", 0.5), ("dsm", 1.5))
        ],
    }  # fmt: skip
    (results / "int8_placement.json").write_text(json.dumps(placement))
    out = tmp_path / "REPORT.md"
    assert (
        report.main([*map(str, sorted(results.glob("*.json"))), "--out", str(out), "--plots", str(results)])
        == 0
    )
    text = out.read_text()
    assert "## Latency: `latency_cpu.json`" in text
    assert "| best INT8 CPU engine >= 1.5x ORT FP32 | PASS (2.000 x) |" in text  # 80 ms FP32 vs 40 ms INT8
    assert "| `optical+sar+dsm` | int8 | onnxruntime | cpu | 1 | 40.00 |" in text
    assert "TensorRT not available: the tensorrt package is not installed" in text
    # mean and sample std over the two seeds: 60 and 62 -> 61.00 ± 1.41
    assert "## Accuracy: `accuracy_edge.json`" in text
    assert "| stars | 61.00 ± 1.41 (n=2) | 61.00 ± 1.41 (n=2) |" in text
    assert "| zero_fill | 51.00 ± 1.41 (n=2) | 51.00 ± 1.41 (n=2) |" in text
    # per-class IoU on the widest pattern in the file, mean over seeds
    assert "| stars | 71.00 | 51.00 |" in text
    # accuracy vs speed: the edge variant's STARS full-pattern mIoU against its fastest full-pattern engine
    fastest = 512 * 512 / 0.040 / 1e6
    assert f"| edge | 100 | 2 | 61.00 | {fastest:.2f} | int8 | onnxruntime | 1 |" in text
    assert "notes.json: not a known benchmark result" in text
    assert "| conv-only | 1.50x | 1.00 | 99.00 |" in text
    for name in ("latency_cpu.png", "accuracy_edge.png", "accuracy_vs_speed.png"):
        assert (results / name).stat().st_size > 1000
        assert f"({'results/' + name})" in text


def test_accuracy_groups_keep_configurations_apart_and_average_seeds() -> None:
    rows = [
        {"method": "stars", "pattern": "sar", "miou": 50.0 + seed, "seed": seed, "lambda_tr": lam}
        for lam in (0.1, 1.0)
        for seed in (0, 1)
    ] + [{"method": "stars_no_stopgrad", "pattern": "sar", "miou": 40.0, "seed": 0, "lambda_tr": 1.0}]
    groups = report.accuracy_groups(rows)
    assert list(groups) == [
        "stars, lambda_tr=0.1",
        "stars, lambda_tr=1.0",
        "stars_no_stopgrad, lambda_tr=1.0",
    ]
    assert [len(g) for g in groups.values()] == [2, 2, 1]


def test_report_refuses_when_there_is_nothing_to_render(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report.main(["--out", str(tmp_path / "R.md"), str(tmp_path / "missing.json")]) == 1
    assert "no benchmark results" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ GPU section


def test_gpu_info_says_why_tensorrt_cannot_run() -> None:
    from runtime.backends import TensorRTBackend

    info = latency.gpu_info()
    if TensorRTBackend.is_available():
        assert info["tensorrt_reason"] is None and info["tensorrt"]
    else:
        assert isinstance(info["tensorrt_reason"], str) and info["tensorrt_reason"]
    assert info["available"] == bool(info["devices"])
    if not info["available"]:
        assert info["reason"].startswith("no NVIDIA GPU")


class _TinyTorch:
    """Factory of the torch twin of ``tiny_graph`` (imported lazily: torch is optional for these tests)."""

    def __call__(self, pattern: Pattern) -> Any:
        import torch

        class Tiny(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.branches = torch.nn.ModuleList(
                    torch.nn.Conv2d(DEFAULT_SPECS[m].bands, WIDTH, 3, padding=1, bias=False) for m in pattern
                )
                self.head = torch.nn.Conv2d(WIDTH, CLASSES, 1, bias=False)

            def forward(self, *inputs: Any) -> Any:
                return self.head(
                    sum(torch.relu(conv(x)) for conv, x in zip(self.branches, inputs, strict=True))
                )

        return Tiny()


@pytest.mark.gpu
def test_pytorch_eager_on_cuda_is_timed_with_synchronisation(engine_folder: Path) -> None:
    from stars_edge.manifest import load_manifest

    manifest = load_manifest(engine_folder)
    plan = latency.BenchmarkPlan(
        engines=engine_folder, tile=64, batches=(1, 2), threads=1, timing=latency.TimingPlan.quick()
    )
    rows = latency.benchmark_pytorch(_TinyTorch(), manifest, (FULL,), plan, None, {}, device="cuda")
    assert [(r["device"], r["batch"]) for r in rows] == [("cuda", 1), ("cuda", 2)]
    assert all(r["gflops_fraction"] is None and r["ms_median"] > 0 for r in rows)


@pytest.mark.tensorrt
def test_tensorrt_engines_are_timed_through_the_runtime_backend(engine_folder: Path, tmp_path: Path) -> None:
    import shutil

    from export.tensorrt_build import build_tensorrt_engine, engine_file_name, tensorrt_status
    from stars_edge.manifest import load_manifest

    target, reason = tensorrt_status()
    assert target is not None, reason
    folder = tmp_path / "engines"
    shutil.copytree(engine_folder, folder)
    manifest = load_manifest(folder)
    name = engine_file_name(FULL, "fp32", target)
    bands = {m: DEFAULT_SPECS[m].bands for m in FULL}
    build_tensorrt_engine(folder / f"{FULL}.fp32.onnx", folder / name, bands, 64, folder / "cache.bin")
    manifest.add(
        EngineEntry(
            pattern=FULL, precision="fp32", backend="tensorrt", path=name, sha256=sha256_file(folder / name),
            inputs=engine_inputs(FULL, DEFAULT_SPECS), tile_size=64, tensorrt_version=target.version,
            compute_capability=target.compute_capability,
        )
    )  # fmt: skip
    save_manifest(manifest, folder)
    plan = latency.BenchmarkPlan(
        engines=folder, tile=128, batches=(1, 2), threads=1, timing=latency.TimingPlan.quick()
    )
    info = latency.gpu_info()
    rows = [
        r for r in latency.benchmark_gpu(load_manifest(folder), plan, {}, info) if r["backend"] == "tensorrt"
    ]
    # the engine's profile ends at its 64 px build tile, so it is timed there, not at the requested 128
    assert [(r["pattern"], r["tile"], r["batch"]) for r in rows] == [(FULL.name, 64, 1), (FULL.name, 64, 2)]
    assert rows[0]["gflop_per_tile"] == pytest.approx(2 * tiny_macs(FULL, 64) / 1e9)
