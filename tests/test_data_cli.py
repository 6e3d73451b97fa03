"""`stars-edge data ...` commands end to end on tiny inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stars_edge", "data", *args], capture_output=True, text=True, timeout=120
    )


def test_synth_stats_probe_and_formats(tmp_path: Path) -> None:
    data = tmp_path / "bench"
    result = _cli(
        "synth",
        "--out",
        str(data),
        "--scenes",
        "3",
        "--size",
        "48",
        "--clouds",
        "0.2",
        "--sar-gap",
        "0.1",
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    index = json.loads((data / "index.json").read_text())
    assert len(index["scenes"]) == 3 and index["config"]["cloud_cover"] == 0.2
    assert (data / "scene_0000" / "cloud_mask.tif").is_file()
    result = _cli("stats", "--data", str(data), "--out", str(tmp_path / "stats.json"), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "stats.json").read_text())["specs"][0]["name"] == "optical"
    result = _cli("probe", "--data", str(data), "--patterns", "dsm", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "| dsm |" in result.stdout
    result = _cli("formats")
    assert "sen1floods11" in result.stdout and "potsdam" in result.stdout


def test_mosaic(tmp_path: Path) -> None:
    result = _cli("mosaic", "--out", str(tmp_path), "--size", "64", "--block", "32", "--no-progress")
    assert result.returncode == 0, result.stderr
    assert {p.name for p in tmp_path.glob("*.tif")} == {
        "optical.tif",
        "sar.tif",
        "dsm.tif",
        "label.tif",
        "cloud_mask.tif",
    }


def test_errors_are_one_line(tmp_path: Path) -> None:
    result = _cli("stats", "--data", str(tmp_path), "--out", str(tmp_path / "s.json"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "pass --format" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    result = _cli("synth", "--out", str(tmp_path / "x"), "--cloud-region", "1,2")
    assert result.returncode == 1 and "--cloud-region" in result.stderr
    result = _cli("stats", "--data", str(tmp_path), "--format", "landsat")
    assert result.returncode == 1 and "valid formats" in result.stderr
