"""Synthetic scene generator: determinism, physical plausibility, files on disk, mosaic writing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio

from stars_edge.data.synthetic import (
    BUILDING,
    CAR,
    CLASS_NAMES,
    TREE,
    WATER,
    Scene,
    SyntheticConfig,
    class_fractions,
    generate_dataset,
    generate_scene,
    scene_seed,
    split_counts,
    write_mosaic_scene,
    write_scene,
)
from stars_edge.errors import ConfigError


@pytest.fixture(scope="module")
def scene() -> Scene:
    return generate_scene(SyntheticConfig(size=128, seed=7, cloud_cover=0.2, sar_gap=0.15, dsm_voids=0.05))


def test_same_seed_gives_identical_scene_and_other_seed_differs(scene: Scene) -> None:
    again = generate_scene(SyntheticConfig(size=128, seed=7, cloud_cover=0.2, sar_gap=0.15, dsm_voids=0.05))
    other = generate_scene(SyntheticConfig(size=128, seed=8, cloud_cover=0.2, sar_gap=0.15, dsm_voids=0.05))
    for modality in ("optical", "sar", "dsm"):
        np.testing.assert_array_equal(scene.image(modality), again.image(modality))
    np.testing.assert_array_equal(scene.label, again.label)
    assert not np.array_equal(scene.label, other.label)


def test_shapes_dtypes_and_specs(scene: Scene) -> None:
    assert scene.image("optical").shape == (4, 128, 128) and scene.image("optical").dtype == np.float32
    assert scene.image("sar").shape == (2, 128, 128) and scene.image("dsm").shape == (1, 128, 128)
    assert scene.label.dtype == np.uint8 and scene.label.max() < len(CLASS_NAMES)
    assert scene.class_names == CLASS_NAMES and len(CLASS_NAMES) == 7
    assert scene.specs["optical"].band_names == ("blue", "green", "red", "nir")
    assert scene.specs["sar"].bands == 2 and scene.specs["dsm"].bands == 1
    assert scene.crs == "EPSG:32631" and scene.transform.a == 1.0


def test_class_imbalance_on_a_larger_scene() -> None:
    big = generate_scene(SyntheticConfig(size=512, seed=1))
    fractions = class_fractions(big.label)
    assert (fractions > 0).all(), fractions  # every class appears
    assert fractions[CAR] < 0.02  # a minority class under 2 %
    assert fractions.max() > 0.25  # a dominant class


def test_missing_data_matches_config(scene: Scene) -> None:
    # the SAR swath removes about sar_gap of the columns; DSM voids about dsm_voids of the pixels
    assert abs((1 - scene.valid["sar"].mean()) - 0.15) < 0.03
    assert abs((1 - scene.valid["dsm"].mean()) - 0.05) < 0.03
    assert scene.cloud_mask is not None and scene.cloud_mask.any()
    np.testing.assert_array_equal(scene.valid["optical"], ~scene.cloud_mask)
    # clouds are bright in every band
    assert (
        scene.image("optical")[:, scene.cloud_mask].mean()
        > scene.image("optical")[:, ~scene.cloud_mask].mean() + 0.2
    )


def test_physics_each_modality_reflects_the_classes() -> None:
    scene = generate_scene(SyntheticConfig(size=256, seed=3))
    label, sar, dsm, optical = scene.label, scene.image("sar"), scene.image("dsm")[0], scene.image("optical")
    others = (label != WATER) & (label != BUILDING)
    # SAR: water is dark, buildings bright
    assert sar[0][label == WATER].mean() < sar[0][others].mean() - 6
    assert sar[0][label == BUILDING].mean() > sar[0][others].mean() + 3
    # DSM: buildings and trees stand above the ground around them
    ground = (label == 0) | (label == 4)
    assert np.median(dsm[label == BUILDING]) > np.median(dsm[ground]) + 2
    assert np.median(dsm[label == TREE]) > np.median(dsm[ground]) + 2
    # optical: vegetation has a high NIR / red ratio, water a low NIR
    ndvi = (optical[3] - optical[2]) / (optical[3] + optical[2])
    assert ndvi[label == TREE].mean() > 0.5 and ndvi[label == 0].mean() < 0.3
    assert optical[3][label == WATER].mean() < 0.06


def test_more_looks_means_less_speckle() -> None:
    one = generate_scene(SyntheticConfig(size=96, seed=4, sar_looks=1, modalities=("sar",)))
    many = generate_scene(SyntheticConfig(size=96, seed=4, sar_looks=16, modalities=("sar",)))
    np.testing.assert_array_equal(one.label, many.label)  # same ground truth, only the sensor differs
    water = one.label == WATER
    assert water.sum() > 100
    spread_one, spread_many = one.image("sar")[0][water].std(), many.image("sar")[0][water].std()
    assert spread_one > 2 * spread_many  # single-look speckle is ~5.6 dB, 16 looks ~1.1 dB


def test_modalities_option_and_band_count() -> None:
    scene = generate_scene(SyntheticConfig(size=32, seed=0, modalities=("sar",), optical_bands=6))
    assert scene.modalities == ("sar",) and scene.optical is None and set(scene.valid) == {"sar"}
    six = generate_scene(SyntheticConfig(size=32, seed=0, optical_bands=6))
    assert six.image("optical").shape[0] == 6 and six.specs["optical"].bands == 6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"size": 4},
        {"optical_bands": 0},
        {"cloud_cover": 1.5},
        {"sar_gap": 1.0},
        {"cloud_region": (0.5, 0, 0.2, 1)},
        {"modalities": ()},
    ],
)
def test_invalid_config_is_rejected(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        SyntheticConfig(**kwargs)


def test_cloud_region_keeps_clouds_inside_the_box() -> None:
    scene = generate_scene(
        SyntheticConfig(size=128, seed=2, cloud_cover=0.2, cloud_region=(0.0, 0.5, 1.0, 1.0))
    )
    assert scene.cloud_mask is not None
    assert scene.cloud_mask[:, :64].sum() == 0 and scene.cloud_mask[:, 64:].any()


def test_write_scene_geotiffs(tmp_path: Path, scene: Scene) -> None:
    paths = write_scene(scene, tmp_path / "s")
    with rasterio.open(paths.optical) as src:
        assert src.dtypes[0] == "float32" and src.nodata == -9999.0 and src.crs.to_string() == "EPSG:32631"
        assert src.profile["compress"] == "deflate" and src.profile["tiled"]
        assert src.descriptions == ("blue", "green", "red", "nir")
        assert src.transform == scene.transform
    with rasterio.open(paths.sar) as src:
        data = src.read(1)
        np.testing.assert_array_equal(data == -9999.0, ~scene.valid["sar"])
    with rasterio.open(paths.label) as src:
        assert json.loads(src.tags()["CLASS_NAMES"]) == list(CLASS_NAMES)
        assert src.nodata == 255
        np.testing.assert_array_equal(src.read(1), scene.label)
    with rasterio.open(paths.cloud_mask) as src:
        np.testing.assert_array_equal(src.read(1).astype(bool), scene.cloud_mask)
    assert not list((tmp_path / "s").glob(".*partial"))


def test_split_counts() -> None:
    assert split_counts(8) == (6, 1, 1)
    assert split_counts(1) == (1, 0, 0)
    assert split_counts(20) == (14, 3, 3)
    assert sum(split_counts(5, (0.6, 0.2, 0.2))) == 5


def test_generate_dataset_index(tmp_path: Path) -> None:
    index = generate_dataset(tmp_path, scenes=3, size=32, seed=5, sar_gap=0.1, progress=False)
    payload = json.loads(index.read_text())
    assert payload["splits"] == {"train": ["scene_0000"], "val": ["scene_0001"], "test": ["scene_0002"]}
    assert [s["seed"] for s in payload["scenes"]] == [scene_seed(5, i) for i in range(3)]
    assert len({s["seed"] for s in payload["scenes"]}) == 3
    for entry in payload["scenes"]:
        for file_name in entry["files"].values():
            assert (tmp_path / entry["path"] / file_name).is_file()
    with pytest.raises(ConfigError, match="unknown synthetic option"):
        generate_dataset(tmp_path / "x", scenes=1, size=32, not_an_option=1, progress=False)


def test_mosaic_is_written_block_by_block(tmp_path: Path) -> None:
    paths = write_mosaic_scene(tmp_path, size=96, block=64, seed=1, sar_gap=0.2, progress=False)
    with rasterio.open(paths.sar) as src:
        assert (src.width, src.height, src.count) == (96, 96, 2)
        gap = (src.read(1) == -9999.0).mean()
    assert 0.12 < gap < 0.28
    with rasterio.open(paths.label) as src:
        label = src.read(1)
    assert label.max() < len(CLASS_NAMES)
    # the top-left block equals the independently generated block scene
    first = generate_scene(SyntheticConfig(size=64, seed=scene_seed(1, 0)))
    np.testing.assert_array_equal(label[:64, :64], first.label)


def test_synthetic_module_does_not_import_torch() -> None:
    code = "import sys, stars_edge.data.synthetic, stars_edge.data; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
