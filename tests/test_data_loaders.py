"""Dataset loaders: each real layout on a tiny fixture built here, the synthetic folder, the real chip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from stars_edge.data import open_dataset
from stars_edge.data.loaders import DATASET_FORMATS, detect_format, get_format, load_scene_folder, load_specs
from stars_edge.data.synthetic import SyntheticConfig, generate_dataset, generate_scene, write_scene
from stars_edge.errors import DataError

TRANSFORM_UTM = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 4200000.0)
TRANSFORM_GEO = Affine(8.983e-05, 0.0, -0.78, 0.0, -8.983e-05, 38.13)


def write_tif(
    path: Path,
    array: np.ndarray,
    transform: Affine | None = TRANSFORM_UTM,
    crs: str | None = "EPSG:32631",
    nodata: float | None = None,
    driver: str = "GTiff",
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = array[None] if array.ndim == 2 else array
    profile = {
        "driver": driver,
        "width": data.shape[2],
        "height": data.shape[1],
        "count": data.shape[0],
        "dtype": str(data.dtype),
        "nodata": nodata,
    }
    if transform is not None:
        profile.update(transform=transform, crs=crs)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
    return path


def rng_image(
    bands: int, dtype: str = "float32", size: int = 32, seed: int = 0, high: float = 1.0
) -> np.ndarray:
    values = np.random.default_rng(seed).uniform(0, high, size=(bands, size, size))
    return values.astype(dtype)


def test_registry_lists_every_format_and_rejects_unknown() -> None:
    assert set(DATASET_FORMATS) == {
        "synthetic",
        "sen1floods11",
        "earthmiss",
        "whu-opt-sar",
        "potsdam",
        "vaihingen",
    }
    assert get_format("WHU_OPT_SAR").name == "whu-opt-sar"
    with pytest.raises(DataError, match="valid formats: synthetic, sen1floods11"):
        get_format("landsat")


def test_auto_detects_layouts(tmp_path: Path) -> None:
    generate_dataset(tmp_path / "syn", scenes=1, size=32, seed=1, progress=False)
    (tmp_path / "s1" / "S1Hand").mkdir(parents=True)
    (tmp_path / "pots" / "4_Ortho_RGBIR").mkdir(parents=True)
    assert detect_format(tmp_path / "syn") == "synthetic"
    assert detect_format(tmp_path / "s1") == "sen1floods11"
    assert detect_format(tmp_path / "pots") == "potsdam"
    assert open_dataset(tmp_path / "syn")[0].name == "scene_0000"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="pass --format"):
        open_dataset(tmp_path / "empty")


def test_synthetic_folder_round_trip(tmp_path: Path) -> None:
    generate_dataset(tmp_path, scenes=3, size=32, seed=1, cloud_cover=0.3, progress=False)
    train, val, test = (open_dataset(tmp_path, split=s) for s in ("train", "val", "test"))
    assert [len(train), len(val), len(test)] == [1, 1, 1]
    scene = train[0]
    assert scene.modalities == ("optical", "sar", "dsm") and scene.label.dtype == np.uint8
    assert scene.cloud_mask is not None
    np.testing.assert_array_equal(scene.valid["optical"], ~scene.cloud_mask)  # cloud pixels are invalid
    with pytest.raises(DataError, match=r"index\.json"):
        open_dataset(tmp_path / "scene_0000", format="synthetic")
    with pytest.raises(DataError, match="unknown split"):
        open_dataset(tmp_path, split="holdout")
    lazy = open_dataset(tmp_path, split="all", lazy=True)
    assert len(lazy) == 3 and lazy[2].name == "scene_0002"
    assert lazy.shapes() == [(32, 32)] * 3  # type: ignore[attr-defined]


def test_stats_json_overrides_specs(tmp_path: Path) -> None:
    generate_dataset(tmp_path, scenes=1, size=32, seed=1, progress=False)
    spec = {"name": "sar", "band_names": ["vv", "vh"], "mean": [1.0, 2.0], "std": [3.0, 4.0]}
    (tmp_path / "stats.json").write_text(json.dumps({"specs": [spec]}))
    scene = open_dataset(tmp_path, split="train")[0]
    assert scene.specs["sar"].mean == (1.0, 2.0)
    with pytest.raises(DataError, match="no 'specs'"):
        load_specs({"nothing": 1})


def test_scene_folder_loader(tmp_path: Path) -> None:
    scene = generate_scene(SyntheticConfig(size=32, seed=3, sar_gap=0.25))
    write_scene(scene, tmp_path)
    loaded = load_scene_folder(tmp_path)
    np.testing.assert_array_equal(loaded.valid["sar"], scene.valid["sar"])
    np.testing.assert_allclose(
        loaded.image("sar")[:, scene.valid["sar"]], scene.image("sar")[:, scene.valid["sar"]]
    )


def make_sen1floods11(root: Path, chips: dict[str, str]) -> None:
    """The v1.1 bucket layout: data/flood_events/HandLabeled/{S1Hand,S2Hand,LabelHand} + splits CSVs."""
    base = root / "data" / "flood_events" / "HandLabeled"
    rows: dict[str, list[str]] = {"train": [], "valid": [], "test": []}
    for index, (chip, split) in enumerate(chips.items()):
        s1 = rng_image(2, seed=index) * -20
        s1[0, 0, :4] = np.nan  # S1 nodata is NaN
        write_tif(base / "S1Hand" / f"{chip}_S1Hand.tif", s1, TRANSFORM_GEO, "EPSG:4326", nodata=np.nan)
        write_tif(
            base / "S2Hand" / f"{chip}_S2Hand.tif",
            rng_image(13, "int16", seed=index, high=5000) + 1,
            TRANSFORM_GEO,
            "EPSG:4326",
            nodata=0,
        )
        label = np.zeros((32, 32), dtype=np.int16)
        label[:, 16:] = 1
        label[0, :] = -1
        write_tif(base / "LabelHand" / f"{chip}_LabelHand.tif", label, TRANSFORM_GEO, "EPSG:4326")
        rows[split].append(f"{chip}_S1Hand.tif,{chip}_LabelHand.tif")
    splits = root / "splits" / "flood_handlabeled"
    splits.mkdir(parents=True)
    for split, lines in rows.items():
        (splits / f"flood_{split}_data.csv").write_text("\n".join(lines) + "\n")


def test_sen1floods11_layout_labels_and_splits(tmp_path: Path) -> None:
    make_sen1floods11(tmp_path, {"Ghana_1": "train", "India_2": "train", "Spain_3": "valid", "USA_4": "test"})
    train = open_dataset(tmp_path, split="train", format="sen1floods11")
    assert sorted(s.name for s in train) == ["Ghana_1", "India_2"]
    assert [s.name for s in open_dataset(tmp_path, split="val", format="sen1floods11")] == ["Spain_3"]
    scene = train[0]
    assert scene.class_names == ("not_water", "water")
    assert scene.image("optical").shape == (13, 32, 32) and scene.image("sar").shape == (2, 32, 32)
    assert scene.image("optical").max() <= 0.5001  # S2 DN / 10000 -> reflectance
    assert (
        (scene.label[0] == 255).all()
        and (scene.label[1:, 16:] == 1).all()
        and (scene.label[1:, :16] == 0).all()
    )
    assert not scene.valid["sar"][0, :4].any() and scene.valid["sar"][1:].all()
    rgbn = open_dataset(
        tmp_path, split="test", format="sen1floods11", bands={"optical": ["B2", "B3", "B4", "B8"]}
    )
    assert rgbn[0].image("optical").shape == (4, 32, 32) and rgbn[0].specs["optical"].band_names == (
        "B2",
        "B3",
        "B4",
        "B8",
    )
    with pytest.raises(DataError, match="no band named 'B99'"):
        open_dataset(tmp_path, split="test", format="sen1floods11", bands={"optical": ["B99"]})


def test_sen1floods11_real_chip(shared_data: Path) -> None:
    scenes = open_dataset(shared_data / "sen1floods11_sample", split="all", format="sen1floods11")
    assert len(scenes) == 1
    scene = scenes[0]
    assert scene.name == "Spain_7370579" and scene.crs == "EPSG:4326"
    assert scene.image("optical").shape == (13, 512, 512) and scene.image("sar").shape == (2, 512, 512)
    counts = np.bincount(scene.label.reshape(-1), minlength=256)
    assert (counts[0], counts[1], counts[255]) == (192010, 70035, 99)  # the README's label histogram
    # real signal: water is darker than land in VV and in NIR
    water, land = scene.label == 1, scene.label == 0
    assert scene.image("sar")[0][water].mean() < scene.image("sar")[0][land].mean() - 3
    assert scene.image("optical")[7][water].mean() < scene.image("optical")[7][land].mean()


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_earthmiss_layout(tmp_path: Path) -> None:
    for city in ("Nanjing", "Japan-Hakodate"):
        images = tmp_path / city / "images"
        write_tif(images / "RGB" / "tile_1.tif", rng_image(3, "uint8", high=255), transform=None)
        write_tif(images / "SAR" / "tile_1_SAR.tif", rng_image(1, "uint8", high=255), transform=None)
        mask = np.full((32, 32), 2, dtype=np.uint8)  # stored as class + 1: 2 -> building (1)
        mask[:4] = 0  # unlabelled
        write_tif(tmp_path / city / "masks" / "tile_1_mask.tif", mask, transform=None)
    train = open_dataset(tmp_path, split="train", format="earthmiss")
    test = open_dataset(tmp_path, split="test", format="earthmiss")
    assert [s.name for s in train] == ["Nanjing/tile_1"] and [s.name for s in test] == [
        "Japan-Hakodate/tile_1"
    ]
    scene = train[0]
    assert scene.modalities == ("optical", "sar") and scene.image("optical").shape == (3, 32, 32)
    assert (scene.label[:4] == 255).all() and (scene.label[4:] == 1).all()
    assert scene.class_names[1] == "building"


def test_whu_opt_sar_both_layouts(tmp_path: Path) -> None:
    original = tmp_path / "original"
    for index in range(5):
        name = f"NH49E00{index}.tif"
        write_tif(original / "optical" / name, rng_image(4, "uint8", high=255))
        write_tif(original / "sar" / name, rng_image(1, "uint8", high=255))
        write_tif(original / "lbl" / name, np.full((32, 32), 40, dtype=np.uint8))
    splits = {s: open_dataset(original, split=s, format="whu-opt-sar") for s in ("train", "val", "test")}
    assert [len(v) for v in splits.values()] == [3, 1, 1]
    assert (splits["train"][0].label == 4).all()  # 40 -> water (4)
    cropped = tmp_path / "cropped"
    for split in ("train", "val", "test"):
        write_tif(cropped / split / "opt" / "a_1.tif", rng_image(4, "uint8", high=255))
        write_tif(cropped / split / "sar" / "a_1.tif", rng_image(1, "uint8", high=255))
        write_tif(cropped / split / "lbl" / "a_1.tif", np.full((32, 32), 6, dtype=np.uint8))
    scene = open_dataset(cropped, split="val", format="whu-opt-sar")[0]
    assert scene.name == "val/a_1" and (scene.label == 6).all()


def isprs_label(colours: list[tuple[int, int, int]]) -> np.ndarray:
    label = np.zeros((3, 32, 32), dtype=np.uint8)
    for index, colour in enumerate(colours):
        label[:, :, index * 4 : (index + 1) * 4] = np.array(colour, dtype=np.uint8)[:, None, None]
    return label


def test_potsdam_layout_colours_and_dsm(tmp_path: Path) -> None:
    colours = [
        (255, 255, 255),
        (0, 0, 255),
        (0, 255, 255),
        (0, 255, 0),
        (255, 255, 0),
        (255, 0, 0),
        (0, 0, 0),
    ]
    for key, padded in (("2_10", "02_10"), ("2_13", "02_13")):
        write_tif(
            tmp_path / "4_Ortho_RGBIR" / f"top_potsdam_{key}_RGBIR.tif", rng_image(4, "uint8", high=255)
        )
        write_tif(tmp_path / "1_DSM" / f"dsm_potsdam_{padded}.tif", rng_image(1, high=40.0))
        write_tif(tmp_path / "5_Labels_all" / f"top_potsdam_{key}_label.tif", isprs_label(colours))
    train = open_dataset(tmp_path, split="train", format="potsdam")
    assert [s.name for s in train] == ["potsdam_2_10"]
    assert [s.name for s in open_dataset(tmp_path, split="test", format="potsdam")] == ["potsdam_2_13"]
    scene = train[0]
    assert scene.modalities == ("optical", "dsm") and scene.image("optical").shape == (4, 32, 32)
    expected = [0, 1, 2, 3, 4, 5, 255, 255]  # black boundary (and unlisted) colours are ignored
    assert [int(scene.label[0, i * 4]) for i in range(8)] == expected


def test_potsdam_rgb_only_tiles(tmp_path: Path) -> None:
    write_tif(tmp_path / "2_Ortho_RGB" / "top_potsdam_7_13_RGB.tif", rng_image(3, "uint8", high=255))
    write_tif(tmp_path / "5_Labels_all" / "top_potsdam_7_13_label.tif", isprs_label([(0, 0, 255)]))
    scene = open_dataset(tmp_path, split="test", format="potsdam")[0]
    assert scene.modalities == ("optical",) and scene.specs["optical"].band_names == ("red", "green", "blue")
    assert (scene.label[:, :4] == 1).all()


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_unreferenced_label_with_georeferenced_images(tmp_path: Path) -> None:
    # the image has a CRS, the label is a plain TIFF of the same size: co-registered by pixel grid
    write_tif(tmp_path / "top" / "top_mosaic_09cm_area3.tif", rng_image(3, "uint8", high=255))
    write_tif(
        tmp_path / "gts_for_participants" / "top_mosaic_09cm_area3.tif",
        isprs_label([(255, 0, 0)]),
        transform=None,
    )
    scene = open_dataset(tmp_path, split="train", format="vaihingen")[0]
    assert (scene.label[:, :4] == 5).all() and scene.optical is not None
    write_tif(tmp_path / "dsm" / "dsm_09cm_matching_area3.tif", rng_image(1, size=16))
    with pytest.raises(DataError, match=r"16 x 16 px but its reference grid is 32 x 32"):
        open_dataset(tmp_path, split="train", format="vaihingen")


def test_vaihingen_layout(tmp_path: Path) -> None:
    write_tif(tmp_path / "top" / "top_mosaic_09cm_area1.tif", rng_image(3, "uint8", high=255))
    write_tif(tmp_path / "dsm" / "dsm_09cm_matching_area1.tif", rng_image(1, high=300.0))
    write_tif(tmp_path / "gts_for_participants" / "top_mosaic_09cm_area1.tif", isprs_label([(0, 255, 0)]))
    scene = open_dataset(tmp_path, split="train", format="vaihingen")[0]
    assert scene.name == "vaihingen_area1" and scene.image("optical").shape == (3, 32, 32)
    assert scene.specs["optical"].band_names == ("nir", "red", "green")
    assert (scene.label[:, :4] == 3).all()


def test_misaligned_modality_is_warped_onto_the_label_grid(tmp_path: Path) -> None:
    # SAR at 20 m (half the resolution) over the same area: read back on the 10 m label grid
    base = tmp_path / "data" / "flood_events" / "HandLabeled"
    write_tif(base / "LabelHand" / "X_1_LabelHand.tif", np.zeros((32, 32), np.int16))
    coarse = np.tile(np.arange(16, dtype=np.float32), (2, 16, 1))
    write_tif(base / "S1Hand" / "X_1_S1Hand.tif", coarse, Affine(20.0, 0, 600000.0, 0, -20.0, 4200000.0))
    scene = open_dataset(tmp_path, split="all", format="sen1floods11")[0]
    assert scene.image("sar").shape == (2, 32, 32)
    assert scene.image("sar")[0, 5, 0] == pytest.approx(0.0, abs=0.3) and scene.image("sar")[
        0, 5, 31
    ] == pytest.approx(15.0, abs=0.3)


def test_mismatched_extent_names_the_file(tmp_path: Path) -> None:
    base = tmp_path / "S1Hand"
    write_tif(tmp_path / "LabelHand" / "X_1_LabelHand.tif", np.zeros((32, 32), np.int16))
    shifted = Affine(10.0, 0, 600160.0, 0, -10.0, 4200000.0)  # half the scene to the east
    write_tif(base / "X_1_S1Hand.tif", rng_image(2), shifted)
    with pytest.raises(DataError, match=r"X_1_S1Hand.tif covers only 50%"):
        open_dataset(tmp_path, split="all", format="sen1floods11")


def test_wrong_band_count_names_the_file(tmp_path: Path) -> None:
    write_tif(tmp_path / "top" / "top_mosaic_09cm_area1.tif", rng_image(4, "uint8", high=255))
    write_tif(tmp_path / "gts_for_participants" / "top_mosaic_09cm_area1.tif", isprs_label([(0, 255, 0)]))
    with pytest.raises(DataError, match=r"top_mosaic_09cm_area1\.tif has 4 band\(s\) but vaihingen optical"):
        open_dataset(tmp_path, split="all", format="vaihingen")


def test_unreadable_file_and_missing_layout(tmp_path: Path) -> None:
    (tmp_path / "S1Hand").mkdir()
    (tmp_path / "S1Hand" / "Y_1_S1Hand.tif").write_bytes(b"not a tiff")
    with pytest.raises(DataError, match=r"Y_1_S1Hand\.tif"):
        open_dataset(tmp_path, split="all", format="sen1floods11")
    with pytest.raises(DataError, match="does not match the ISPRS Potsdam layout"):
        open_dataset(tmp_path, split="all", format="potsdam")
