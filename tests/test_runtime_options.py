"""Issue 20's smaller defects, through the command line and the library: sizes of 0 or below refused (not
taken for "default"), library warnings as one plain line, a missing precision named for the backend that was
chosen, and a run summary that says plainly which backend, device and engine precision ran."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from affine import Affine
from test_runtime_support import build_engines, make_physical, random_weights, write_raster

from runtime import Predictor
from runtime.backends import OpenVINOBackend, resolve_backend_name
from runtime.backends.onnxruntime_backend import _describe_device
from stars_edge.cli import main
from stars_edge.errors import ConfigError, ManifestError
from stars_edge.modalities import Pattern

ROOT = Path(__file__).resolve().parents[1]
TRANSFORM = Affine(0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0)
needs_openvino = pytest.mark.skipif(not OpenVINOBackend.is_available(), reason="openvino is not installed")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32 and int8 ONNX engines (tile 64), an optical raster in reflectance and the same in uint16 DN."""
    folder = tmp_path_factory.mktemp("options")
    optical = make_physical((64, 64), seed=3)["optical"]
    dn = (optical.clip(0, None) * 10000).astype(np.uint16)
    return {
        "engines": build_engines(
            folder / "engines", random_weights(classes=3), classes=3, precisions=("fp32", "int8")
        ),
        "optical": write_raster(folder / "optical.tif", optical, TRANSFORM),
        "dn": write_raster(folder / "dn.tif", dn, TRANSFORM),
        "folder": folder,
    }


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return int(exit_info.value.code or 0)


def _one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    error = capsys.readouterr().err.strip()
    assert error.startswith("error: ") and "\n" not in error, error
    return error


# --- 1. sizes of 0 or below ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--tile", "0"], "--tile must be a positive multiple of 32, got 0"),
        (["--tile", "-64"], "--tile must be a positive multiple of 32, got -64"),
        (["--overlap", "-1"], "--overlap must be between 0 and half the tile (32), got -1"),
        (["--overlap", "33"], "--overlap must be between 0 and half the tile (32), got 33"),
        (["--tile", "32", "--overlap", "17"], "--overlap must be between 0 and half the tile (16), got 17"),
        (["--batch", "0"], "--batch must be at least 1, got 0"),
        (["--batch", "-2"], "--batch must be at least 1, got -2"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
    ],
)
def test_run_refuses_sizes_of_zero_or_below(
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    expected: str,
) -> None:
    out = tmp_path / "out" / "p.tif"
    argv = ["run", "--engines", str(setup["engines"]), "--optical", str(setup["optical"]), "--out", str(out)]
    assert _main([*argv, "--backend", "onnxruntime", "--no-progress", *options]) == 1
    assert _one_error_line(capsys) == f"error: {expected}"
    assert not out.parent.exists()


def test_library_calls_refuse_a_zero_tile_too(setup: dict[str, Path]) -> None:
    predictor = Predictor(setup["engines"], backend="onnxruntime", threads=1)
    optical = make_physical((64, 64))["optical"]
    with pytest.raises(ConfigError, match="--tile must be a positive multiple of 32, got 0"):
        predictor.predict_arrays({"optical": optical}, tile=0)
    with pytest.raises(ConfigError, match="--tile must be a positive multiple of 32, got 0"):
        predictor.measure_latency(tile=0, runs=1, warmup=0)
    classes, _ = predictor.predict_arrays({"optical": optical}, tile=None)  # None is the manifest's tile
    assert classes.shape == (64, 64)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (["--tile", "0"], "--tile must be a positive multiple of 32, got 0"),
        (["--tile", "-32"], "--tile must be a positive multiple of 32, got -32"),
        (["--overlap", "-1"], "--overlap must be at least 0, got -1"),
        # no --tile: the manifest's 64 px, so at most 32 px of overlap; refused before any scene runs
        (["--overlap", "40"], "--overlap must be between 0 and half the tile (32), got 40"),
        (["--batch", "0"], "--batch must be at least 1, got 0"),
        (["--threads", "0"], "--threads must be at least 1, got 0"),
        (["--workers", "0"], "--workers must be at least 1, got 0"),
        (["--threads-per-worker", "-1"], "--threads-per-worker must be at least 1, got -1"),
    ],
)
def test_run_batch_refuses_sizes_of_zero_or_below(
    setup: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    options: list[str],
    expected: str,
) -> None:
    scenes = tmp_path / "scenes.csv"
    scenes.write_text(f"id,optical\na,{setup['optical']}\n")
    out = tmp_path / "out"
    argv = ["run-batch", "--engines", str(setup["engines"]), "--scenes", str(scenes), "--out-dir", str(out)]
    assert _main([*argv, "--no-progress", *options]) == 1
    assert _one_error_line(capsys) == f"error: {expected}"
    assert not out.exists()  # refused before the output folder or a cluster


# --- 2. library warnings at the command line -----------------------------------------------------------


def test_allow_out_of_range_warnings_are_one_plain_line_each(setup: dict[str, Path], tmp_path: Path) -> None:
    """A real ``stars-edge run`` in a fresh interpreter (default warning filters): the out-of-range
    warnings of a uint16 DN optical file are ``warning: ...`` lines, no file, line number or source line."""
    out = tmp_path / "p.tif"
    done = subprocess.run(
        [sys.executable, "-m", "stars_edge", "run", "--engines", str(setup["engines"]),
         "--optical", str(setup["dn"]), "--out", str(out), "--allow-out-of-range",
         "--backend", "onnxruntime", "--threads", "1", "--no-progress"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    warned = [line for line in lines if str(setup["dn"]) in line]
    assert warned, done.stderr  # the DN file was warned about ...
    assert all(line.startswith("warning: ") for line in lines), done.stderr  # ... one plain line each
    assert "UserWarning" not in done.stderr and not re.search(r"\.py:\d+", done.stderr)
    assert out.exists()


# --- 3. a missing precision, named for the backend that runs -------------------------------------------


def test_missing_precision_names_the_chosen_backend_and_what_exists(setup: dict[str, Path]) -> None:
    predictor = Predictor(setup["engines"], backend="auto", precision="fp16")
    chosen = resolve_backend_name("auto", predictor.manifest, (Pattern.parse("optical"),), "fp16")
    with pytest.raises(ManifestError) as error:
        predictor.predict_arrays({"optical": make_physical((64, 64))["optical"]})
    message = str(error.value)
    assert "\n" not in message
    assert f"has no engine for optical in fp16 to run on {chosen} (chosen by --backend auto);" in message
    assert "fp32, int8 ONNX files (for onnxruntime and openvino) and no TensorRT engines" in message
    assert "run with --precision fp32 or int8" in message
    assert "`stars-edge build-engines --precision fp32,fp16`" in message


@needs_openvino
def test_missing_precision_on_openvino_does_not_blame_onnxruntime(
    setup: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "--engines", str(setup["engines"]), "--optical", str(setup["optical"])]
    out = setup["folder"] / "fp16" / "p.tif"
    code = _main([*argv, "--out", str(out), "--backend", "openvino", "--precision", "fp16", "--no-progress"])
    error = _one_error_line(capsys)
    assert code == 1
    assert "has no engine for optical in fp16 to run on openvino;" in error
    assert "on onnxruntime" not in error and "--precision fp32 or int8" in error


def test_a_precision_held_for_some_patterns_lists_them(setup: dict[str, Path], tmp_path: Path) -> None:
    engines = build_engines(
        tmp_path / "engines", random_weights(classes=3), classes=3, precisions=("fp32", "fp16")
    )
    manifest = json.loads((engines / "manifest.json").read_text())
    manifest["engines"] = [
        e for e in manifest["engines"] if e["precision"] == "fp32" or e["pattern"] in ("sar", "dsm")
    ]
    (engines / "manifest.json").write_text(json.dumps(manifest))
    predictor = Predictor(engines, backend="onnxruntime", precision="fp16")
    with pytest.raises(ManifestError) as error:
        predictor.predict_arrays({"optical": make_physical((64, 64))["optical"]})
    message = str(error.value)
    assert "has no engine for optical in fp16 to run on onnxruntime;" in message
    assert "its fp16 ONNX files (for onnxruntime and openvino) cover only sar, dsm" in message
    assert "run with --precision fp32" in message


# --- 4. the run summary: backend, device, engine precision ---------------------------------------------


@pytest.mark.parametrize(
    "backend",
    ["onnxruntime", pytest.param("openvino", marks=needs_openvino)],
)
def test_summary_says_which_backend_device_and_precision_ran(
    setup: dict[str, Path], tmp_path: Path, backend: str
) -> None:
    predictor = Predictor(setup["engines"], backend=backend, precision="int8", threads=1)
    summary = predictor.predict_scene(optical=setup["optical"], out=tmp_path / "p.tif", progress=False)
    first = summary.format().splitlines()[0]
    device = {
        "onnxruntime": r"with onnxruntime [\d.]+ on CPU",
        "openvino": r"with openvino [\d.]+ on CPU \(float layers in f32\)",
    }[backend]
    # threads=1: one stream
    expected = device + r", int8 engines, 1 call\(s\) in flight, (c|numba|numpy) kernels$"
    assert re.search(expected, first), first
    assert summary.backend == backend and summary.precision == "int8"


def test_onnxruntime_gpu_providers_are_described_plainly() -> None:
    providers = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
    assert _describe_device("1.20.1", providers, 1) == (
        "onnxruntime 1.20.1 on GPU 1 (TensorRT, CUDA execution providers; CPU for the rest)"
    )
    assert _describe_device("1.20.1", ("CUDAExecutionProvider",), 0) == (
        "onnxruntime 1.20.1 on GPU 0 (CUDA execution provider)"
    )
    assert _describe_device("1.20.1", ("CPUExecutionProvider",), 0) == "onnxruntime 1.20.1 on CPU"


@needs_openvino
def test_the_default_batch_follows_the_backend(setup: dict[str, Path], tmp_path: Path) -> None:
    """Without ``batch``, OpenVINO runs tiles up to four at a time (faster there, the same class maps; a row
    of 5 in groups of 3 and 2, ``row_groups``) and ONNX Runtime one at a time; an explicit batch wins. The
    calls' shapes say which ran."""
    optical = make_physical((64, 256), seed=9)["optical"]  # a row of 5 tiles of 64 px (overlap 16)
    raster = write_raster(tmp_path / "wide.tif", optical, TRANSFORM)
    maps, batches = {}, {}
    for name, backend, batch in (
        ("ov", "openvino", None),
        ("ov1", "openvino", 1),
        ("ort", "onnxruntime", None),
    ):
        with Predictor(setup["engines"], backend=backend, threads=1) as predictor:
            summary = predictor.predict_scene(
                optical=raster, out=tmp_path / f"{name}.tif", tile=64, batch=batch, progress=False
            )
        batches[name] = {int(shape.split("x")[0]) for shape in summary.engine_shapes["optical"]}
        maps[name] = _read_classes(tmp_path / f"{name}.tif")
    assert batches["ov"] == {3, 2} and batches["ov1"] == {1} and batches["ort"] == {1}
    np.testing.assert_array_equal(maps["ov"], maps["ov1"])


def _read_classes(path: Path) -> np.ndarray:
    import rasterio

    with rasterio.open(path) as dataset:
        return dataset.read(1)
