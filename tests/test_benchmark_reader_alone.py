"""``benchmarks/reader_alone.py``: the reader stage's CPU with nothing else running."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from latency_models import write_engine_folder  # noqa: E402

from benchmarks import reader_alone  # noqa: E402


def test_every_tile_is_read_and_its_cpu_split_between_reading_and_preparing(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    folder = write_engine_folder(tmp_path / "engines")
    out = tmp_path / "reader.json"
    argv = ["--engines", str(folder), "--size", "256", "--repeats", "2", "--workdir", str(tmp_path / "w")]
    assert reader_alone.main([*argv, "--scene", "s2like_clouds", "--json", str(out)]) == 0
    record = json.loads(out.read_text())
    runs = record["reader_alone"]["runs"]
    assert len(runs) == 2 and all(run["tiles"] > 0 for run in runs)
    for run in runs:  # both parts are counted, and fit inside the process's CPU
        assert run["preprocess_cpu_seconds"] > 0 and run["read_cpu_seconds"] > 0
        assert run["read_cpu_seconds"] + run["preprocess_cpu_seconds"] <= run["cpu_seconds"] + 0.01
    assert record["machine"]["load_start"] is not None
