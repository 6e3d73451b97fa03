"""Smaller rules of a run: CRS errors, value ranges, flagged and missing engines, the tile default, and
manifests that cannot reach outside their folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import rasterio
from affine import Affine
from onnx import external_data_helper
from test_runtime_support import build_engines, make_physical, random_weights, use_kernels, write_raster

import runtime.engines
from runtime import Predictor
from runtime.engines import EngineSet
from runtime.raster_source import RasterSource
from stars_edge.errors import DataError, ManifestError
from stars_edge.io import sha256_file
from stars_edge.manifest import load_manifest
from stars_edge.modalities import Pattern

ROOT = Path(__file__).resolve().parents[1]
TRANSFORM = Affine(0.5, 0.0, 1000.0, 0.0, -0.5, 2000.0)
LOCAL_CRS = 'LOCAL_CS["arbitrary",UNIT["metre",1],AXIS["x",EAST],AXIS["y",NORTH]]'


@pytest.fixture
def engines(tmp_path: Path) -> Path:
    return build_engines(tmp_path / "engines", random_weights(classes=3), classes=3)


@pytest.fixture
def rasters(tmp_path: Path) -> dict[str, Path]:
    values = make_physical((64, 64), seed=2)
    return {m: write_raster(tmp_path / f"{m}.tif", v, TRANSFORM) for m, v in values.items()}


def _edit_manifest(folder: Path, change: object) -> None:
    path = folder / "manifest.json"
    data = json.loads(path.read_text())
    change(data)  # type: ignore[operator]
    path.write_text(json.dumps(data))


def test_incompatible_crs_is_one_line_at_the_command_line(
    engines: Path, rasters: dict[str, Path], tmp_path: Path
) -> None:
    sar = write_raster(tmp_path / "local.tif", make_physical((64, 64))["sar"], TRANSFORM, crs=LOCAL_CRS)
    done = subprocess.run(
        [sys.executable, "-m", "stars_edge", "run", "--engines", str(engines),
         "--optical", str(rasters["optical"]),
         "--sar", str(sar), "--out", str(tmp_path / "out" / "p.tif"), "--no-progress"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "cannot be transformed" in done.stderr and "gdalwarp" in done.stderr
    assert not (tmp_path / "out").exists()  # the output folder is created only once the inputs are valid


def test_values_far_outside_the_normalisation_are_refused_unless_allowed(
    engines: Path, tmp_path: Path
) -> None:
    values = make_physical((64, 64), seed=3)
    dn = write_raster(
        tmp_path / "dn.tif", (values["optical"].clip(0, None) * 10000).astype(np.uint16), TRANSFORM
    )
    predictor = Predictor(engines, backend="onnxruntime", threads=1)
    with pytest.raises(DataError, match="allow-out-of-range") as error:
        predictor.predict_scene(optical=dn, out=tmp_path / "p.tif", progress=False)
    assert "\n" not in str(error.value) and "looks like reflectance x 10000" in str(error.value)
    assert "gdal_edit.py -scale 0.0001" in str(error.value) and str(dn) in str(error.value)
    assert not (tmp_path / "p.tif").exists()
    with pytest.warns(UserWarning, match="looks like reflectance x 10000"):
        predictor.predict_scene(optical=dn, out=tmp_path / "p.tif", progress=False, allow_out_of_range=True)
    assert (tmp_path / "p.tif").exists()


def test_flagged_engines_are_refused_unless_allowed(
    engines: Path, rasters: dict[str, Path], tmp_path: Path
) -> None:
    def flag(data: dict) -> None:  # type: ignore[type-arg]
        for entry in data["engines"]:
            if entry["pattern"] == "optical":
                entry["accuracy"] = {
                    "miou": 40.0, "per_class_iou": {}, "agreement_with_fp32": 80.0, "miou_drop": 9.0,
                    "gate": "flagged",
                }  # fmt: skip

    _edit_manifest(engines, flag)
    with pytest.raises(ManifestError, match="allow-flagged"):
        Predictor(engines, backend="onnxruntime").predict_scene(
            optical=rasters["optical"], out=tmp_path / "p.tif", progress=False
        )
    Predictor(engines, backend="onnxruntime", allow_flagged=True).predict_scene(
        optical=rasters["optical"], out=tmp_path / "p.tif", progress=False
    )
    # a run that needs no flagged engine is not affected
    Predictor(engines, backend="onnxruntime").predict_scene(
        sar=rasters["sar"], out=tmp_path / "s.tif", progress=False
    )


def test_only_the_engines_a_run_needs_are_verified_at_first_use(
    engines: Path, rasters: dict[str, Path], tmp_path: Path
) -> None:
    (engines / "sar.fp32.onnx").unlink()
    (engines / "optical+dsm.fp32.onnx").write_bytes(b"altered")
    predictor = Predictor(engines, backend="onnxruntime", threads=1)
    predictor.predict_scene(optical=rasters["optical"], out=tmp_path / "p.tif", progress=False)
    loaded = [p.name for engines_set in predictor._engines.values() for p in engines_set.loaded]
    assert loaded == ["optical"]
    with pytest.raises(ManifestError, match="sha256"):
        predictor.predict_scene(
            optical=rasters["optical"], dsm=rasters["dsm"], out=tmp_path / "d.tif", progress=False
        )


def test_tile_defaults_to_the_manifest_tile(engines: Path, rasters: dict[str, Path], tmp_path: Path) -> None:
    predictor = Predictor(engines, backend="onnxruntime", threads=1)
    summary = predictor.predict_scene(optical=rasters["optical"], out=tmp_path / "p.tif", progress=False)
    with rasterio.open(tmp_path / "p.tif") as dataset:
        assert dataset.tags()["STARS_TILE"] == str(predictor.manifest.tile_size) == "64"
        assert dataset.tags()["STARS_OVERLAP"] == "16"
    assert summary.tiles == 1


def test_engine_symlinked_out_of_the_folder_is_refused(
    engines: Path, rasters: dict[str, Path], tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere.onnx"
    (engines / "optical.fp32.onnx").rename(outside)
    (engines / "optical.fp32.onnx").symlink_to(outside)
    with pytest.raises(ManifestError, match="outside the engines folder"):
        Predictor(engines, backend="onnxruntime").predict_scene(
            optical=rasters["optical"], out=tmp_path / "p.tif", progress=False
        )


@pytest.mark.parametrize("path", ["/tmp/optical.onnx", "../optical.fp32.onnx", "sub/../../optical.onnx"])
def test_engine_paths_that_climb_out_are_refused(engines: Path, path: str) -> None:
    def move(data: dict) -> None:  # type: ignore[type-arg]
        data["engines"][0]["path"] = path

    _edit_manifest(engines, move)
    with pytest.raises(ManifestError):
        Predictor(engines, backend="onnxruntime")


def test_onnx_external_data_outside_the_folder_is_refused(
    engines: Path, rasters: dict[str, Path], tmp_path: Path
) -> None:
    path = engines / "optical.fp32.onnx"
    model = onnx.load(str(path))
    weight = next(t for t in model.graph.initializer if t.name == "weight")
    data = weight.raw_data or np.asarray(onnx.numpy_helper.to_array(weight)).tobytes()
    (tmp_path / "secret.bin").write_bytes(data)
    external_data_helper.set_external_data(weight, location="../secret.bin", length=len(data))
    weight.data_location = onnx.TensorProto.EXTERNAL
    weight.ClearField("raw_data")
    weight.ClearField("float_data")
    path.write_bytes(model.SerializeToString())

    def rehash(data: dict) -> None:  # type: ignore[type-arg]
        for entry in data["engines"]:
            if entry["path"] == path.name:
                entry["sha256"] = sha256_file(path)

    _edit_manifest(engines, rehash)
    assert load_manifest(engines).select("optical", "fp32", "onnxruntime").path == path.name
    with pytest.raises(ManifestError, match="external data"):
        Predictor(engines, backend="onnxruntime").predict_scene(
            optical=rasters["optical"], out=tmp_path / "p.tif", progress=False
        )


def test_geotiff_scale_and_offset_tags_give_physical_values(tmp_path: Path) -> None:
    """A Sentinel-2-style uint16 file (DN with scale 1e-4) reads as the reflectance a float file holds."""
    from rasterio.transform import from_origin

    from runtime.sources import RasterSource
    from stars_edge.modalities import ModalitySpec

    rng = np.random.default_rng(0)
    reflectance = rng.uniform(0.01, 0.5, size=(2, 64, 64)).astype(np.float32)
    dn = np.round(reflectance * 10_000).astype(np.uint16)
    profile = dict(driver="GTiff", height=64, width=64, crs="EPSG:32632", transform=from_origin(0, 64, 1, 1))
    with rasterio.open(tmp_path / "float.tif", "w", count=2, dtype="float32", **profile) as dst:
        dst.write(dn.astype(np.float32) / 10_000)
    with rasterio.open(tmp_path / "dn.tif", "w", count=2, dtype="uint16", **profile) as dst:
        dst.write(dn)
        dst.scales = (1e-4, 1e-4)
    specs = {"sar": ModalitySpec("sar", ("vv", "vh"), (0.0, 0.0), (1.0, 1.0))}
    as_float = RasterSource({"sar": tmp_path / "float.tif"}, specs).read(0, 0, 64)
    as_dn = RasterSource({"sar": tmp_path / "dn.tif"}, specs).read(0, 0, 64)
    np.testing.assert_allclose(as_dn.values["sar"], as_float.values["sar"], rtol=1e-5, atol=1e-7)


def test_box_any_is_the_square_dilation() -> None:
    """``box_any`` against the definition (any masked pixel within the Chebyshev radius), on random masks
    of odd shapes, densities and radii from 0 to beyond the array."""
    from runtime.validity import box_any

    rng = np.random.default_rng(7)
    for _ in range(120):
        h, w = (int(v) for v in rng.integers(1, 40, 2))
        mask = rng.random((h, w)) < float(rng.choice([0.002, 0.03, 0.3]))
        radius = int(rng.integers(0, 45))
        want = np.array(
            [
                [
                    mask[max(0, y - radius) : y + radius + 1, max(0, x - radius) : x + radius + 1].any()
                    for x in range(w)
                ]
                for y in range(h)
            ]
        )
        got = box_any(mask, radius)
        assert got.dtype == bool and got.shape == mask.shape
        np.testing.assert_array_equal(got, want, err_msg=f"{h}x{w} radius {radius}")


@pytest.mark.parametrize("kernels", ["c", "numba", "numpy"])
def test_normalising_in_the_tile_buffer_gives_the_same_bits(
    kernels: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``normalize_owned`` writes into the tile a source handed over (and into a dilated read's view of one)
    the same float32 values as ``ModalitySpec.normalize``; an array it does not own is left untouched.
    Compiled (``runtime/kernels.py``) and numpy."""
    from runtime.validity import normalize_owned
    from stars_edge.modalities import ModalitySpec

    use_kernels(monkeypatch, kernels)

    spec = ModalitySpec(
        "optical", ("b", "g", "r", "n"), (0.11, 0.093, 0.07, 0.25), (0.031, 0.047, 0.033, 0.19)
    )
    rng = np.random.default_rng(3)
    tile = rng.uniform(-0.2, 1.5, (4, 40, 40)).astype(np.float32)
    want = spec.normalize(tile.copy())
    owned = tile.copy()
    got = normalize_owned(spec, owned)
    assert got is owned  # in place: no tile-sized copy
    np.testing.assert_array_equal(got.view(np.uint32), want.view(np.uint32))
    halo = np.pad(tile, ((0, 0), (3, 3), (3, 3)))
    view = normalize_owned(spec, halo[:, 3:-3, 3:-3])
    np.testing.assert_array_equal(view.view(np.uint32), want.view(np.uint32))
    frozen = tile.copy()
    frozen.flags.writeable = False
    np.testing.assert_array_equal(normalize_owned(spec, frozen), want)
    np.testing.assert_array_equal(frozen, tile)
    as_float64 = tile.astype(np.float64)
    np.testing.assert_array_equal(normalize_owned(spec, as_float64), spec.normalize(tile.astype(np.float64)))
    assert as_float64.dtype == np.float64 and np.array_equal(as_float64, tile.astype(np.float64))


@pytest.mark.parametrize("kernels", ["c", "numba", "numpy"])
def test_finite_pixels_are_those_finite_in_every_band(kernels: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.tile_source import finite_valid

    use_kernels(monkeypatch, kernels)
    values = np.random.default_rng(4).normal(size=(3, 30, 41)).astype(np.float32)
    values[0, 2, 3], values[2, 2, 4], values[1, 29, 40], values[2, 0, 0] = np.nan, np.inf, -np.inf, 3e38
    want = np.ones((30, 41), dtype=bool)
    want[2, 3] = want[2, 4] = want[29, 40] = False
    np.testing.assert_array_equal(finite_valid(values), want)
    np.testing.assert_array_equal(finite_valid(values[:, 1:, 2:]), want[1:, 2:])  # a view


def test_pattern_codes_of_a_clean_tile_take_every_modality() -> None:
    """The shortcut for tiles where every modality is valid everywhere gives the rule's answer; a single
    invalid pixel, or padding, takes the general path."""
    from runtime.validity import MODALITY_BITS, pixel_codes

    size = 64
    inside = np.ones((size, size), dtype=bool)
    for names in (("optical",), ("sar", "dsm"), ("optical", "sar", "dsm")):
        valid = {m: np.ones((size, size), dtype=bool) for m in names}
        codes = pixel_codes(valid, inside, 0.5, 16)
        assert codes.dtype == np.uint8
        assert (codes == sum(MODALITY_BITS[m] for m in names)).all()
    valid = {m: np.ones((size, size), dtype=bool) for m in ("optical", "sar")}
    valid["optical"][30, 30] = False
    codes = pixel_codes(valid, inside, 0.5, 4)
    assert codes[30, 30] == MODALITY_BITS["sar"] and codes[26, 30] == MODALITY_BITS["sar"]
    assert codes[25, 30] == MODALITY_BITS["optical"] | MODALITY_BITS["sar"]
    padded = inside.copy()
    padded[:, 40:] = False
    codes = pixel_codes({m: np.ones((size, size), dtype=bool) for m in ("optical", "sar")}, padded, 0.5, 4)
    assert (codes[:, 40:] == 0).all() and (codes[:, :40] == 3).all()


def _codes_by_definition(
    valid: dict[str, np.ndarray], inside: np.ndarray, min_valid: float, margin: int
) -> np.ndarray:
    """``pixel_codes``' rule, pixel by pixel, as its docstring states it."""
    from runtime.validity import MODALITY_BITS

    count = int(inside.sum())
    fractions = {m: float((ok & inside).sum()) / count for m, ok in valid.items()}
    present = [m for m, f in fractions.items() if f >= min_valid] or [
        m for m, f in fractions.items() if f > 0
    ]
    height, width = inside.shape
    codes = np.zeros(inside.shape, dtype=np.uint8)
    for y in range(height):
        for x in range(width):
            if not inside[y, x]:
                continue
            near = (slice(max(0, y - margin), y + margin + 1), slice(max(0, x - margin), x + margin + 1))
            clean = [m for m, ok in valid.items() if ok[y, x] and not (~ok[near] & inside[near]).any()]
            chosen = [m for m in clean if m in present] or clean or [m for m, ok in valid.items() if ok[y, x]]
            codes[y, x] = sum(MODALITY_BITS[m] for m in chosen)
    return codes


def test_pattern_codes_follow_the_rule_pixel_by_pixel() -> None:
    """Random holes, speckle and padding, margins 0 (the shipped default) to 5, thresholds that make a
    modality absent: ``pixel_codes`` gives the rule's code at every pixel, the fallbacks included (a pixel
    every valid modality of which has a hole within the margin keeps the modalities valid there)."""
    from runtime.validity import pixel_codes

    rng = np.random.default_rng(11)
    for trial in range(60):
        height, width = (int(v) for v in rng.integers(6, 24, 2))
        names = [m for m in ("optical", "sar", "dsm") if rng.random() < 0.7] or ["sar"]
        valid = {}
        for name in names:
            ok = rng.random((height, width)) > float(rng.choice([0.0, 0.02, 0.3, 0.9]))
            if rng.random() < 0.5:  # a rectangular hole
                y, x = int(rng.integers(0, height)), int(rng.integers(0, width))
                ok[y : y + int(rng.integers(1, 8)), x : x + int(rng.integers(1, 8))] = False
            valid[name] = ok
        inside = np.ones((height, width), dtype=bool)
        if trial % 3 == 0:
            inside[:, int(rng.integers(1, width)) :] = False
        if not inside.any():
            continue
        margin = int(rng.choice([0, 0, 1, 2, 5]))
        min_valid = float(rng.choice([0.05, 0.5, 0.95]))
        got = pixel_codes(valid, inside, min_valid, margin)
        want = _codes_by_definition(valid, inside, min_valid, margin)
        np.testing.assert_array_equal(got, want, err_msg=f"trial {trial}, margin {margin}, {min_valid}")


def _preload_done(timeout: float = 30.0) -> None:
    """Wait until no preload thread is alive."""
    deadline = time.monotonic() + timeout
    while any(t.name == "stars-edge-preload" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the preload thread did not finish"
        time.sleep(0.01)


def _recording_open(monkeypatch: pytest.MonkeyPatch, delay: float = 0.0) -> list[str]:
    """Make ``runtime.engines.open_backend`` record the thread that opens each engine (after ``delay``)."""
    opened: list[str] = []
    real = runtime.engines.open_backend

    def open_backend(*args: Any, **kwargs: Any) -> Any:
        time.sleep(delay)
        opened.append(threading.current_thread().name)
        return real(*args, **kwargs)

    monkeypatch.setattr(runtime.engines, "open_backend", open_backend)
    return opened


def test_preload_opens_the_engine_on_its_own_thread(engines: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = _recording_open(monkeypatch)
    engine_set = EngineSet(load_manifest(engines), "onnxruntime", "fp32", threads=1)
    engine_set.preload(Pattern.parse("optical"))
    _preload_done()
    assert opened == ["stars-edge-preload"] and engine_set.loaded == (Pattern.parse("optical"),)
    engine_set.preload(Pattern.parse("optical"))  # already loaded: nothing more
    _preload_done()
    assert opened == ["stars-edge-preload"]
    engine_set.close()


def test_a_failed_preload_is_raised_by_the_first_run(engines: Path) -> None:
    (engines / "optical.fp32.onnx").write_bytes(b"altered")
    engine_set = EngineSet(load_manifest(engines, verify=False), "onnxruntime", "fp32", threads=1)
    engine_set.preload(Pattern.parse("optical"))
    _preload_done()
    assert engine_set.loaded == ()
    with pytest.raises(ManifestError, match="sha256"):
        engine_set.run(Pattern.parse("optical"), {"optical": np.zeros((1, 4, 64, 64), np.float32)})


def test_close_waits_for_a_preload_in_flight(engines: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    opened = _recording_open(monkeypatch, delay=0.3)
    engine_set = EngineSet(load_manifest(engines), "onnxruntime", "fp32", threads=1)
    engine_set.preload(Pattern.parse("optical"))
    engine_set.close()
    assert opened == ["stars-edge-preload"]  # finished before close returned
    assert not any(t.name == "stars-edge-preload" for t in threading.enumerate())
    assert engine_set.loaded == ()  # and closed with the rest


def test_a_scene_preloads_the_pattern_of_every_given_modality(
    engines: Path, rasters: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the input contract's sample: a refused input loads no engine. (Starting the load before the
    sample, to overlap it with the sample's decoding, raised peak RSS by 25-80 MiB on the memory benchmark's
    scenes and more with the scene's size; docs/PERFORMANCE_LOG.md, session 12.)"""
    asked: list[str] = []
    real = EngineSet.preload
    monkeypatch.setattr(EngineSet, "preload", lambda self, p: (asked.append(p.name), real(self, p)))
    sampled = RasterSource.sample_values
    monkeypatch.setattr(
        RasterSource, "sample_values", lambda self, *args: (asked.append("sample"), sampled(self, *args))[1]
    )
    Predictor(engines, backend="onnxruntime", threads=1).predict_scene(
        optical=rasters["optical"], sar=rasters["sar"], out=tmp_path / "p.tif", progress=False
    )
    assert asked == ["sample", "optical+sar"]
