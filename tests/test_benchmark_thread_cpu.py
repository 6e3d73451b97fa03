"""``benchmarks/thread_cpu.py``: a scene's CPU by thread and role."""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from latency_models import write_engine_folder  # noqa: E402

from benchmarks import thread_cpu  # noqa: E402

pytestmark = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads /proc/self/task (Linux)")


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

    sampler = thread_cpu.ThreadSampler()
    block = bytes(1 << 20)

    def spin() -> None:
        end = time.thread_time() + 0.2
        while time.thread_time() < end:
            hashlib.sha256(block).digest()  # releases the GIL for inputs this large
        time.sleep(5 * thread_cpu.SAMPLE_SECONDS)

    worker = threading.Thread(target=spin, name="stars-edge-reader-9")
    worker.start()
    worker.join()
    sampled = sampler.stop()
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
        assert set(run["roles"]) == set(thread_cpu.ROLES)
        assert run["stage_cpu_seconds"]["read"] > 0
