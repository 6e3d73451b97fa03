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


PERF_SCRIPT = """\
    29380      7f6cb3afaaf4 unicodekeys_lookup_unicode (/root/.pyenv/versions/3.11.7/lib/libpython3.11.so.1.0)
    29398      7fc9f9371e51 [unknown] (/venv/rasterio.libs/libdeflate-d9fd40d3.so.0)
    29398      7fc9f9371e99 [unknown] (/venv/rasterio.libs/libdeflate-d9fd40d3.so.0)
    29398  ffffffff81a0b2c1 clear_page_erms+0x11 ([kernel.kallsyms])
    29406      7f00aa001000 [unknown] (/tmp/perf-29380.map)
    31111      7f6cb41330ba __memset_avx512_unaligned_erms+0x1a (/usr/lib/x86_64-linux-gnu/libc.so.6)
not a sample line
"""


def test_perf_samples_are_put_under_the_role_of_their_thread() -> None:
    from benchmarks.perf_samples import by_role, format_by_role, parse_perf_script

    samples = list(parse_perf_script(PERF_SCRIPT))
    assert samples[0] == (29380, "unicodekeys_lookup_unicode", "libpython3.11.so.1.0")
    assert samples[3] == (29398, "clear_page_erms", "[kernel.kallsyms]")  # the offset dropped
    assert len(samples) == 6
    roles = {29380: "main", 29398: "readers", 29406: "backend workers"}
    result = by_role(samples, roles)
    assert result["samples"] == 6
    readers = result["roles"]["readers"]
    assert readers["samples"] == 3 and readers["share"] == pytest.approx(0.5)
    assert readers["libraries"][0] == {"library": "libdeflate-d9fd40d3.so.0", "share": pytest.approx(2 / 6)}
    assert readers["symbols"][0]["symbol"] == "[unknown]"
    assert result["roles"]["unknown"]["samples"] == 1  # a thread the sampler never saw
    assert "readers: 50.0%" in format_by_role(result)


def _perf_can_attach() -> bool:
    import shutil
    import subprocess

    if shutil.which("perf") is None:
        return False
    probe = ["perf", "record", "-o", "/dev/null", "--", "true"]
    done = subprocess.run(probe, capture_output=True, check=False)
    return done.returncode == 0


@pytest.mark.skipif(not _perf_can_attach(), reason="perf is not installed or may not record here")
def test_perf_recording_sees_a_busy_reader_thread(tmp_path: Path) -> None:
    """A thread named like a reader hashes for 0.5 s while ``perf record`` is attached to this process: most
    samples land on its thread id, under its role, in OpenSSL's library or libpython."""
    import hashlib
    import os

    from benchmarks.perf_samples import PerfRecording, by_role, parse_perf_script, perf_script

    block = bytes(1 << 20)
    ids: list[int] = []

    def spin() -> None:
        ids.append(threading.get_native_id())
        end = time.thread_time() + 0.5
        while time.thread_time() < end:
            hashlib.sha256(block).digest()

    recording = PerfRecording(os.getpid(), tmp_path / "perf.data")
    worker = threading.Thread(target=spin, name="stars-edge-reader-7")
    worker.start()
    worker.join()
    result = by_role(parse_perf_script(perf_script(recording.stop())), {ids[0]: "readers"})
    assert result["roles"]["readers"]["samples"] >= 0.3 * 999 * 0.5
    assert result["roles"]["readers"]["share"] > 0.5
