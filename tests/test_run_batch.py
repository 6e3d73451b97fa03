"""``stars-edge run-batch`` on real Dask: local clusters of 2 worker processes, tiny real engines, scenes.

Four scenes with different modality subsets, one of them corrupt. The good outputs must equal single-scene
``Predictor.predict_scene`` outputs byte for byte; the corrupt one fails alone; ``--resume`` skips verified
scenes, reruns altered ones and continues an interrupted scene from its journal; a worker process killed
in the middle of a scene is replaced and the scene still finishes.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Any

import cloudpickle
import distributed
import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from conftest import NO_TORCH_PRELUDE
from test_runtime_support import build_engines, make_physical, random_weights, write_raster

from runtime import Predictor
from runtime.batch import Scene, parse_assets, read_scenes, run_batch
from runtime.batch.summary import CSV_COLUMNS
from stars_edge.cli import main
from stars_edge.errors import ConfigError, DataError
from stars_edge.io import sha256_file

# Hooks defined here run on the workers, which cannot import this test module: ship them by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])

TRANSFORM = Affine(5.0, 0.0, 300000.0, 0.0, -5.0, 4600000.0)
TILE, OVERLAP = 32, 8
GOOD = ("full", "sar_only", "optical_dsm")
#: ``full`` spans more than one 256-row output block, so an interruption late in it leaves durable rows.
FULL_SHAPE = (320, 70)
FULL_PIXELS = FULL_SHAPE[0] * FULL_SHAPE[1]
#: Tile rows of ``full``: ceil((320 - 8) / 24) = 13; stopping after row 11 is past the first output block.
STOP_AFTER_ROW = 11
OUTPUTS = ("{}.tif", "{}.patterns.tif")


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engines(tmp_path_factory.mktemp("engines"), random_weights(classes=4), classes=4)


@pytest.fixture(scope="module")
def scenes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``scenes.csv`` (relative paths, empty cells) and its rasters: three modality subsets and a corrupt
    optical file."""
    folder = tmp_path_factory.mktemp("scenes")
    (folder / "data").mkdir()
    full = make_physical(FULL_SHAPE, seed=1)
    full["sar"][:, 30:60, 10:40] = np.nan
    write_raster(folder / "data" / "full_opt.tif", full["optical"], TRANSFORM)
    write_raster(folder / "data" / "full_sar.tif", full["sar"], TRANSFORM)
    write_raster(folder / "data" / "full_dsm.tif", full["dsm"], TRANSFORM)
    sar = make_physical((40, 50), seed=2)["sar"]
    write_raster(folder / "data" / "sar_only.tif", sar, TRANSFORM)
    opt_dsm = make_physical((48, 64), seed=3)
    clouds = np.zeros((1, 48, 64), dtype=np.uint8)
    clouds[0, :20, :30] = 1
    write_raster(folder / "data" / "od_opt.tif", opt_dsm["optical"], TRANSFORM)
    write_raster(folder / "data" / "od_dsm.tif", opt_dsm["dsm"], TRANSFORM)
    write_raster(folder / "data" / "od_clouds.tif", clouds, TRANSFORM)
    (folder / "data" / "broken.tif").write_bytes(b"II*\x00" + b"\x17" * 200)  # a TIFF header, then junk
    (folder / "scenes.csv").write_text(
        "id,optical,sar,dsm,cloud_mask\n"
        "full,data/full_opt.tif,data/full_sar.tif,data/full_dsm.tif,\n"
        "sar_only,,data/sar_only.tif,,\n"
        "broken,data/broken.tif,,,\n"
        "optical_dsm,data/od_opt.tif,,data/od_dsm.tif,data/od_clouds.tif\n"
    )
    return folder / "scenes.csv"


@pytest.fixture(scope="module")
def reference(engines: Path, scenes: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The good scenes run one by one with ``Predictor.predict_scene``, under the batch's file names."""
    out = tmp_path_factory.mktemp("reference")
    with Predictor(engines, backend="onnxruntime", threads=1) as predictor:
        for scene in read_scenes(scenes):
            if scene.id in GOOD:
                predictor.predict_scene(
                    optical=scene.optical,
                    sar=scene.sar,
                    dsm=scene.dsm,
                    cloud_mask=scene.cloud_mask,
                    out=out / f"{scene.id}.tif",
                    pattern_map=out / f"{scene.id}.patterns.tif",
                    tile=TILE,
                    overlap=OVERLAP,
                    progress=False,
                )
    return out


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """One local cluster (2 worker processes, 1 task thread each) shared by the Python-API tests."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0", silence_logs=logging.ERROR
    ) as local:
        yield local


def _main(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    return int(exit_info.value.code or 0)


def _batch(engines: Path, scenes: Path | list[Scene], out: Path, cluster: Any, **kwargs: Any) -> Any:
    return run_batch(
        engines,
        scenes,
        out,
        scheduler=cluster.scheduler_address,
        backend="onnxruntime",
        tile=TILE,
        overlap=OVERLAP,
        progress=False,
        log=None,
        **kwargs,
    )


def _assert_same_outputs(
    out: Path, reference: Path, ids: tuple[str, ...] = GOOD, resumed: tuple[str, ...] = ()
) -> None:
    """Same pixels, grid and tags; the same bytes too, except for scenes resumed in a partial GeoTIFF
    (GDAL lays out a file reopened for update differently; the runtime promises equal arrays there)."""
    for scene_id in ids:
        for pattern in OUTPUTS:
            name = pattern.format(scene_id)
            with rasterio.open(out / name) as got, rasterio.open(reference / name) as want:
                np.testing.assert_array_equal(got.read(), want.read())
                assert got.transform == want.transform and got.crs == want.crs
                assert got.tags() == want.tags()
            if scene_id not in resumed:
                assert sha256_file(out / name) == sha256_file(reference / name), name


def _statuses(result: Any) -> dict[str, str]:
    return {scene.id: scene.status for scene in result.scenes}


@pytest.fixture(scope="module")
def cli_run(
    engines: Path, scenes: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    """The issue's run: ``stars-edge run-batch --workers 2`` (its own local cluster) over the four scenes."""
    out = tmp_path_factory.mktemp("batch")
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = _main(
            [
                "run-batch",
                "--engines",
                str(engines),
                "--scenes",
                str(scenes),
                "--out-dir",
                str(out),
                "--workers",
                "2",
                "--threads",
                "1",
                "--tile",
                str(TILE),
                "--overlap",
                str(OVERLAP),
                "--backend",
                "onnxruntime",
                "--dashboard-address",
                ":0",
                "--no-progress",
            ]
        )
    yield {"code": code, "out": out, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def test_cli_batch_equals_single_scene_runs_and_fails_the_corrupt_scene(
    cli_run: dict[str, Any], reference: Path
) -> None:
    out = cli_run["out"]
    assert cli_run["code"] == 1
    _assert_same_outputs(out, reference)
    assert not (out / "broken.tif").exists() and not list(out.glob(".*partial"))
    with (out / "summary.csv").open() as handle:
        rows = {row["id"]: row for row in csv.DictReader(handle)}
    assert list(rows) == ["full", "sar_only", "broken", "optical_dsm"]  # the list's order
    assert {k: r["status"] for k, r in rows.items()} == {
        "full": "done",
        "sar_only": "done",
        "broken": "failed",
        "optical_dsm": "done",
    }
    assert "broken.tif" in rows["broken"]["error"] and "\n" not in rows["broken"]["error"]
    assert rows["full"]["pixels"] == str(FULL_PIXELS) and float(rows["full"]["mpx_per_s"]) > 0
    assert int(rows["sar_only"]["pixels_sar"]) == 40 * 50
    pattern_pixels = sum(int(rows["full"][f"pixels_{p}"]) for p in ("optical+sar+dsm", "optical+dsm"))
    assert pattern_pixels == FULL_PIXELS
    assert list(rows["full"]) == list(CSV_COLUMNS)
    assert "broken: failed" in cli_run["stderr"] and "Dask dashboard: http" in cli_run["stderr"]
    assert "3 done, 0 skipped, 1 failed" in cli_run["stdout"]


def test_each_worker_process_loads_the_engines_once(cli_run: dict[str, Any]) -> None:
    summary = json.loads((cli_run["out"] / "summary.json").read_text())
    scenes = summary["scenes"]
    workers = {s["worker"] for s in scenes}
    assert 1 <= len(workers) <= 2 and summary["settings"]["resume"] is False
    for worker in workers:
        assert sum(s["engines_loaded"] for s in scenes if s["worker"] == worker) == 1, worker
    assert summary["totals"]["done"] == 3 and summary["totals"]["failed"] == 1


def test_resume_skips_verified_scenes_and_reruns_an_altered_one(
    cli_run: dict[str, Any], engines: Path, scenes: Path, reference: Path, cluster: Any
) -> None:
    out = cli_run["out"]
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")}
    result = _batch(engines, scenes, out, cluster, resume=True)
    assert _statuses(result) == {
        "full": "skipped",
        "sar_only": "skipped",
        "broken": "failed",
        "optical_dsm": "skipped",
    }
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.tif")} == before
    recorded = json.loads(result.summary_json.read_text())["settings"]
    assert recorded["scheduler"] == cluster.scheduler_address and recorded["resume"] is True
    skipped = next(s for s in result.scenes if s.id == "full")
    assert skipped.pixels == FULL_PIXELS and skipped.pattern_pixels

    # Same size and georeferencing, one byte changed: only the stored checksum tells.
    altered = out / "sar_only.patterns.tif"
    data = bytearray(altered.read_bytes())
    data[-1] ^= 0xFF
    altered.write_bytes(bytes(data))
    result = _batch(engines, scenes, out, cluster, resume=True)
    assert _statuses(result)["sar_only"] == "done"
    assert [s.status for s in result.scenes if s.id != "sar_only"] == ["skipped", "failed", "skipped"]
    _assert_same_outputs(out, reference)

    # Other settings make other bytes: nothing is skipped.
    result = _batch(
        engines,
        [s for s in read_scenes(scenes) if s.id == "sar_only"],
        out,
        cluster,
        resume=True,
        min_valid=0.5,
    )
    assert _statuses(result) == {"sar_only": "done"}


def test_resume_reruns_a_scene_whose_input_grid_moved(engines: Path, cluster: Any, tmp_path: Path) -> None:
    """An input replaced by one on another grid, with the same size and mtime, fails the grid check."""
    sar = make_physical((40, 50), seed=4)["sar"]
    path = write_raster(tmp_path / "sar.tif", sar, TRANSFORM)
    scene = [Scene("moved", sar=str(path))]
    assert _batch(engines, scene, tmp_path / "out", cluster).ok
    stat = path.stat()
    write_raster(tmp_path / "moved.tif", sar, TRANSFORM @ Affine.translation(3, 0)).replace(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size
    again = _batch(engines, scene, tmp_path / "out", cluster, resume=True)
    assert _statuses(again) == {"moved": "done"}


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
    first = _batch(engines, good, tmp_path, cluster, on_row_done=functools.partial(_interrupt, target="full"))
    full = next(s for s in first.scenes if s.id == "full")
    assert full.status == "failed" and "Interrupt: stopped full" in full.error
    assert list(tmp_path.glob(".full.tif*journal*")) and not (tmp_path / "full.tif").exists()
    assert not first.ok

    second = _batch(engines, good, tmp_path, cluster, resume=True)
    assert _statuses(second) == {"full": "done", "sar_only": "skipped", "optical_dsm": "skipped"}
    resumed = next(s for s in second.scenes if s.id == "full")
    assert 0 < resumed.resumed_from_row <= STOP_AFTER_ROW and resumed.processed_pixels < resumed.pixels
    assert second.ok
    _assert_same_outputs(tmp_path, reference, resumed=("full",))


def test_killed_worker_mid_scene_still_finishes_every_good_scene(
    engines: Path, scenes: Path, reference: Path, cluster: Any, tmp_path: Path
) -> None:
    marker = tmp_path / "killed.pid"
    hook = functools.partial(_kill_own_worker_once, target="full", marker=str(marker))
    out = tmp_path / "out"
    result = _batch(engines, scenes, out, cluster, on_row_done=hook)
    assert marker.is_file()  # a worker process really died in the middle of "full"
    assert _statuses(result) == {
        "full": "done",
        "sar_only": "done",
        "broken": "failed",
        "optical_dsm": "done",
    }
    full = next(s for s in result.scenes if s.id == "full")
    assert full.worker.rsplit(":", 1)[1] != marker.read_text()  # finished by another process
    _assert_same_outputs(out, reference)


def test_cog_outputs_are_cloud_optimized(engines: Path, scenes: Path, cluster: Any, tmp_path: Path) -> None:
    chosen = [s for s in read_scenes(scenes) if s.id == "full"]
    result = _batch(engines, chosen, tmp_path, cluster, cog=True, probabilities=True)
    assert result.ok
    for name in ("full.tif", "full.patterns.tif", "full.probabilities.tif"):
        with rasterio.open(tmp_path / name) as dataset:
            assert dataset.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG", name
            assert dataset.tags()["STARS_TILE"] == str(TILE)
    again = _batch(engines, chosen, tmp_path, cluster, cog=True, probabilities=True, resume=True)
    assert _statuses(again) == {"full": "skipped"}


def test_scene_lists_csv_and_stac(scenes: Path, tmp_path: Path) -> None:
    listed = read_scenes(scenes)
    assert [s.id for s in listed] == ["full", "sar_only", "broken", "optical_dsm"]
    assert listed[1].modalities == ("sar",) and listed[1].optical is None
    assert listed[3].cloud_mask == str(scenes.parent / "data" / "od_clouds.tif")

    import datetime

    items = []
    for scene in listed:
        item = pystac.Item(scene.id, None, None, datetime.datetime(2026, 1, 1), {})
        if scene.optical:
            item.add_asset("visual", pystac.Asset(os.path.relpath(scene.optical, tmp_path)))
        if scene.sar:
            item.add_asset("vv_vh", pystac.Asset(scene.sar))
        items.append(item)
    stac = tmp_path / "items.json"
    pystac.ItemCollection(items).save_object(dest_href=str(stac))
    mapped = read_scenes(stac, parse_assets(["optical=visual", "sar=vv_vh"]))
    assert [(s.id, s.optical, s.sar) for s in mapped] == [(s.id, s.optical, s.sar) for s in listed]
    with pytest.raises(ConfigError, match="--asset"):
        read_scenes(stac)  # no asset is named "optical" or "sar"
    with pytest.raises(ConfigError, match="KIND=ASSET_KEY"):
        parse_assets(["clouds=x"])
    (tmp_path / "item.json").write_text('{"type": "Feature", "id": "x"}')
    with pytest.raises(DataError, match="not a STAC ItemCollection"):
        read_scenes(tmp_path / "item.json")


def test_batch_runs_scenes_without_torch(engines: Path, scenes: Path, tmp_path: Path) -> None:
    """A worker on a device without PyTorch: block torch, import Dask and the batch code, run a scene."""
    script = (
        NO_TORCH_PRELUDE
        + f"""
import distributed, runtime.batch, stars_edge.commands.run_batch
from runtime.batch import BatchSettings, read_scenes, run_scene
from stars_edge.io import sha256_file
scene = next(s for s in read_scenes({str(scenes)!r}) if s.id == "sar_only")
settings = BatchSettings({str(engines)!r}, sha256_file({str(engines / "manifest.json")!r}), {str(tmp_path)!r},
                         backend="onnxruntime", threads=1, tile=32, overlap=8)
result = run_scene(scene, settings)
assert result.status == "done", result.error
assert "torch" not in sys.modules
print("ok")
"""
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("ok")


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        ("id,optical,sar\na,x.tif,\na,y.tif,\n", ConfigError, "appears twice"),
        ("id,opitcal\na,x.tif\n", ConfigError, "header must be"),
        ("id,optical\n../up,x.tif\n", ConfigError, "safe file name"),
        ("id,optical,sar\na,,\n", ConfigError, "no optical, sar or dsm"),
        ("id,sar,cloud_mask\na,s.tif,c.tif\n", ConfigError, "cloud_mask but no optical"),
        ("id,optical\n", DataError, "lists no scene"),
    ],
)
def test_bad_scene_lists_fail_before_any_work(tmp_path: Path, text: str, error: type, match: str) -> None:
    (tmp_path / "s.csv").write_text(text)
    with pytest.raises(error, match=match):
        read_scenes(tmp_path / "s.csv")


def test_cli_refuses_workers_with_a_scheduler(
    engines: Path, scenes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run-batch", "--engines", str(engines), "--scenes", str(scenes), "--out-dir", str(tmp_path)]
    assert _main([*argv, "--workers", "2", "--scheduler", "tcp://127.0.0.1:1"]) == 1
    assert "drop them with --scheduler" in capsys.readouterr().err
    assert _main([*argv, "--tile", "30"]) == 1
    assert "--tile must be a positive multiple of 32" in capsys.readouterr().err


def test_batch_benchmark_smoke(engines: Path, tmp_path: Path) -> None:
    """``benchmarks/batch.py`` end to end at the smallest size: every mode runs, the maps agree."""
    root = str(Path(__file__).resolve().parents[1])
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks import batch as bench

    plan = bench.build_parser().parse_args(
        ["--engines", str(engines), "--scenes", "2", "--size", "64", "--tile", "32", "--overlap", "8"]
    )
    plan.workers, plan.repeats, plan.workdir = (1,), 1, tmp_path
    result = bench.run_benchmark(plan, echo=lambda message: None)
    modes = {row["mode"]: row for row in result["rows"]}
    assert set(modes) == {"sequential_cli", "sequential_inprocess", "batch_w1"}
    assert modes["batch_w1"]["class_maps_identical_to_sequential"] is True
    assert all(row["scenes_per_minute"] > 0 and row["mpx_per_s"] > 0 for row in result["rows"])
    assert [s["modalities"] for s in result["scenes"]] == ["optical+sar+dsm", "optical+sar"]
    assert "| batch_w1 | 1 |" in bench.render_markdown(result)


def test_bands_and_a_terrain_model_reach_every_scene(
    engines: Path, scenes: Path, reference: Path, cluster: Any, tmp_path: Path
) -> None:
    """A ``dtm`` column and ``--bands``: optical stored in reverse band order, the DSM as altitude over
    a 300 m terrain; the batch gives the reference maps of the plain inputs."""
    data = scenes.parent / "data"
    with rasterio.open(data / "od_opt.tif") as dataset:
        reversed_optical = dataset.read()[::-1]
    with rasterio.open(data / "od_dsm.tif") as dataset:
        heights = dataset.read()
    write_raster(tmp_path / "opt_reversed.tif", reversed_optical, TRANSFORM)
    write_raster(tmp_path / "altitude.tif", heights + 300.0, TRANSFORM)
    write_raster(tmp_path / "dtm.tif", np.full_like(heights, 300.0), TRANSFORM)
    listing = tmp_path / "scenes.csv"
    listing.write_text(
        "id,optical,dsm,cloud_mask,dtm\n"
        f"optical_dsm,opt_reversed.tif,altitude.tif,{data / 'od_clouds.tif'},dtm.tif\n"
    )
    result = _batch(engines, listing, tmp_path / "out", cluster, bands={"optical": ("4", "3", "2", "1")})
    assert result.count("done") == 1, [r.error for r in result.scenes]
    for name in ("optical_dsm.tif", "optical_dsm.patterns.tif"):
        with rasterio.open(tmp_path / "out" / name) as got, rasterio.open(reference / name) as expected:
            assert np.array_equal(got.read(), expected.read())
    _batch(engines, listing, tmp_path / "again", cluster)  # without --bands the bands stay reversed
    again, plain = tmp_path / "again" / "optical_dsm.tif", reference / "optical_dsm.tif"
    with rasterio.open(again) as got, rasterio.open(plain) as expected:
        assert not np.array_equal(got.read(), expected.read())


def test_real_chips_run_in_a_batch(engines: Path, shared_data: Path, cluster: Any, tmp_path: Path) -> None:
    """Sen1Floods11 S1 (VV,VH dB) alone, and with the S2 chip given its scale tag and --bands 2,3,4,8."""
    folder = shared_data / "sen1floods11_sample"
    s2, s1 = folder / "Spain_7370579_S2Hand.tif", folder / "Spain_7370579_S1Hand.tif"
    if not (s2.is_file() and s1.is_file()):
        pytest.skip(f"Sen1Floods11 chip not found in {folder}")
    with rasterio.open(s2) as dataset:
        profile, data = dataset.profile, dataset.read()
    with rasterio.open(tmp_path / "s2.tif", "w", **profile) as out:
        out.write(data)
        out.scales = (1e-4,) * data.shape[0]
    listing = tmp_path / "scenes.csv"
    listing.write_text(f"id,optical,sar\nsar_only,,{s1}\nboth,s2.tif,{s1}\n")
    result = _batch(engines, listing, tmp_path / "out", cluster, bands={"optical": ("2", "3", "4", "8")})
    assert result.count("done") == 2, [r.error for r in result.scenes]
