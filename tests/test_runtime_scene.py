"""End-to-end scene runs on small GeoTIFFs: patterns per place, per-pixel fallback, georeferencing, tags."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from test_runtime_support import build_engines, make_physical, pattern_class_weights, write_raster

from runtime import Predictor
from stars_edge.modalities import Pattern

TRANSFORM = Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 5700000.0)
HEIGHT, WIDTH = 128, 160
TILE, OVERLAP = 32, 8
ALL3, OPT_SAR, OPT_DSM, SAR_DSM = (
    Pattern.parse(p).index for p in ("optical+sar+dsm", "optical+sar", "optical+dsm", "sar+dsm")
)


@pytest.fixture(scope="module")
def pattern_engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Engines whose class is their pattern index, so the class map shows which engine ran."""
    return build_engines(tmp_path_factory.mktemp("engines"), pattern_class_weights(), classes=8)


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A scene with a cloud region (optical), a SAR gap, a small SAR hole, a dead corner, and a DSM on a
    coarser grid (so it is warped onto the optical grid)."""
    folder = tmp_path_factory.mktemp("scene")
    values = make_physical((HEIGHT, WIDTH))
    clouds = np.zeros((1, HEIGHT, WIDTH), dtype=np.uint8)
    clouds[0, :64, :64] = 1  # cloud region, top left
    clouds[0, 100:116, :20] = 1  # part of the dead corner
    sar = values["sar"].copy()
    sar[:, 96:, :] = -9999.0  # SAR gap: the bottom quarter
    sar[:, 40:43, 120:123] = -9999.0  # a 3x3 hole inside an otherwise complete SAR tile
    dsm_fine = values["dsm"].copy()
    dsm_fine[:, 96:120, :24] = np.nan  # dead corner: no modality valid in rows 100..116, cols 0..20
    dsm = dsm_fine.reshape(1, HEIGHT // 2, 2, WIDTH // 2, 2).mean(axis=(2, 4))  # NaN stays NaN
    coarse = TRANSFORM @ Affine.scale(2.0)
    return {
        "optical": write_raster(folder / "optical.tif", values["optical"], TRANSFORM),
        "sar": write_raster(folder / "sar.tif", sar, TRANSFORM, nodata=-9999.0),
        "dsm": write_raster(folder / "dsm.tif", dsm.astype(np.float32), coarse),
        "cloud_mask": write_raster(folder / "clouds.tif", clouds, TRANSFORM),
    }


@pytest.fixture(scope="module")
def scene_run(
    pattern_engines: Path, scene: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> dict:
    out = tmp_path_factory.mktemp("out")
    predictor = Predictor(pattern_engines, backend="onnxruntime", threads=1)
    summary = predictor.predict_scene(
        optical=scene["optical"],
        sar=scene["sar"],
        dsm=scene["dsm"],
        cloud_mask=scene["cloud_mask"],
        out=out / "pred.tif",
        pattern_map=out / "patterns.tif",
        probabilities=out / "probs.tif",
        tile=TILE,
        overlap=OVERLAP,
        batch=3,
        progress=False,
    )
    with rasterio.open(out / "pred.tif") as ds:
        classes, profile, tags = ds.read(1), ds.profile, ds.tags()
    with rasterio.open(out / "patterns.tif") as ds:
        patterns, pattern_tags = ds.read(1), ds.tags()
    with rasterio.open(out / "probs.tif") as ds:
        probs = ds.read()
    return {
        "summary": summary,
        "classes": classes,
        "patterns": patterns,
        "profile": profile,
        "tags": tags,
        "pattern_tags": pattern_tags,
        "probs": probs,
        "out": out,
    }


def test_pattern_map_shows_each_region_with_its_pattern(scene_run: dict) -> None:
    patterns = scene_run["patterns"]
    assert (patterns[: 64 - TILE, : 64 - TILE] == SAR_DSM).all()  # deep inside the cloud region
    assert (patterns[96 + TILE :, 24 + TILE :] == OPT_DSM).all()  # deep inside the SAR gap
    assert (patterns[:64, 64 + TILE :] != SAR_DSM).all()
    assert (patterns[64 + 8 : 96 - TILE, :] == ALL3).all()  # everything valid, away from the gaps


def test_partly_invalid_modality_is_handled_per_pixel(scene_run: dict) -> None:
    patterns = scene_run["patterns"]
    assert (patterns[40:43, 120:123] == OPT_DSM).all()  # the SAR hole: those pixels only
    around = patterns[36:47, 116:127].copy()
    around[4:7, 4:7] = ALL3
    assert (around == ALL3).all()


def test_pixels_without_any_valid_modality_are_nodata(scene_run: dict) -> None:
    classes, patterns = scene_run["classes"], scene_run["patterns"]
    assert (classes[102:114, 2:18] == 255).all()
    assert (patterns[102:114, 2:18] == 0).all()
    assert (scene_run["probs"][:, 102:114, 2:18] == 0).all()
    assert ((classes == 255) == (patterns == 0)).all()


def test_class_map_agrees_with_the_engine_that_ran(scene_run: dict) -> None:
    valid = scene_run["patterns"] > 0
    assert (scene_run["classes"][valid] == scene_run["patterns"][valid]).all()


def test_probabilities_are_scaled_to_uint8(scene_run: dict) -> None:
    probs = scene_run["probs"].astype(np.int64)
    valid = scene_run["patterns"] > 0
    assert probs.shape == (8, HEIGHT, WIDTH)
    assert np.abs(probs.sum(axis=0)[valid] - 255).max() <= 4
    assert (probs.argmax(axis=0)[valid] == scene_run["classes"][valid]).all()


def test_output_is_georeferenced_like_the_reference(scene_run: dict, scene: dict[str, Path]) -> None:
    profile = scene_run["profile"]
    with rasterio.open(scene["optical"]) as reference:
        assert profile["crs"] == reference.crs
        assert profile["transform"] == reference.transform
        assert (profile["height"], profile["width"]) == reference.shape
    assert profile["tiled"] and profile["compress"] == "deflate" and profile["nodata"] == 255


def test_provenance_and_names_in_tags(scene_run: dict) -> None:
    tags = scene_run["tags"]
    assert json.loads(tags["STARS_CLASS_NAMES"]) == [f"class{i}" for i in range(8)]
    assert tags["STARS_PRECISION"] == "fp32" and tags["STARS_BACKEND"] == "onnxruntime"
    assert tags["STARS_TILE"] == str(TILE) and tags["STARS_OVERLAP"] == str(OVERLAP)
    assert tags["STARS_MODEL_SHA256"].startswith("c0ffee")
    names = json.loads(scene_run["pattern_tags"]["STARS_PATTERN_NAMES"])
    assert names["0"] == "none" and names[str(SAR_DSM)] == "sar+dsm"


def test_summary_counts_pixels_per_pattern_and_leaves_no_partial_files(scene_run: dict) -> None:
    summary = scene_run["summary"]
    patterns = scene_run["patterns"]
    assert sum(summary.pattern_pixels.values()) == HEIGHT * WIDTH
    assert summary.pattern_pixels["sar+dsm"] == int((patterns == SAR_DSM).sum())
    assert summary.pattern_pixels["none"] == int((patterns == 0).sum())
    assert summary.tiles == 5 * 7 and summary.megapixels_per_second > 0
    assert set(summary.stage_seconds) >= {"read", "preprocess", "inference", "blend", "write", "encode"}
    assert set(summary.stage_cpu_seconds) == set(summary.stage_seconds)
    for stage, cpu in summary.stage_cpu_seconds.items():  # a thread's CPU never exceeds its wall time
        assert 0.0 <= cpu <= summary.stage_seconds[stage] + 0.01, stage
    assert summary.stage_cpu_seconds["blend"] > 0 and summary.stage_cpu_seconds["encode"] > 0
    assert "pixels per pattern" in summary.format() and "CPU per stage (s" in summary.format()
    assert sorted(p.name for p in scene_run["out"].iterdir()) == ["patterns.tif", "pred.tif", "probs.tif"]


def test_scene_matches_in_memory_prediction(
    pattern_engines: Path, scene: dict[str, Path], scene_run: dict
) -> None:
    """The GeoTIFF path and predict_arrays agree where grids coincide (optical + SAR, no warping)."""
    with rasterio.open(scene["optical"]) as ds:
        optical = ds.read()
    with rasterio.open(scene["sar"]) as ds:
        sar = ds.read()
        sar_valid = ds.read_masks(1) > 0
    with rasterio.open(scene["cloud_mask"]) as ds:
        clouds = ds.read(1)
    predictor = Predictor(pattern_engines, backend="onnxruntime", threads=1)
    classes, patterns = predictor.predict_arrays(
        {"optical": optical, "sar": sar}, {"sar": sar_valid}, cloud_mask=clouds, tile=TILE, overlap=OVERLAP
    )
    out = scene_run["out"].parent / "two.tif"
    predictor.predict_scene(
        optical=scene["optical"],
        sar=scene["sar"],
        cloud_mask=scene["cloud_mask"],
        out=out,
        tile=TILE,
        overlap=OVERLAP,
        progress=False,
    )
    with rasterio.open(out) as ds:
        np.testing.assert_array_equal(ds.read(1), classes)
    assert (patterns[:32, :32] == Pattern.parse("sar").index).all()


def test_overviews_are_added_on_request(pattern_engines: Path, tmp_path: Path) -> None:
    sar = write_raster(tmp_path / "sar.tif", make_physical((256, 256), seed=1)["sar"], TRANSFORM)
    predictor = Predictor(pattern_engines, backend="onnxruntime", threads=1)
    predictor.predict_scene(
        sar=sar, out=tmp_path / "pred.tif", tile=128, overlap=16, overviews=True, progress=False
    )
    with rasterio.open(tmp_path / "pred.tif") as dataset:
        assert dataset.overviews(1) == [2]
        assert (dataset.read(1, out_shape=(128, 128)) == Pattern.parse("sar").index).all()


def test_dataset_mask_band_marks_invalid_pixels(pattern_engines: Path, tmp_path: Path) -> None:
    """A GeoTIFF with an internal mask band (no nodata value): masked pixels are invalid."""
    values = make_physical((64, 64), seed=8)
    sar_path = write_raster(tmp_path / "sar.tif", values["sar"], TRANSFORM)
    dsm_path = write_raster(tmp_path / "dsm.tif", values["dsm"], TRANSFORM)
    mask = np.full((64, 64), 255, dtype=np.uint8)
    mask[10:20, 30:40] = 0
    with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), rasterio.open(sar_path, "r+") as dataset:
        dataset.write_mask(mask)
    predictor = Predictor(pattern_engines, backend="onnxruntime", threads=1)
    predictor.predict_scene(
        sar=sar_path,
        dsm=dsm_path,
        out=tmp_path / "pred.tif",
        pattern_map=tmp_path / "pat.tif",
        tile=32,
        overlap=8,
        min_valid=0.5,  # the hole is 10 % of a tile: SAR stays present and the hole is handled per pixel
        progress=False,
    )
    with rasterio.open(tmp_path / "pat.tif") as dataset:
        patterns = dataset.read(1)
    assert (patterns[mask == 0] == Pattern.parse("dsm").index).all()
    assert (patterns[mask > 0] == Pattern.parse("sar+dsm").index).all()


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # inside rasterio.transform
def test_raster_in_another_crs_is_warped_onto_the_reference(pattern_engines: Path, tmp_path: Path) -> None:
    """SAR delivered in EPSG:4326 over a UTM optical grid: warped on the fly, valid where it covers."""
    from rasterio.warp import Resampling, calculate_default_transform, reproject

    values = make_physical((96, 96), seed=12)
    optical = write_raster(tmp_path / "optical.tif", values["optical"], TRANSFORM)
    west, north = TRANSFORM.c, TRANSFORM.f
    east, south = west + 96 * TRANSFORM.a, north + 96 * TRANSFORM.e
    dst_transform, width, height = calculate_default_transform(
        "EPSG:32631", "EPSG:4326", 96, 96, left=west, bottom=south, right=east, top=north
    )
    sar = np.full((2, height, width), -9999.0, dtype=np.float32)
    for band in range(2):
        reproject(
            values["sar"][band],
            sar[band],
            src_transform=TRANSFORM,
            src_crs="EPSG:32631",
            dst_transform=dst_transform,
            dst_crs="EPSG:4326",
            dst_nodata=-9999.0,
            resampling=Resampling.bilinear,
        )
    sar_path = write_raster(tmp_path / "sar_4326.tif", sar, dst_transform, crs="EPSG:4326", nodata=-9999.0)
    predictor = Predictor(pattern_engines, backend="onnxruntime", threads=1)
    predictor.predict_scene(
        optical=optical,
        sar=sar_path,
        out=tmp_path / "pred.tif",
        pattern_map=tmp_path / "pat.tif",
        tile=32,
        overlap=8,
        progress=False,
    )
    with rasterio.open(tmp_path / "pat.tif") as dataset:
        patterns = dataset.read(1)
        assert dataset.crs.to_epsg() == 32631 and dataset.transform == TRANSFORM
    assert (patterns[8:-8, 8:-8] == OPT_SAR).all()
    assert set(np.unique(patterns)) <= {OPT_SAR, Pattern.parse("optical").index}
