"""What ``benchmarks/runtime_memory.py`` and ``benchmarks/batch.py`` record about how their numbers were made.

The measurements themselves are faked (no scene is written, no engine runs): these tests pin the record
around them: the command, the quick flag, the CPU flags as a list, an atomic write, and a load average
sampled before the work starts, so it says whether other work shared the cores rather than counting the
benchmark's own processes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from benchmarks import batch as batch_bench  # noqa: E402
from benchmarks import runtime_memory  # noqa: E402
from stars_edge import io as stars_io  # noqa: E402

IDLE, BUSY = 0.25, 3.5


class FakeLoad:
    """A load average that reads ``IDLE`` until the benchmark starts working, then ``BUSY``."""

    def __init__(self) -> None:
        self.value = IDLE

    def __call__(self) -> float:
        return self.value

    def work(self) -> None:
        self.value = BUSY


@pytest.fixture
def load(monkeypatch: pytest.MonkeyPatch) -> FakeLoad:
    fake = FakeLoad()
    monkeypatch.setattr(runtime_memory, "load_average", fake)
    monkeypatch.setattr(batch_bench, "load_average", fake)
    monkeypatch.setattr("benchmarks.common.load_average", fake)  # what machine_info reads
    return fake


@pytest.fixture
def fake_measure(monkeypatch: pytest.MonkeyPatch, load: FakeLoad) -> list[list[tuple[int, int]]]:
    """Replace the scene runs: record the sizes asked for, raise the load as real runs would."""
    calls: list[list[tuple[int, int]]] = []

    def measure(
        sizes: list[tuple[int, int]],
        work: Path,
        gdal_cachemax: int | None = None,
        logits_stride: int = 4,
        readers: int | None = None,
    ) -> list[Any]:
        load.work()
        calls.append(list(sizes))
        return [
            {
                "height": h,
                "width": w,
                "peak_rss_mib": 100.0 + i,
                "seconds": 1.0,
                "chunks": 1,
                "engine_runs": {},
            }
            for i, (h, w) in enumerate(sizes)
        ]

    monkeypatch.setattr(runtime_memory, "measure", measure)
    return calls


def test_runtime_memory_records_command_flags_and_start_load(
    tmp_path: Path, fake_measure: list[list[tuple[int, int]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    writes: list[Path] = []

    def spy(path: Path, payload: Any) -> Path:
        writes.append(Path(path))
        return stars_io.write_json_atomic(path, payload)

    monkeypatch.setattr(runtime_memory, "write_json_atomic", spy)
    out = tmp_path / "memory.json"
    argv = ["--sizes", "1024x2048,1024x32768", "--gdal-cachemax", "16", "--out", str(out)]
    assert runtime_memory.main(argv) == 0
    assert writes == [out]
    data = json.loads(out.read_text())
    assert data["command"] == "python benchmarks/runtime_memory.py " + " ".join(argv)
    assert data["quick"] is False
    assert isinstance(data["cpu_flags"], list) and all(isinstance(f, str) for f in data["cpu_flags"])
    assert data["cpu_flags"] == data["machine"]["cpu_flags"]
    assert data["load_average_1m"] == IDLE and data["machine"]["load_average_1m"] == IDLE
    assert fake_measure == [[(1024, 2048), (1024, 32768)]]
    # the keys benchmarks/report_training_runtime.py renders are still there
    for key in ("benchmark", "cores", "gdal_cachemax_mb", "parent_peak_rss_mib", "wall_seconds", "ratios"):
        assert key in data
    assert data["benchmark"].startswith("runtime peak RSS")
    assert data["gdal_cachemax_mb"] == 16
    assert data["ratios"] == {"width 32768 / 2048": pytest.approx(101.0 / 100.0)}


def test_runtime_memory_quick_runs_small_scenes_outside_the_results(
    tmp_path: Path, fake_measure: list[list[tuple[int, int]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert runtime_memory.main(["--quick"]) == 0
    data = json.loads((tmp_path / "stars_edge_runtime_memory_quick.json").read_text())
    assert data["quick"] is True
    assert fake_measure == [runtime_memory.parse_sizes(runtime_memory.QUICK_SIZES)]


def test_runtime_memory_refuses_a_malformed_size() -> None:
    with pytest.raises(SystemExit, match="not HxW"):
        runtime_memory.parse_sizes("1024x2048,1024")


def test_batch_records_the_load_before_writing_scenes(
    tmp_path: Path, load: FakeLoad, monkeypatch: pytest.MonkeyPatch
) -> None:
    def write_scenes(workdir: Path, count: int, size: int) -> Path:
        load.work()
        listing = workdir / "scenes.csv"
        rows = [f"s{i:02d},optical.tif,sar.tif,," for i in range(count)]
        listing.write_text("\n".join(["id,optical,sar,dsm,cloud_mask", *rows]) + "\n")
        return listing

    def timed(*args: Any) -> float:
        load.work()
        return 2.0

    monkeypatch.setattr(batch_bench, "write_scenes", write_scenes)
    for mode in ("sequential_cli", "sequential_inprocess", "batch"):
        monkeypatch.setattr(batch_bench, mode, timed)
    monkeypatch.setattr(batch_bench, "_same_maps", lambda *args: True)
    plan: argparse.Namespace = batch_bench.build_parser().parse_args(
        ["--engines", str(tmp_path / "engines"), "--scenes", "2", "--size", "64", "--repeats", "1"]
    )
    plan.workers, plan.workdir = (1,), tmp_path / "work"
    result = batch_bench.run_benchmark(plan, echo=lambda message: None)
    assert result["schema"] == batch_bench.RESULT_SCHEMA == "stars-edge/batch/2"
    assert result["machine"]["load_average_1m"] == IDLE
    assert result["load_average_1m_end"] == BUSY
    assert isinstance(result["machine"]["cpu_flags"], list)
    markdown = batch_bench.render_markdown(result)
    assert f"1-minute load average {IDLE} at the start (before the scenes were written)" in markdown
    assert f"{BUSY} at the end (counts the benchmark's own workers)" in markdown


@pytest.mark.parametrize("stride", [1, 4])
def test_runtime_memory_runs_real_scenes_with_engines_of_either_logits_stride(
    tmp_path: Path, stride: int
) -> None:
    """The memory benchmark's engines and child run for real at both logits strides (4 ships)."""
    pytest.importorskip("rasterio")
    from stars_edge.manifest import load_manifest

    rows = runtime_memory.measure([(256, 512)], tmp_path, logits_stride=stride)
    assert load_manifest(tmp_path / "engines", verify=False).logits_stride == stride
    assert rows[0]["height"] == 256 and rows[0]["width"] == 512
    assert float(rows[0]["peak_rss_mib"]) > 10  # type: ignore[arg-type]
