"""Every way ``stars-edge run-batch`` ends writes its summary and says so in one line; ``--resume`` continues.

Real processes and signals: Ctrl-C as a terminal sends it (SIGINT to the whole process group, the local
worker processes included) and SIGTERM to the client alone, a file size limit (``RLIMIT_FSIZE``) inherited
by the workers, FIFOs where outputs and summaries go, leftover journals, and a scene killed in the middle of
its COG finalisation.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import re
import resource
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import distributed
import numpy as np
import pytest
import rasterio
from affine import Affine
from test_runtime_support import build_engines, interruptible, make_physical, random_weights, write_raster

from runtime import Predictor
from runtime.batch import BatchSettings, Scene, read_scenes, run_batch, run_scene, verify_scene
from runtime.outputs import journal_path, partial_path
from stars_edge.errors import ConfigError, OutputError
from stars_edge.io import sha256_file

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
TRANSFORM = Affine(5.0, 0.0, 300000.0, 0.0, -5.0, 4600000.0)
TILE, OVERLAP = 32, 8
SCENES = 8
#: Each scene spans two output block bands (checkpoints, a journal when interrupted) and takes a moment.
SHAPE = (600, 160)


class Interrupt(Exception):
    """Raised by a row hook to stop a scene in the middle."""


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engines(tmp_path_factory.mktemp("engines"), random_weights(classes=4), classes=4)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``scenes.csv``: SCENES optical + SAR scenes."""
    folder = tmp_path_factory.mktemp("scenes")
    rows = ["id,optical,sar"]
    for index in range(SCENES):
        values = make_physical(SHAPE, seed=index)
        write_raster(folder / f"opt{index}.tif", values["optical"], TRANSFORM)
        write_raster(folder / f"sar{index}.tif", values["sar"], TRANSFORM)
        rows.append(f"s{index},opt{index}.tif,sar{index}.tif")
    (folder / "scenes.csv").write_text("\n".join(rows) + "\n")
    return folder / "scenes.csv"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A cluster in this process (threads, no worker processes): quick to start for the Python-API tests."""
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=":0", silence_logs=logging.ERROR
    ) as local:
        yield local


def _cli(engines: Path, scenes: Path, out: Path, *extra: str) -> list[str]:
    return [
        "run-batch", "--engines", str(engines), "--scenes", str(scenes), "--out-dir", str(out),
        "--workers", "1", "--threads", "1", "--tile", str(TILE), "--overlap", str(OVERLAP),
        "--backend", "onnxruntime", "--dashboard-address", ":0", "--no-progress", *extra,
    ]  # fmt: skip


def _settings(engines: Path, out: Path, **kwargs: Any) -> BatchSettings:
    return BatchSettings(
        str(engines), sha256_file(engines / "manifest.json"), str(out), backend="onnxruntime", threads=1,
        tile=TILE, overlap=OVERLAP, **kwargs,
    )  # fmt: skip


def _batch(engines: Path, scenes: Any, out: Path, cluster: Any, **kwargs: Any) -> Any:
    return run_batch(
        engines, scenes, out, scheduler=cluster.scheduler_address, backend="onnxruntime", tile=TILE,
        overlap=OVERLAP, threads=1, progress=False, log=None, **kwargs,
    )  # fmt: skip


def _reference(engines: Path, scene: Scene, folder: Path) -> dict[str, np.ndarray]:
    Predictor(engines, backend="onnxruntime", threads=1).predict_scene(
        optical=scene.optical, sar=scene.sar, out=folder / "pred.tif", pattern_map=folder / "pat.tif",
        tile=TILE, overlap=OVERLAP, progress=False,
    )  # fmt: skip
    return {name: _array(folder / name) for name in ("pred.tif", "pat.tif")}


def _array(path: Path) -> np.ndarray:
    with rasterio.open(path) as dataset:
        return dataset.read()


def _own_lines(stderr: str) -> list[str]:
    """stderr without the two lines every local batch starts with."""
    return [
        line
        for line in stderr.splitlines()
        if not line.startswith("Dask dashboard: ") and not re.fullmatch(r"\d+ scenes on .*", line)
    ]


def _start_and_signal(command: list[str], out: Path, send: Callable[[int], None]) -> tuple[int, str]:
    """Start the CLI in its own process group, signal it once the first scene is done, wait for it."""
    child = subprocess.Popen(
        [sys.executable, "-m", "stars_edge", *command],
        cwd=ROOT,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=interruptible,
    )
    deadline = time.monotonic() + 120
    while not list(out.glob("*.run.json")):
        assert child.poll() is None and time.monotonic() < deadline, child.communicate()
        time.sleep(0.005)
    send(child.pid)
    _, stderr = child.communicate(timeout=120)
    return child.returncode, stderr


def _assert_interrupted(code: int, stderr: str, out: Path) -> tuple[dict[str, Any], str]:
    """Exit 130, no traceback, one line of our own, and a summary of the scenes that finished."""
    assert code == 130, stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    lines = _own_lines(stderr)
    assert len(lines) == 1, stderr
    match = re.fullmatch(
        r"interrupted: stopped after (\d+) of 8 scenes \((\d+) done, 0 skipped, 0 failed\); summary: "
        r"(\S+); scenes that were running continue from their journals; continue with: (.+)",
        lines[0],
    )
    assert match, lines[0]
    assert match[3] == str(out / "summary.csv")
    summary = json.loads((out / "summary.json").read_text())
    finished = int(match[1])  # the first sidecar is there, its result may still be on its way
    assert finished < SCENES and int(match[2]) == finished
    assert summary["interrupted"] is True and len(summary["unfinished"]) == SCENES - finished
    with (out / "summary.csv").open() as handle:
        assert [row["status"] for row in csv.DictReader(handle)] == ["done"] * finished
    return summary, match[4]


def test_ctrl_c_stops_the_batch_with_one_line_a_summary_and_a_command_that_continues(
    engines: Path, scenes: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    command = _cli(engines, scenes, out)
    code, stderr = _start_and_signal(command, out, lambda pid: os.killpg(pid, signal.SIGINT))
    summary, resume = _assert_interrupted(code, stderr, out)
    argv = shlex.split(resume)
    assert argv[:3] == ["python", "-m", "stars_edge"] and argv[3:] == [*command, "--resume"]

    again = subprocess.run(
        [sys.executable, *argv[1:]], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=180
    )
    assert again.returncode == 0, again.stderr
    assert f"{SCENES} scenes: " in again.stdout and " 0 failed" in again.stdout
    rows = json.loads((out / "summary.json").read_text())["scenes"]
    finished = {row["id"] for row in summary["scenes"]}
    assert {row["id"] for row in rows if row["status"] == "skipped"} >= finished
    listed = read_scenes(scenes)
    for scene in (listed[0], listed[-1]):  # finished before the interruption, and not even started
        expected = _reference(engines, scene, tmp_path / scene.id)
        np.testing.assert_array_equal(_array(out / f"{scene.id}.tif"), expected["pred.tif"])
        np.testing.assert_array_equal(_array(out / f"{scene.id}.patterns.tif"), expected["pat.tif"])


def test_sigterm_writes_the_summary_and_one_line(engines: Path, scenes: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stderr = _start_and_signal(
        _cli(engines, scenes, out), out, lambda pid: os.kill(pid, signal.SIGTERM)
    )
    _assert_interrupted(code, stderr, out)


def _file_size_limit(size: int) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    return apply


def test_a_file_size_limit_names_each_scene_s_file_and_the_summary(
    engines: Path, scenes: Path, tmp_path: Path
) -> None:
    """``ulimit -f 1``: every scene fails naming its own file, the summary cannot be written: one line."""
    two = tmp_path / "two.csv"
    rows = [f"s{i},{scenes.parent}/opt{i}.tif,{scenes.parent}/sar{i}.tif" for i in (0, 1)]
    two.write_text("\n".join(["id,optical,sar", *rows]) + "\n")
    out = tmp_path / "out"
    done = subprocess.run(
        [sys.executable, "-m", "stars_edge", *_cli(engines, two, out)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=_file_size_limit(1024),
    )
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr and "OSError" not in done.stderr, done.stderr
    lines = [line for line in _own_lines(done.stderr) if not line.startswith("_tiff")]  # libtiff's own
    failed = [line for line in lines if re.match(r"s\d: failed: ", line)]
    assert len(failed) == 2, done.stderr
    for line in failed:
        scene = line.split(":")[0]
        assert f"{out}/.{scene}." in line and "file size limit (ulimit -f) of 1024 bytes" in line, line
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1, done.stderr
    assert re.fullmatch(  # the CSV of two failures may still fit under 1024 bytes, the JSON does not
        rf"error: writing the batch summary {re.escape(str(out))}/summary\.(csv|json) failed \(File too "
        r"large: file size limit \(ulimit -f\) of 1024 bytes reached\); free disk space or fix the folder, "
        r"then rerun",
        errors[0],
    ), errors[0]
    assert len(lines) == 3, done.stderr
    assert "2 scenes: 0 done, 0 skipped, 2 failed" in done.stdout and "summary:" not in done.stdout


def test_leftover_journals_need_resume_or_overwrite(
    engines: Path, scenes: Path, cluster: Any, tmp_path: Path
) -> None:
    scene = read_scenes(scenes)[0]

    def stop(scene_id: str, row: int) -> None:
        if row == 15:
            raise Interrupt("stopped")

    result = run_scene(scene, _settings(engines, tmp_path), stop)
    assert result.status == "failed" and journal_path(tmp_path / "s0.tif").exists()
    with pytest.raises(OutputError, match=r"\.s0\.tif\.journal\.json hold.*--resume.*--overwrite"):
        _batch(engines, [scene], tmp_path, cluster)
    with pytest.raises(ConfigError, match="--resume"):
        _batch(engines, [scene], tmp_path, cluster, resume=True, overwrite=True)
    assert not (tmp_path / "summary.csv").exists()  # refused before anything ran
    result = _batch(engines, [scene], tmp_path, cluster, overwrite=True)
    assert result.ok and result.scenes[0].resumed_from_row == 0
    assert not journal_path(tmp_path / "s0.tif").exists()
    expected = _reference(engines, scene, tmp_path / "reference")
    np.testing.assert_array_equal(_array(tmp_path / "s0.tif"), expected["pred.tif"])


@pytest.mark.timeout(180)  # a FIFO read by mistake blocks forever
def test_outputs_that_are_fifos_are_refused_with_their_path(
    engines: Path, scenes: Path, cluster: Any, tmp_path: Path
) -> None:
    listed = read_scenes(scenes)[:2]
    os.mkfifo(tmp_path / "summary.json")
    with pytest.raises(OutputError, match=r"summary\.json is a FIFO"):
        _batch(engines, listed, tmp_path, cluster)
    (tmp_path / "summary.json").unlink()

    os.mkfifo(tmp_path / "s1.patterns.tif")
    os.mkfifo(tmp_path / "s0.run.json")
    result = _batch(engines, listed, tmp_path, cluster, resume=True)  # reading s0's sidecar must not block
    errors = {scene.id: scene.error for scene in result.scenes}
    assert [scene.status for scene in result.scenes] == ["failed", "failed"]
    assert f"{tmp_path / 's0.run.json'} is a FIFO" in errors["s0"]  # outputs written, the sidecar refused
    assert f"{tmp_path / 's1.patterns.tif'} is a FIFO" in errors["s1"]
    assert all("\n" not in error for error in errors.values())
    for name in ("s1.patterns.tif", "s0.run.json"):
        assert (tmp_path / name).is_fifo(), name


INJECT = """
import os, signal, sys, json
import runtime.outputs
from runtime.batch import BatchSettings, Scene, run_scene
real = runtime.outputs.make_cog
def make_cog(spec):
    real(spec)
    os.kill(os.getpid(), signal.SIGKILL)  # the first partial is a COG now, the others are not
runtime.outputs.make_cog = make_cog
scene, settings = json.loads(sys.argv[1]), json.loads(sys.argv[2])
run_scene(Scene(**scene), BatchSettings(**settings))
"""


def test_a_scene_killed_during_its_cog_finalisation_resumes(
    engines: Path, scenes: Path, tmp_path: Path
) -> None:
    scene = read_scenes(scenes)[0]
    settings = _settings(engines, tmp_path / "out", cog=True, probabilities=True)
    killed = subprocess.run(
        [sys.executable, "-c", INJECT, json.dumps(dataclasses.asdict(scene)),
         json.dumps(dataclasses.asdict(settings))],
        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert journal_path(tmp_path / "out" / "s0.tif").exists()
    assert partial_path(tmp_path / "out" / "s0.tif").exists()

    resumed = dataclasses.replace(settings, resume=True)
    result = run_scene(scene, resumed)
    assert result.status == "done", result.error
    fresh = run_scene(scene, dataclasses.replace(settings, out_dir=str(tmp_path / "fresh")))
    assert fresh.status == "done", fresh.error
    for name in ("s0.tif", "s0.patterns.tif", "s0.probabilities.tif"):
        with rasterio.open(tmp_path / "out" / name) as got, rasterio.open(tmp_path / "fresh" / name) as want:
            np.testing.assert_array_equal(got.read(), want.read())
            assert got.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", name
    assert verify_scene(scene, resumed) is not None  # the sidecar describes the finished files
    assert not journal_path(tmp_path / "out" / "s0.tif").exists()
