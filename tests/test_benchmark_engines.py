"""Benchmark harness: the engine latency rows of ``benchmarks/latency.py`` (the documented JSON schema, the
fair CPU workers, in-process ONNX Runtime and PyTorch rows, what is skipped and why), its command line, and
its GPU section.

Nothing here asserts a speed: timings on a shared 2-core machine are noise.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import pytest

onnx = pytest.importorskip("onnx")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from latency_models import FULL, INT8_PATTERNS, TinyTorch, tiny_macs, write_engine_folder  # noqa: E402

from benchmarks import latency  # noqa: E402
from benchmarks.common import BenchmarkError  # noqa: E402
from stars_edge.io import sha256_file  # noqa: E402
from stars_edge.manifest import EngineEntry, engine_inputs, save_manifest  # noqa: E402
from stars_edge.modalities import ALL_PATTERNS, DEFAULT_SPECS, Pattern  # noqa: E402


@pytest.fixture(scope="module")
def engine_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest with fp32 engines for all 7 patterns (the runtime needs them all) and int8 ones for the
    full pattern and for ``sar`` (``latency_models.write_engine_folder``)."""
    return write_engine_folder(tmp_path_factory.mktemp("engines"))


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
    for key in ("cpu_model", "logical_cores", "threads", "versions", "runtime_kernels", "matmul"):
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
        TinyTorch(), manifest, manifest.patterns, plan, matmul_gflops=100.0, flops_cache={}
    )
    assert [(r["pattern"], r["backend"], r["precision"]) for r in rows] == [
        (p.name, "pytorch", "fp32") for p in ALL_PATTERNS
    ]
    assert rows[5]["pattern"] == "sar"
    assert rows[5]["gflop_per_tile"] == pytest.approx(2 * tiny_macs(Pattern.parse("sar"), 32) / 1e9)


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


@pytest.mark.gpu
def test_pytorch_eager_on_cuda_is_timed_with_synchronisation(engine_folder: Path) -> None:
    from stars_edge.manifest import load_manifest

    manifest = load_manifest(engine_folder)
    plan = latency.BenchmarkPlan(
        engines=engine_folder, tile=64, batches=(1, 2), threads=1, timing=latency.TimingPlan.quick()
    )
    rows = latency.benchmark_pytorch(TinyTorch(), manifest, (FULL,), plan, None, {}, device="cuda")
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
