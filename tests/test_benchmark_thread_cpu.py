"""``benchmarks/thread_cpu.py``: a scene's CPU by thread and role."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from latency_models import write_engine_folder  # noqa: E402

from benchmarks import thread_cpu  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc/self/task (Linux)")


def _sampled_while(work: Callable[[], None], name: str) -> dict[str, Any]:
    """``ThreadSampler`` around ``work`` run on a thread called ``name``, which stays alive a few sampling
    intervals after it, so that the sampler sees it by name."""
    sampler = thread_cpu.ThreadSampler()

    def run() -> None:
        work()
        time.sleep(5 * thread_cpu.SAMPLE_SECONDS)

    worker = threading.Thread(target=run, name=name)
    worker.start()
    worker.join()
    return sampler.stop()


def test_roles_by_thread_name() -> None:
    assert thread_cpu.role_of("MainThread", True) == "main"
    assert thread_cpu.role_of(None, False) == "backend workers"
    assert thread_cpu.role_of("stars-edge-reader-1", False) == "readers"
    assert thread_cpu.role_of("stars-edge-writer_0", False) == "writer"
    assert thread_cpu.role_of("stars-edge-engine_1", False) == "engine callers"
    assert thread_cpu.role_of("Thread-3", False) == "other"


def test_a_busy_thread_is_seen_under_its_own_name() -> None:
    """The busy thread works with the GIL released, as the runtime's readers do (GDAL, numpy), and stays
    alive a few intervals after its work: a pure-Python spin held the GIL the sampler needs and was seen
    for 0.1 of its 0.2 CPU-s once (fresh clone, session 12)."""
    import hashlib

    block = bytes(1 << 20)

    def spin() -> None:
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            hashlib.sha256(block).digest()  # releases the GIL for inputs this large

    sampled = _sampled_while(spin, "stars-edge-reader-9")
    assert sampled["roles"]["readers"] >= 0.15
    assert any(row["name"] == "stars-edge-reader-9" for row in sampled["threads"])


def test_cold_and_warm_runs_split_their_cpu_by_role(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    folder = write_engine_folder(tmp_path / "engines")
    out = tmp_path / "threads.json"
    # 1024 px of 64 px tiles: the readers work long enough to be sampled more than once, by name
    argv = ["--engines", str(folder), "--backend", "onnxruntime", "--precision", "fp32", "--size", "1024"]
    argv += ["--tile", "64", "--batch", "2", "--warm", "1", "--workdir", str(tmp_path / "w")]
    assert thread_cpu.main([*argv, "--json", str(out)]) == 0
    runs = json.loads(out.read_text())["thread_cpu"]["runs"]
    assert [run["run"] for run in runs] == ["cold", "warm"]
    for run in runs:
        assert run["roles"]["main"] > 0 and run["roles"]["readers"] > 0
        assert set(run["roles"]) == set(thread_cpu.ROLES) == set(run["minor_faults"])
        assert run["utilisation"]["idle_core_seconds"] >= 0
        assert len(run["utilisation"]["busy_cores_by_tenth"]) == 10
        assert run["stage_cpu_seconds"]["read"] > 0


def test_utilisation_counts_the_idle_cores_per_interval() -> None:
    """Two cores: the first second both busy, the second one idle: 1 idle core-second, busy 2 then 1."""
    got = thread_cpu.utilisation([(0.0, 0.0), (1.0, 2.0), (2.0, 3.0)], cores=2, parts=2)
    assert got["idle_core_seconds"] == pytest.approx(1.0)
    assert got["busy_cores_by_tenth"] == pytest.approx([2.0, 1.0])
    assert thread_cpu.utilisation([(0.0, 0.0)], cores=2)["idle_core_seconds"] is None


def test_page_faults_are_counted_on_the_thread_that_touches_fresh_memory() -> None:
    """64 MiB allocated and written on a reader-named thread: its 16384 fresh 4 KiB pages fault there (an
    allocation this large is a fresh mapping, and the kernel maps each page on first touch). A bytearray, not
    a numpy array: numpy asks for transparent huge pages on large arrays, one fault per 2 MiB."""
    import numpy as np

    def touch() -> None:
        np.frombuffer(bytearray(64 << 20), dtype=np.uint8)[:] = 1

    sampled = _sampled_while(touch, "stars-edge-reader-8")
    assert sampled["minor_faults"]["readers"] >= 8000
    assert sampled["minor_faults"]["readers"] > 4 * sampled["minor_faults"]["writer"]
    assert sampled["utilisation"]["idle_core_seconds"] >= 0
