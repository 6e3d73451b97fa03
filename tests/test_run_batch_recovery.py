"""``stars-edge run-batch`` on real Dask, recovering: ``--resume`` reruns a scene whose input grid moved and
continues an interrupted scene from its journal; a worker process killed in the middle of a scene is
replaced and the scene still finishes.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from affine import Affine
from batch_scenes import (
    GOOD,
    STOP_AFTER_ROW,
    TRANSFORM,
    assert_same_outputs,
    batch_on_cluster,
    local_cluster,
    statuses,
    write_engines,
    write_reference,
    write_scenes,
)
from test_runtime_support import make_physical, write_raster

from runtime.batch import Scene, read_scenes

# Hooks defined here run on the workers, which cannot import this test module: ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


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


def test_resume_reruns_a_scene_whose_input_grid_moved(engines: Path, cluster: Any, tmp_path: Path) -> None:
    """An input replaced by one on another grid, with the same size and mtime, fails the grid check."""
    sar = make_physical((40, 50), seed=4)["sar"]
    path = write_raster(tmp_path / "sar.tif", sar, TRANSFORM)
    scene = [Scene("moved", sar=str(path))]
    assert batch_on_cluster(engines, scene, tmp_path / "out", cluster).ok
    stat = path.stat()
    write_raster(tmp_path / "moved.tif", sar, TRANSFORM @ Affine.translation(3, 0)).replace(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    again = batch_on_cluster(engines, scene, tmp_path / "out", cluster, resume=True)
    assert statuses(again) == {"moved": "done"}


class Interrupt(Exception):
    """Raised by a row hook on a worker to stop a scene in the middle."""


def _interrupt(scene_id: str, row: int, *, target: str) -> None:
    if scene_id == target and row == STOP_AFTER_ROW:
        raise Interrupt(f"stopped {scene_id} after tile row {row}")


def _kill_own_worker_once(scene_id: str, row: int, *, target: str, marker: str) -> None:
    """SIGKILL the worker process running ``target`` once, in the middle of the scene."""
    if scene_id == target and row == 1 and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), signal.SIGKILL)


def test_interrupted_scene_continues_from_its_journal(
    engines: Path, scenes: Path, reference: Path, cluster: Any, tmp_path: Path
) -> None:
    good = [s for s in read_scenes(scenes) if s.id in GOOD]
    first = batch_on_cluster(
        engines, good, tmp_path, cluster, on_row_done=functools.partial(_interrupt, target="full")
    )
    full = next(s for s in first.scenes if s.id == "full")
    assert full.status == "failed" and "Interrupt: stopped full" in full.error
    assert list(tmp_path.glob(".full.tif*journal*")) and not (tmp_path / "full.tif").exists()
    assert not first.ok

    second = batch_on_cluster(engines, good, tmp_path, cluster, resume=True)
    assert statuses(second) == {"full": "done", "sar_only": "skipped", "optical_dsm": "skipped"}
    resumed = next(s for s in second.scenes if s.id == "full")
    assert 0 < resumed.resumed_from_row <= STOP_AFTER_ROW and resumed.processed_pixels < resumed.pixels
    assert second.ok
    assert_same_outputs(tmp_path, reference, resumed=("full",))


def test_killed_worker_mid_scene_still_finishes_every_good_scene(
    engines: Path, scenes: Path, reference: Path, cluster: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "killed.pid"
    hook = functools.partial(_kill_own_worker_once, target="full", marker=str(marker))
    out = tmp_path / "out"
    result = batch_on_cluster(engines, scenes, out, cluster, on_row_done=hook)
    assert marker.is_file()  # a worker process really died in the middle of "full"
    assert statuses(result) == {
        "full": "done",
        "sar_only": "done",
        "broken": "failed",
        "optical_dsm": "done",
    }
    full = next(s for s in result.scenes if s.id == "full")
    assert full.worker.rsplit(":", 1)[1] != marker.read_text()  # finished by another process
    assert_same_outputs(out, reference)
