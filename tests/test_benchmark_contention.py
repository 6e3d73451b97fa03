"""``benchmarks/contention.py``: the CPU floor's own work, each part alone and both at once."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from latency_models import write_engine_folder  # noqa: E402

from benchmarks import contention  # noqa: E402
from benchmarks.latency_floor import scene_files  # noqa: E402
from benchmarks.latency_scenes import scene_paths  # noqa: E402


@pytest.mark.parametrize("batch", [3, 5])
def test_engine_calls_are_the_batches_the_runtime_forms(tmp_path: Path, batch: int) -> None:
    """The benchmark's engine work is the clean scene's: the same calls per batch shape as a real run (5
    tiles per row: a remainder, and none)."""
    pytest.importorskip("onnxruntime")
    from runtime import Predictor

    folder = write_engine_folder(tmp_path / "engines")
    paths = scene_paths(tmp_path / "w", 256, 0, "s2like")
    with Predictor(folder, backend="onnxruntime", precision="fp32") as predictor:
        summary = predictor.predict_scene(
            optical=paths["optical"],
            sar=paths["sar"],
            dsm=paths["dsm"],
            out=tmp_path / "classes.tif",
            tile=64,
            overlap=16,
            batch=batch,
            progress=False,
        )
    calls = contention.engine_calls(256, 256, 64, 16, batch)
    expected = {f"{size}x64x64": count for size, count in calls.items()}
    assert summary.engine_shapes == {"optical+sar+dsm": expected}


def test_decoding_split_over_threads_reads_every_block_once(tmp_path: Path) -> None:
    files = scene_files(scene_paths(tmp_path / "w", 1024, 0, "s2like_clouds"))  # 4 blocks per raster
    import rasterio

    blocks = 0
    for path in files.values():
        with rasterio.open(path) as dataset:
            blocks += len(list(dataset.block_windows(1)))
    assert blocks == 4 * len(files)
    for threads in (1, 2, 3):
        decoders = contention.Decoders(files, threads)
        decoders.join()
        assert decoders.windows == blocks
        assert decoders.cpu_seconds > 0


def test_every_arrangement_times_both_parts_alone_and_at_once(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    folder = write_engine_folder(tmp_path / "engines")
    out = tmp_path / "contention.json"
    argv = ["--engines", str(folder), "--backend", "onnxruntime", "--precision", "fp32", "--size", "256"]
    argv += ["--tile", "64", "--overlap", "16", "--repeats", "1", "--workdir", str(tmp_path / "w")]
    assert contention.main([*argv, "--json", str(out)]) == 0
    record = json.loads(out.read_text())["contention"]
    assert set(record["arrangements"]) == set(contention.ARRANGEMENTS)
    for name, arrangement in record["arrangements"].items():
        assert arrangement["decoding_threads"] == contention.ARRANGEMENTS[name]["decoders"]
        both = arrangement["median"]["both"]
        assert both["decode_cpu_seconds"] > 0 and both["windows"] > 0
        assert both["engines_done_seconds"] <= both["wall_seconds"]
    runtime = record["arrangements"]["as the runtime runs them"]["median"]
    floor = (runtime["engines"]["cpu_seconds"] + runtime["decoding"]["cpu_seconds"]) / record["cores"]
    assert record["floor_seconds"] == pytest.approx(floor)
    assert record["bound"] == pytest.approx(floor / record["both_wall_seconds"])
