"""``stars-edge run-batch`` on real Dask: local clusters of 2 worker processes, tiny real engines, scenes.

Four scenes with different modality subsets, one of them corrupt (``batch_scenes.py``). The good outputs must
equal single-scene ``Predictor.predict_scene`` outputs byte for byte; the corrupt one fails alone;
``--resume`` skips verified scenes and reruns altered ones; COG outputs; a worker without torch; the
``benchmarks/batch.py`` smoke run. Interrupted and killed runs are in ``test_run_batch_recovery.py``, scene
lists and other inputs in ``test_run_batch_inputs.py``.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import rasterio
from batch_scenes import (
    FULL_PIXELS,
    OVERLAP,
    TILE,
    assert_same_outputs,
    batch_on_cluster,
    local_cluster,
    main_exit_code,
    statuses,
    write_engines,
    write_reference,
    write_scenes,
)
from conftest import NO_TORCH_PRELUDE

from runtime.batch import read_scenes
from runtime.batch.summary import CSV_COLUMNS


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_engines(tmp_path_factory.mktemp("engines"))


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``scenes.csv`` (relative paths, empty cells) and its rasters: three modality subsets and a corrupt
    optical file."""
    return write_scenes(tmp_path_factory.mktemp("scenes"))


@pytest.fixture(scope="module")
def reference(engines: Path, scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The good scenes run one by one with ``Predictor.predict_scene``, under the batch's file names."""
    return write_reference(engines, scenes, tmp_path_factory.mktemp("reference"))


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """One local cluster (2 worker processes, 1 task thread each) shared by the Python-API tests."""
    with local_cluster() as local:
        yield local


@pytest.fixture(scope="module")
def cli_run(
    engines: Path, scenes: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The issue's run: ``stars-edge run-batch --workers 2`` (its own local cluster) over the four scenes."""
    out = tmp_path_factory.mktemp("batch")
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main_exit_code(
            [
                "run-batch",
                "--engines",
                str(engines),
                "--scenes",
                str(scenes),
                "--out-dir",
                str(out),
                "--workers",
                "2",
                "--threads",
                "1",
                "--streams",  # two calls in flight per scene: the outputs stay those of one at a time
                "2",
                "--tile",
                str(TILE),
                "--overlap",
                str(OVERLAP),
                "--backend",
                "onnxruntime",
                "--dashboard-address",
                ":0",
                "--no-progress",
            ]
        )
    yield {"code": code, "out": out, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def test_cli_batch_equals_single_scene_runs_and_fails_the_corrupt_scene(
    cli_run: dict[str, Any], reference: Path
) -> None:
    out = cli_run["out"]
    assert cli_run["code"] == 1
    assert_same_outputs(out, reference)
    assert not (out / "broken.tif").exists() and not list(out.glob(".*partial"))
    with (out / "summary.csv").open() as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["full", "sar_only", "broken", "optical_dsm"]  # the list's order
    assert {k: r["status"] for k, r in rows.items()} == {
        "full": "done",
        "sar_only": "done",
        "broken": "failed",
        "optical_dsm": "done",
    }
    assert "broken.tif" in rows["broken"]["error"] and "\n" not in rows["broken"]["error"]
    assert rows["full"]["pixels"] == str(FULL_PIXELS) and float(rows["full"]["mpx_per_s"]) > 0
    assert int(rows["sar_only"]["pixels_sar"]) == 40 * 50
    pattern_pixels = sum(int(rows["full"][f"pixels_{p}"]) for p in ("optical+sar+dsm", "optical+dsm"))
    assert pattern_pixels == FULL_PIXELS
    assert list(rows["full"]) == list(CSV_COLUMNS)
    assert "broken: failed" in cli_run["stderr"] and "Dask dashboard: http" in cli_run["stderr"]
    assert "3 done, 0 skipped, 1 failed" in cli_run["stdout"]


def test_each_worker_process_loads_the_engines_once(cli_run: dict[str, Any]) -> None:
    summary = json.loads((cli_run["out"] / "summary.json").read_text())
    scenes = summary["scenes"]
    workers = {s["worker"] for s in scenes}
    assert 1 <= len(workers) <= 2 and summary["settings"]["resume"] is False
    assert summary["settings"]["streams"] == 2
    for worker in workers:
        assert sum(s["engines_loaded"] for s in scenes if s["worker"] == worker) == 1, worker
    assert summary["totals"]["done"] == 3 and summary["totals"]["failed"] == 1


def test_streams_reach_each_scene_s_predictor(engines: Path) -> None:
    """``--streams`` and ``--readers`` are part of the settings every task gets, and of the key its
    predictor is pooled under."""
    from runtime.batch.task import BatchSettings, borrow_predictor
    from runtime.kernels import KERNELS_ENV, c_built, kernels_choice, numba_installed
    from stars_edge.io import sha256_file
    from stars_edge.manifest import manifest_file

    digest = sha256_file(manifest_file(engines))
    settings = BatchSettings(str(engines), digest, str(engines), backend="onnxruntime", streams=2, readers=3)
    with borrow_predictor(settings, threads=2) as (two, loaded):
        assert loaded and two.streams == 2 and two.readers == 3
        # a worker runs many scenes: compiled kernels are its default (C where built, else numba)
        preferred = "c" if c_built() else "numba" if numba_installed() else "numpy"
        want = kernels_choice() if os.environ.get(KERNELS_ENV) else preferred
        assert kernels_choice() == want
    with borrow_predictor(replace(settings, readers=1), threads=2) as (one_reader, loaded):
        assert loaded and one_reader is not two and one_reader.readers == 1
    with borrow_predictor(replace(settings, streams=1), threads=2) as (one, loaded):
        assert loaded and one is not two and one.streams == 1
    with borrow_predictor(replace(settings, streams=None), threads=2) as (default, _):
        assert default.streams is None  # the runtime's default for the backend and threads
        default.close()


def test_resume_skips_verified_scenes_and_reruns_an_altered_one(
    cli_run: dict[str, Any], engines: Path, scenes: Path, reference: Path, cluster: Any
) -> None:
    out = cli_run["out"]
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    result = batch_on_cluster(engines, scenes, out, cluster, resume=True)
    assert statuses(result) == {
        "full": "skipped",
        "sar_only": "skipped",
        "broken": "failed",
        "optical_dsm": "skipped",
    }
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")} == before
    recorded = json.loads(result.summary_json.read_text())["settings"]
    assert recorded["scheduler"] == cluster.scheduler_address and recorded["resume"] is True
    skipped = next(s for s in result.scenes if s.id == "full")
    assert skipped.pixels == FULL_PIXELS and skipped.pattern_pixels

    # Same size and georeferencing, one byte changed: only the stored checksum tells.
    altered = out / "sar_only.patterns.tif"
    data = bytearray(altered.read_bytes())
    data[-1] ^= 0xFF
    altered.write_bytes(bytes(data))
    result = batch_on_cluster(engines, scenes, out, cluster, resume=True)
    assert statuses(result)["sar_only"] == "done"
    assert [s.status for s in result.scenes if s.id != "sar_only"] == ["skipped", "failed", "skipped"]
    assert_same_outputs(out, reference)

    # Other settings make other bytes: nothing is skipped.
    result = batch_on_cluster(
        engines,
        [s for s in read_scenes(scenes) if s.id == "sar_only"],
        out,
        cluster,
        resume=True,
        min_valid=0.5,
    )
    assert statuses(result) == {"sar_only": "done"}


def test_cog_outputs_are_cloud_optimized(engines: Path, scenes: Path, cluster: Any, tmp_path: Path) -> None:
    chosen = [s for s in read_scenes(scenes) if s.id == "full"]
    result = batch_on_cluster(engines, chosen, tmp_path, cluster, cog=True, probabilities=True)
    assert result.ok
    for name in ("full.tif", "full.patterns.tif", "full.probabilities.tif"):
        with rasterio.open(tmp_path / name) as dataset:
            assert dataset.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", name
            assert dataset.tags()["STARS_TILE"] == str(TILE)
    again = batch_on_cluster(engines, chosen, tmp_path, cluster, cog=True, probabilities=True, resume=True)
    assert statuses(again) == {"full": "skipped"}


def test_batch_runs_scenes_without_torch(engines: Path, scenes: Path, tmp_path: Path) -> None:
    """A worker on a device without PyTorch: block torch, import Dask and the batch code, run a scene."""
    script = (
        NO_TORCH_PRELUDE
        + f"""
import distributed, runtime.batch, stars_edge.commands.run_batch
from runtime.batch import BatchSettings, read_scenes, run_scene
from stars_edge.io import sha256_file
scene = next(s for s in read_scenes({str(scenes)!r}) if s.id == "sar_only")
settings = BatchSettings({str(engines)!r}, sha256_file({str(engines / "manifest.json")!r}), {str(tmp_path)!r},
                         backend="onnxruntime", threads=1, tile=32, overlap=8)
result = run_scene(scene, settings)
assert result.status == "done", result.error
assert "torch" not in sys.modules
print("ok")
"""
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


def test_batch_benchmark_smoke(engines: Path, tmp_path: Path) -> None:
    """``benchmarks/batch.py`` end to end at the smallest size: every mode runs, the maps agree."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks import batch as bench

    plan = bench.build_parser().parse_args(
        ["--engines", str(engines), "--scenes", "2", "--size", "64", "--tile", "32", "--overlap", "8"]
    )
    plan.workers, plan.repeats, plan.workdir = (1,), 1, tmp_path
    result = bench.run_benchmark(plan, echo=lambda message: None)
    modes = {row["mode"]: row for row in result["rows"]}
    assert set(modes) == {"sequential_cli", "sequential_inprocess", "batch_w1"}
    assert modes["batch_w1"]["class_maps_identical_to_sequential"] is True
    assert all(row["scenes_per_minute"] > 0 and row["mpx_per_s"] > 0 for row in result["rows"])
    assert [s["modalities"] for s in result["scenes"]] == ["optical+sar+dsm", "optical+sar"]
    assert "| batch_w1 | 1 |" in bench.render_markdown(result)
