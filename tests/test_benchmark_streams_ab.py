"""``benchmarks/streams_ab.py``: one OpenVINO stream against two, end to end, in separate processes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from latency_models import write_engine_folder  # noqa: E402

from benchmarks import streams_ab  # noqa: E402


def test_summary_gives_medians_ratios_and_whether_the_maps_agree() -> None:
    label = streams_ab.CASES[0][0]
    runs = [
        {"case": label, "streams": 1, "wall_seconds": [2.0, 2.4], "cpu_seconds": [4.0, 4.2], "digest": "a"},
        {"case": label, "streams": 2, "wall_seconds": [1.6, 1.0], "cpu_seconds": [3.0, 3.2], "digest": "a"},
    ]
    row = streams_ab.summarise(runs, (1, 2))[label]
    assert row["streams 1"]["median_wall_s"] == pytest.approx(2.2)
    assert row["streams 2"]["min_wall_s"] == pytest.approx(1.0)
    assert row["speedup"]["streams 2 over 1"] == pytest.approx(2.2 / 1.3)
    assert row["same_class_maps"] is True
    runs[1]["digest"] = "b"
    assert streams_ab.summarise(runs, (1, 2))[label]["same_class_maps"] is False


def _run(tmp_path: Path, *options: str) -> dict:
    """The benchmark on tiny real engines (FP32, a 256 px scene, one round of one run); its JSON record."""
    pytest.importorskip("openvino")
    folder = write_engine_folder(tmp_path / "engines")
    out = tmp_path / "ab.json"
    argv = ["--engines", str(folder), "--precision", "fp32", "--size", "256", "--rounds", "1", "--calls", "1"]
    assert streams_ab.main([*argv, *options, "--workdir", str(tmp_path / "w"), "--json", str(out)]) == 0
    return json.loads(out.read_text())


def test_the_benchmark_runs_every_case_at_each_stream_count(tmp_path: Path) -> None:
    record = _run(tmp_path)
    assert set(record["streams_ab"]) == {label for label, _, _ in streams_ab.CASES}
    assert len(record["runs"]) == 2 * len(streams_ab.CASES)
    assert all(row["same_class_maps"] for row in record["streams_ab"].values())
    assert record["machine"]["load_start"] is not None


def test_the_benchmark_compares_reader_threads_too(tmp_path: Path) -> None:
    record = _run(tmp_path, "--readers", "1,2")
    assert record["setting_compared"] == "readers" and record["streams_compared"] == [1, 2]
    row = record["streams_ab"]["clean, from files"]
    assert set(row) >= {"readers 1", "readers 2"} and row["same_class_maps"] is True
    assert list(row["speedup"]) == ["readers 2 over 1"]
    assert {run["readers"] for run in record["runs"]} == {1, 2}


def test_the_benchmark_compares_this_checkout_with_another(tmp_path: Path) -> None:
    record = _run(tmp_path, "--against", str(PROJECT_ROOT), "--modes", "files")
    assert record["setting_compared"] == "code" and record["against"] == str(PROJECT_ROOT)
    assert set(record["streams_ab"]) == {"clean, from files", "10 % clouds, from files"}
    row = record["streams_ab"]["clean, from files"]
    assert list(row["speedup"]) == ["code current over baseline"] and row["same_class_maps"] is True
    assert [run["code"] for run in record["runs"]] == ["baseline"] * 2 + ["current"] * 2


def test_against_a_folder_without_the_benchmark_says_so(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="not a checkout"):
        streams_ab.main(["--engines", str(tmp_path), "--against", str(tmp_path)])
