"""Benchmark harness: the end-to-end part of ``benchmarks/latency.py`` (``predict_scene`` on synthetic and
Sentinel-2-like scenes, clean, cloudy and with gaps) and its CPU floor and arrays metrics (issue 21).

Nothing here asserts a speed: timings on a shared 2-core machine are noise. The tests check that the harness
measures what it documents and that each fraction is made of its parts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from latency_models import write_engine_folder  # noqa: E402

from benchmarks import latency  # noqa: E402
from stars_edge.modalities import DEFAULT_SPECS  # noqa: E402


@pytest.fixture(scope="module")
def engine_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A manifest with fp32 engines for all 7 patterns (the runtime needs them all) and int8 ones for the
    full pattern and for ``sar`` (``latency_models.write_engine_folder``)."""
    return write_engine_folder(tmp_path_factory.mktemp("engines"))


def test_quick_run_measures_the_streaming_runtime_end_to_end(engine_folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("rasterio")
    out = tmp_path / "latency_e2e.json"
    argv = [
        "--engines", str(engine_folder), "--tile", "64", "--batch", "4", "--threads", "1", "--quick",
        "--precision", "fp32", "--e2e-size", "128,256", "--overlap", "16", "--backends", "openvino",
        "--workdir", str(tmp_path / "work"), "--json", str(out),
    ]  # fmt: skip
    assert latency.main(argv) == 0
    e2e = json.loads(out.read_text())["e2e"]
    assert e2e["precision"] == "fp32" and e2e["tile"] == 64 and e2e["overlap"] == 16
    # without --e2e-batch the scene runs at the runtime's own default (4 tiles per call on OpenVINO)
    assert e2e["batch"] == 4 and e2e["batch_source"] == "the runtime's default"
    assert [run["size"] for run in e2e["runs"]] == [128, 256]
    for run in e2e["runs"]:
        assert run["tiles"] == run["summary"]["tiles"] > 0
        # a fully valid three-modality scene runs the full-pattern engine on every tile, once
        assert run["engine_runs"] == {"optical+sar+dsm": run["tiles"]}
        assert run["mpx_per_s"] == pytest.approx(run["size"] ** 2 / 1e6 / run["predict_s"])
        assert run["peak_rss_mib"] > 10 and run["sampled_peak_rss_mib"] > 10
        assert run["engine_busy_fraction"] > 0 and run["fraction_of_engine_only"] > 0
        assert set(run["stages"]) >= {"read", "inference", "write"}
    assert (tmp_path / "work" / "e2e_256" / "prediction.tif").is_file()


@pytest.fixture(scope="module")
def s2like_run(engine_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One quick run on the Sentinel-2-like scene (128 and 256 px, and the cloudy variant at 256 px): its
    JSON and its work folder, shared by the tests that read it."""
    pytest.importorskip("rasterio")
    folder = tmp_path_factory.mktemp("s2like")
    out = folder / "latency_s2.json"
    argv = [
        "--engines", str(engine_folder), "--tile", "64", "--batch", "1", "--threads", "1", "--quick",
        "--precision", "fp32", "--e2e-size", "256", "--e2e-scene", "s2like", "--overlap", "16",
        "--e2e-batch", "1", "--backends", "openvino", "--patterns", "optical+sar+dsm", "--gdal-threads", "2",
        "--workdir", str(folder / "work"), "--json", str(out),
    ]  # fmt: skip
    assert latency.main(argv) == 0
    return json.loads(out.read_text()), folder / "work"


def test_end_to_end_on_a_sentinel2_like_scene_decodes_compressed_uint16(
    s2like_run: tuple[dict[str, Any], Path],
) -> None:
    import rasterio

    result, work = s2like_run
    e2e = result["e2e"]
    assert e2e["scene"] == "s2like" and e2e["gdal_num_threads"] == "2" and e2e["backend"] == "openvino"
    assert e2e["scenes"] == ["s2like", "s2like_clouds"]
    assert [(r["scene"], r["size"]) for r in e2e["runs"]] == [
        ("s2like", 128), ("s2like", 256), ("s2like_clouds", 256)
    ]  # fmt: skip
    (run,) = [r for r in e2e["runs"] if r["size"] == 256 and r["scene"] == "s2like"]
    assert (
        run["tiles"] > 0 and run["engine_busy_fraction"] > 0 and set(run["stages"]) >= {"read", "inference"}
    )
    optical = next(work.glob("scene_256_seed0_s2like/optical*.tif"))
    with rasterio.open(optical) as dataset:
        assert dataset.dtypes[0] == "uint16" and dataset.scales[0] == pytest.approx(1e-4)
        structure = dataset.tags(ns="IMAGE_STRUCTURE")
        assert structure["COMPRESSION"] == "DEFLATE" and structure["PREDICTOR"] == "2"
        assert dataset.block_shapes[0] == (512, 512)
    # the cloudy variant: the same storage, and its cloud mask stored as a product's (uint8, DEFLATE)
    with rasterio.open(work / "scene_256_seed0_s2like_clouds" / "cloud_mask.tif") as dataset:
        clouds = dataset.read(1)
        assert dataset.dtypes[0] == "uint8" and dataset.tags(ns="IMAGE_STRUCTURE")["COMPRESSION"] == "DEFLATE"
    assert 0.02 < float((clouds > 0).mean()) < 0.3
    (cloudy,) = [r for r in e2e["runs"] if r["scene"] == "s2like_clouds"]
    # clouded optical pixels fall back to sar+dsm: a second pattern runs
    assert cloudy["summary"]["pattern_pixels"].get("sar+dsm", 0) > 0 and len(cloudy["engine_runs"]) >= 2


def _files_blocks(paths: dict[str, str]) -> dict[str, tuple[int, int]]:
    """Block windows and bands of each raster, counted independently of the benchmark."""
    import rasterio

    counts = {}
    for name, path in paths.items():
        with rasterio.open(path) as dataset:
            counts[name] = (len(list(dataset.block_windows(1))), dataset.count)
    return counts


def test_floor_and_arrays_fractions_are_recorded_for_the_clean_and_the_cloudy_scene(
    s2like_run: tuple[dict[str, Any], Path],
) -> None:
    """Issue 21: ``floor_fraction`` = (engine-only CPU of the runs needed + decoding every block once) /
    cores / wall, and ``arrays_fraction`` = engine-only wall / ``predict_arrays`` wall, both recomputed here
    from their parts, so an omitted term (e.g. the decode time) fails the test."""
    import math

    result, work = s2like_run
    e2e = result["e2e"]
    assert e2e["batch"] == 1 and e2e["batch_source"] == "--e2e-batch"
    assert set(e2e["floor_fraction"]) == set(e2e["arrays_fraction"]) == {"s2like", "s2like_clouds"}
    for scene in ("s2like", "s2like_clouds"):
        for key in ("floor_fraction", "arrays_fraction"):
            value = e2e[key][scene]
            assert math.isfinite(value) and 0 < value <= 1.5, (scene, key, value)
    cores = result["machine"]["usable_cores"]
    bands = sum(DEFAULT_SPECS[m].bands for m in ("optical", "sar", "dsm"))
    for run in e2e["runs"]:
        folder = work / f"scene_{run['size']}_seed0_{run['scene']}"
        inputs = {"optical": "optical.tif", "sar": "sar.tif", "dsm": "dsm.tif"}
        if run["scene"] == "s2like_clouds":
            inputs["cloud_mask"] = "cloud_mask.tif"
        # decoding covered every block window of every input, cloud mask included, once
        decode = run["decode_once"]
        expected = _files_blocks({k: str(folder / v) for k, v in inputs.items()})
        assert {k: (r["block_windows"], r["bands"]) for k, r in decode["rasters"].items()} == expected
        assert decode["blocks"] == sum(w * b for w, b in expected.values())
        assert decode["cpu_seconds"] > 0
        assert decode["cpu_seconds"] == pytest.approx(
            sum(r["cpu_seconds"] for r in decode["rasters"].values())
        )
        # engine-only time of exactly the engine runs the scene took, per pattern, by pixels at the run's tile
        engine = run["engine_only"]
        tile = e2e["tile"]
        assert set(engine["per_pattern"]) == set(run["engine_runs"])
        for name, part in engine["per_pattern"].items():
            assert part["runs"] == run["engine_runs"][name]
            assert part["pixels"] == run["summary"]["engine_pixels"][name]
            assert part["tile_equivalents"] == pytest.approx(part["pixels"] / tile**2)
            assert part["whole_tiles_only"] == (part["pixels"] == part["runs"] * tile**2)
            assert part["cpu_ms_per_tile"] > 0 and part["wall_ms_per_tile"] > 0 and part["calls_timed"] >= 10
            assert part["cpu_seconds"] == pytest.approx(
                part["tile_equivalents"] * part["cpu_ms_per_tile"] / 1e3
            )
            assert part["wall_seconds"] == pytest.approx(
                part["tile_equivalents"] * part["wall_ms_per_tile"] / 1e3
            )
        assert engine["cpu_seconds"] == pytest.approx(
            sum(p["cpu_seconds"] for p in engine["per_pattern"].values())
        )
        # every call shape the run made was timed on its own
        shapes = run["summary"]["engine_shapes"]
        timed = {n: {k: r["calls"] for k, r in p["shapes"].items()} for n, p in engine["per_pattern"].items()}
        assert timed == shapes
        count = sum(len(calls) for calls in shapes.values())
        assert engine["shapes"] == f"exact: timed per call shape ({count} shapes)"
        # the floor: both terms, over the usable cores, against the scene's wall time
        floor = run["floor"]
        assert floor["engine_cpu_seconds"] == pytest.approx(engine["cpu_seconds"])
        assert floor["decode_cpu_seconds"] == pytest.approx(decode["cpu_seconds"])
        assert floor["cores"] == cores
        assert floor["floor_seconds"] == pytest.approx(
            (engine["cpu_seconds"] + decode["cpu_seconds"]) / cores
        )
        assert run["floor_fraction"] == pytest.approx(floor["floor_seconds"] / run["predict_s"])
        # a second scene in the same process: the same floor against its own wall time
        warm = run["floor_warm"]
        assert warm["floor_seconds"] == pytest.approx(floor["floor_seconds"])
        assert run["predict_warm_s"] > 0 and run["cpu_warm_s"] > 0
        assert warm["wall_seconds"] == pytest.approx(run["predict_warm_s"])
        assert run["floor_fraction_warm"] == pytest.approx(floor["floor_seconds"] / run["predict_warm_s"])
        assert not list(folder.parent.glob("e2e_*/*_warm.tif"))  # the second scene's outputs removed
        # the arrays run: the same scene in memory, the same patterns, the same engine-only time
        arrays = run["arrays"]
        assert arrays["pattern_pixels_match_file_run"]
        assert arrays["pattern_pixels"] == run["summary"]["pattern_pixels"]
        assert arrays["wall_seconds"] > 0 and arrays["array_bytes"] == run["size"] ** 2 * bands * 4
        assert run["arrays_fraction"] == pytest.approx(engine["wall_seconds"] / arrays["wall_seconds"])
        assert arrays["warm_same_maps"] and arrays["warm_wall_seconds"] > 0
        assert run["arrays_fraction_warm"] == pytest.approx(
            engine["wall_seconds"] / arrays["warm_wall_seconds"]
        )
        # the rows run: the same arrays as a sensor's stream, the same bytes, rows held bounded by the tile
        rows = arrays["rows"]
        assert rows["same_maps_as_arrays"] and rows["wall_seconds"] > 0
        assert 0 < rows["peak_input_rows"] <= min(run["size"], 64 + rows["block_rows"])
        assert rows["rows_fraction"] == pytest.approx(engine["wall_seconds"] / rows["wall_seconds"])
    largest = {r["scene"]: r for r in e2e["runs"] if r["size"] == 256}
    assert e2e["floor_fraction"] == {s: r["floor_fraction"] for s, r in largest.items()}
    assert e2e["arrays_fraction"] == {s: r["arrays_fraction"] for s, r in largest.items()}
    assert e2e["floor_fraction_warm"] == {s: r["floor_fraction_warm"] for s, r in largest.items()}
    assert e2e["arrays_fraction_warm"] == {s: r["arrays_fraction_warm"] for s, r in largest.items()}
    targets = {t["target"]: t for t in result["targets"]}
    for name in (
        "CPU floor >= 80 % of wall, clean S2-like scene",
        "CPU floor >= 80 % of wall, cloudy S2-like scene",
        "from arrays: engine-only >= 70 % of wall, clean S2-like scene",
    ):
        assert targets[name]["measured"] is not None and targets[name]["verdict"] in ("PASS", "MISS")
    assert targets["CPU floor >= 80 % of wall, cloudy S2-like scene"]["measured"] == pytest.approx(
        e2e["floor_fraction"]["s2like_clouds"]
    )
    markdown = (work.parent / "latency_s2.md").read_text()
    assert "| s2like_clouds | 256 |" in markdown and "decode-once CPU" in markdown
    assert "a second scene in the same process" in markdown
    assert "predict_arrays again on the same predictor" in markdown


def test_decode_once_reads_every_block_window_once_and_the_floor_adds_both_terms(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rasterio = pytest.importorskip("rasterio")
    from rasterio.io import DatasetReader

    from benchmarks.latency_floor import cpu_floor, decode_once

    path = tmp_path / "tiled.tif"
    profile = {
        "driver": "GTiff", "width": 160, "height": 96, "count": 3, "dtype": "uint16", "tiled": True,
        "blockxsize": 32, "blockysize": 32, "compress": "deflate", "predictor": 2, "crs": "EPSG:32631",
        "transform": rasterio.Affine(1.0, 0.0, 500000.0, 0.0, -1.0, 5000000.0),
    }  # fmt: skip
    with rasterio.open(path, "w", **profile) as dataset:
        dataset.write(np.arange(3 * 96 * 160, dtype=np.uint16).reshape(3, 96, 160))
    reads: list[tuple[int, int, int, int]] = []
    shapes: set[tuple[int, ...]] = set()
    original = DatasetReader.read

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        window = kwargs["window"]
        reads.append((window.row_off, window.col_off, window.height, window.width))
        data = original(self, *args, **kwargs)
        shapes.add(data.shape)
        return data

    monkeypatch.setattr(DatasetReader, "read", spy)
    decode = decode_once({"optical": path})
    # 3 x 5 block windows, each read once with all its bands
    assert len(reads) == len(set(reads)) == 15
    assert shapes == {(3, 32, 32)}  # every band of the block
    assert decode["rasters"]["optical"]["block_windows"] == 15 and decode["blocks"] == 45
    assert decode["rasters"]["optical"]["compression"] == "DEFLATE" and decode["cpu_seconds"] > 0
    floor = cpu_floor({"cpu_seconds": 3.0}, {"cpu_seconds": 1.0}, wall_seconds=4.0, cores=2)
    assert floor["floor_seconds"] == pytest.approx(2.0) and floor["floor_fraction"] == pytest.approx(0.5)


def test_end_to_end_on_a_scene_with_gaps_runs_several_engines(engine_folder: Path, tmp_path: Path) -> None:
    pytest.importorskip("rasterio")
    out = tmp_path / "latency_gaps.json"
    argv = [
        "--engines", str(engine_folder), "--tile", "64", "--batch", "1", "--threads", "1", "--quick",
        "--precision", "fp32", "--e2e-size", "256,512", "--e2e-scene", "gaps", "--overlap", "16",
        "--backends", "openvino", "--e2e-arrays-max-size", "256",
        "--workdir", str(tmp_path / "work"), "--json", str(out),
    ]  # fmt: skip
    assert latency.main(argv) == 0
    e2e = json.loads(out.read_text())["e2e"]
    assert e2e["scene"] == "gaps" and e2e["scenes"] == ["gaps"]  # no cloudy variant of its own
    # every run has its floor; only the runs up to --e2e-arrays-max-size are repeated from arrays
    assert set(e2e["floor_fraction"]) == set(e2e["arrays_fraction"]) == {"gaps"}
    small, large = e2e["runs"]
    assert small["arrays_fraction"] > 0 and small["floor_fraction"] > 0 and large["floor_fraction"] > 0
    assert "arrays" not in large and "--e2e-arrays-max-size 256" in large["arrays_skipped"]
    assert e2e["arrays_fraction"]["gaps"] == small["arrays_fraction"]
    largest = e2e["runs"][-1]
    pixels = largest["summary"]["pattern_pixels"]
    # the SAR swath and the clouds leave pixels where only some modalities are valid
    assert pixels.get("optical+sar+dsm", 0) > 0 and len([p for p in pixels if p != "none"]) >= 2
    assert sum(largest["engine_runs"].values()) >= largest["tiles"]
    # every pattern the runtime ran has an engine-only row, so the busy fraction is computed; with the floor
    # measured, from the run's own engine calls timed per input shape (windows at their own shapes)
    assert largest["engine_busy_fraction"] > 0
    assert largest["engine_seconds"] == largest["engine_only"]["wall_seconds"]
    assert "per input shape" in largest["engine_seconds_source"]


def test_end_to_end_failure_is_one_line_naming_the_cause(
    engine_folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("rasterio")
    argv = [
        "--engines", str(engine_folder), "--tile", "64", "--batch", "1", "--threads", "1", "--quick",
        "--precision", "fp32", "--e2e-size", "64", "--e2e-precision", "int8", "--overlap", "0",
        "--backends", "openvino",
        "--workdir", str(tmp_path / "work"), "--json", str(tmp_path / "out.json"),
    ]  # fmt: skip
    assert latency.main(argv) == 1
    error = capsys.readouterr().err.strip().splitlines()[-1]
    # only two patterns have int8 engines; the runtime needs all seven for a three-modality scene
    assert error.startswith("error: end-to-end run on") and "has no engine for" in error
    assert not (tmp_path / "out.json").exists()


#: Calls per input shape of a cloudy run: whole-tile batches of the full pattern, and sar+dsm windows.
CLOUDY_SHAPES = {
    "optical+sar+dsm": {"2x64x64": 3, "1x64x64": 1},
    "sar+dsm": {"1x32x64": 4, "1x32x32": 2, "1x64x64": 1},
}


def _runs_and_pixels(shapes: dict[str, dict[str, int]]) -> tuple[dict[str, int], dict[str, int]]:
    runs, pixels = {}, {}
    for name, calls in shapes.items():
        parsed = [(tuple(int(v) for v in key.split("x")), count) for key, count in calls.items()]
        runs[name] = sum(b * count for (b, _, _), count in parsed)
        pixels[name] = sum(b * h * w * count for (b, h, w), count in parsed)
    return runs, pixels


def test_engine_only_times_every_call_shape_of_the_run(
    engine_folder: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``engine_shapes`` every shape is fed to its engine and timed on its own: each shape's time is
    its calls x its median per call, the floor their sum; first calls at new shapes are reported apart."""
    from benchmarks.latency_engine_only import engine_only
    from benchmarks.markdown import where_time_goes
    from runtime.engines import EngineSet
    from stars_edge.manifest import load_manifest

    fed: list[tuple[str, tuple[int, int, int]]] = []
    original = EngineSet.run

    def spy(self: EngineSet, pattern: Any, inputs: Any) -> Any:
        sizes = {a.shape[:1] + a.shape[2:] for a in inputs.values()}
        assert len(sizes) == 1  # every modality of a call has the call's shape
        fed.append((pattern.name, sizes.pop()))
        return original(self, pattern, inputs)

    monkeypatch.setattr(EngineSet, "run", spy)
    manifest = load_manifest(engine_folder)
    runs, pixels = _runs_and_pixels(CLOUDY_SHAPES)
    timing = {"warmup": 1, "min_runs": 3, "max_runs": 4, "min_seconds": 0.0}
    engine = engine_only(
        manifest, "openvino", "fp32", 1, runs, pixels, 64, 2, timing, engine_shapes=CLOUDY_SHAPES
    )
    assert engine["shapes"] == "exact: timed per call shape (5 shapes)"
    # each pattern's shapes, most-called first, each on inputs of its own shape
    order = [(n, tuple(int(v) for v in k.split("x"))) for n, c in CLOUDY_SHAPES.items() for k in c]
    assert list(dict.fromkeys(fed)) == order
    steady_total = first_total = 0.0
    for name, part in engine["per_pattern"].items():
        assert part["runs"] == runs[name] and part["pixels"] == pixels[name]
        rows = part["shapes"]
        assert {k: r["calls"] for k, r in rows.items()} == CLOUDY_SHAPES[name]
        for position, row in enumerate(rows.values()):
            assert row["timed"] and row["calls_timed"] >= 3 and row["wall_ms_per_call"] > 0
            assert row["cpu_seconds"] == pytest.approx(row["calls"] * row["cpu_ms_per_call"] / 1e3)
            assert row["wall_seconds"] == pytest.approx(row["calls"] * row["wall_ms_per_call"] / 1e3)
            # the most-called shape loads the engine; every further one is a first call at a new shape
            assert (row["first_call_s"] is None) == (position == 0)
            if position:
                first_total += row["first_call_s"] - row["wall_ms_per_call"] / 1e3
        assert part["cpu_seconds"] == pytest.approx(sum(r["cpu_seconds"] for r in rows.values()))
        assert part["wall_seconds"] == pytest.approx(sum(r["wall_seconds"] for r in rows.values()))
        assert part["load_and_first_call_s"] > 0
        steady_total += part["cpu_seconds"]
    assert engine["cpu_seconds"] == pytest.approx(steady_total)
    assert engine["first_call_seconds_total"] == pytest.approx(first_total)
    run = {
        "size": 128, "predict_s": 1.0, "mpx_per_s": 0.016, "engine_only": engine,
        "floor": {"engine_cpu_seconds": 0.1, "decode_cpu_seconds": 0.1, "cores": 2, "floor_seconds": 0.1,
                  "floor_fraction": 0.1},
    }  # fmt: skip
    printed = "\n".join(where_time_goes(run))
    assert "engine-only shapes: exact: timed per call shape (5 shapes); first calls at shapes new" in printed


def test_engine_only_caps_the_shapes_it_times_and_falls_back_to_pixels_without_shapes(
    engine_folder: Path,
) -> None:
    from benchmarks.latency_engine_only import engine_only
    from stars_edge.manifest import load_manifest

    manifest = load_manifest(engine_folder)
    runs, pixels = _runs_and_pixels(CLOUDY_SHAPES)
    timing = {"warmup": 0, "min_runs": 2, "max_runs": 2, "min_seconds": 0.0}
    # at most 3 shapes: each pattern's most-called, then the most-called of the rest (1x32x32, 2 calls)
    engine = engine_only(
        manifest,
        "openvino",
        "fp32",
        1,
        runs,
        pixels,
        64,
        2,
        timing,
        engine_shapes=CLOUDY_SHAPES,
        max_shapes=3,
    )
    assert engine["shapes"].startswith("exact: timed per call shape (3 shapes); 2 rarer shapes (2 calls)")
    rows = engine["per_pattern"]["sar+dsm"]["shapes"]
    assert [k for k, r in rows.items() if r["timed"]] == ["1x32x64", "1x32x32"]
    assert {k: r["rate_of"] for k, r in rows.items() if not r["timed"]} == {"1x64x64": "1x32x64"}
    untimed = rows["1x64x64"]  # twice the pixels of 1x32x64: twice its time per call
    assert untimed["wall_ms_per_call"] == pytest.approx(2 * rows["1x32x64"]["wall_ms_per_call"])
    assert untimed["cpu_seconds"] == pytest.approx(untimed["calls"] * untimed["cpu_ms_per_call"] / 1e3)
    assert not engine["per_pattern"]["optical+sar+dsm"]["shapes"]["1x64x64"]["timed"]
    # an older summary without engine_shapes: pixels / tile^2 tiles at the whole-tile rate
    old = engine_only(manifest, "openvino", "fp32", 1, runs, pixels, 64, 2, timing)
    assert (
        old["shapes"].startswith("approximated by pixels for sar+dsm")
        and "first_call_seconds_total" not in old
    )
    part = old["per_pattern"]["sar+dsm"]
    assert "shapes" not in part and part["cpu_seconds"] == pytest.approx(
        part["pixels"] / 64**2 * part["cpu_ms_per_tile"] / 1e3
    )


def test_the_bound_counts_reader_stages_per_reader_thread() -> None:
    """read/preprocess are summed over reader threads that run side by side: the bound divides them."""
    from benchmarks.latency_targets import _bound

    run: dict[str, Any] = {"stages": {"read": 3.0, "inference": 1.2}, "predict_s": 2.6}
    assert _bound(run) == "read 3.0 s of 2.6 s"
    run["summary"] = {"reader_threads": 2}
    assert _bound(run) == "read 1.5 s per reader thread (2) of 2.6 s"
    run["stages"]["inference"] = 1.8
    assert _bound(run) == "inference 1.8 s of 2.6 s"
