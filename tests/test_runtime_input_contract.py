"""Inputs as real products encode them: the input contract, band descriptions, --bands, --dtm, alpha masks.

Every fixture is a real GeoTIFF written here with rasterio (descriptions, scale tags, alpha bands, warped
footprints) from a held-out synthetic scene; the engines carry the contract export records from the
synthetic calibration scenes. Wrong encodings must be refused with one line naming the file and the fix;
correct ones (held-out scenes, the real chips) must run.
"""

from __future__ import annotations

import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.enums import ColorInterp
from rasterio.transform import from_origin
from test_runtime_support import build_engines, random_weights

from export.tiles import SYNTHETIC, sample_physical
from runtime import Predictor
from runtime.bands import canonical_band, parse_band_selection
from runtime.modality_readers import modality_groups
from runtime.raster_source import RasterSource
from stars_edge.contract import contract_from_values
from stars_edge.data.synthetic import SyntheticConfig, generate_scene, synthetic_specs, write_scene
from stars_edge.errors import ConfigError, DataError
from stars_edge.manifest import load_manifest, save_manifest
from stars_edge.modalities import ALL_PATTERNS, DEFAULT_SPECS

PROJECT_ROOT = Path(__file__).resolve().parents[1]
if str(PROJECT_ROOT) not in sys.path:
    sys.path.insert(0, str(PROJECT_ROOT))

from studies.input_contract import rewrite_geotiff  # noqa: E402

SPECS = synthetic_specs()
HELD_OUT_SEEDS = (4_242_001, 4_242_002)


@pytest.fixture(scope="module", params=[1, 4], ids=["stride1", "stride4"])
def engines(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Path:
    """Conv engines on the synthetic specs, with the contract ``build-engines`` records by default; every
    test runs with engines that end at full resolution and with engines that return stride-4 logits (the
    ``build-engines`` default)."""
    folder = build_engines(
        tmp_path_factory.mktemp("engines"),
        random_weights(classes=3, seed=5),
        classes=3,
        specs=SPECS,
        logits_stride=request.param,
    )
    values, source = sample_physical(SYNTHETIC, SPECS, 256)
    manifest = load_manifest(folder)
    manifest.input_contract = {m: contract_from_values(SPECS[m], values[m], source) for m in SPECS}
    save_manifest(manifest, folder)
    return folder


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A held-out scene as ``stars-edge data synth`` writes it (band descriptions, nodata)."""
    written = write_scene(
        generate_scene(SyntheticConfig(size=256, seed=HELD_OUT_SEEDS[0])), tmp_path_factory.mktemp("scene")
    )
    assert written.optical and written.sar and written.dsm
    return {"optical": written.optical, "sar": written.sar, "dsm": written.dsm}


def _run(engines: Path, tmp_path: Path, **inputs: object) -> tuple[object, np.ndarray]:
    predictor = Predictor(engines, backend="onnxruntime", threads=1)
    summary = predictor.predict_scene(
        out=tmp_path / "pred.tif", pattern_map=tmp_path / "patterns.tif", progress=False, **inputs
    )  # type: ignore[arg-type]
    with rasterio.open(tmp_path / "pred.tif") as dataset:
        classes = dataset.read(1)
    return summary, classes


# ------------------------------------------------------------------------------------ correct encodings


def test_held_out_scenes_with_their_correct_encodings_run(engines: Path, tmp_path: Path) -> None:
    for seed in HELD_OUT_SEEDS:
        folder = tmp_path / str(seed)
        written = write_scene(
            generate_scene(SyntheticConfig(size=256, seed=seed, cloud_cover=0.3)), folder / "scene"
        )
        summary, _ = _run(
            engines,
            folder,
            optical=written.optical,
            sar=written.sar,
            dsm=written.dsm,
            cloud_mask=written.cloud_mask,
        )
        assert summary.input_notes == []  # type: ignore[attr-defined]


# ------------------------------------------------------------------------------------- wrong encodings

WRONG = {
    "sar linear power": ("sar", lambda a: 10 ** (a / 10), (None, None), "looks like linear power"),
    "sar linear amplitude": ("sar", lambda a: 10 ** (a / 20), (None, None), "looks like linear amplitude"),
    "sar VH,VV undescribed": ("sar", lambda a: a[::-1], (None, None), "bands in the order vh,vv"),
    "dsm altitude +50 m": ("dsm", lambda a: a + 50, None, "looks like terrain altitude"),
    "dsm altitude +120 m": ("dsm", lambda a: a + 120, None, "looks like terrain altitude"),
    "dsm in feet": ("dsm", lambda a: a / 0.3048, None, "looks like feet"),
    "optical R,G,B,NIR undescribed": (
        "optical",
        lambda a: a[[2, 1, 0, 3]],
        (None, None, None, None),
        "bands in the order red,green,blue,nir",
    ),
    "optical DN without scale tag": ("optical", lambda a: a * 10000, None, "reflectance x 10000"),
}


@pytest.mark.parametrize("case", sorted(WRONG))
def test_wrong_encodings_are_refused_in_one_line(
    case: str, engines: Path, scene: dict[str, Path], tmp_path: Path
) -> None:
    modality, change, descriptions, expected = WRONG[case]
    wrong = rewrite_geotiff(scene[modality], tmp_path / f"{modality}.tif", change, descriptions)
    inputs = {**scene, modality: wrong}
    with pytest.raises(DataError) as error:
        _run(engines, tmp_path, **inputs)
    message = str(error.value)
    assert expected in message and str(wrong) in message and "\n" not in message
    assert not (tmp_path / "pred.tif").exists()


def test_altitude_refusal_says_how_to_make_a_normalised_dsm(
    engines: Path, scene: dict[str, Path], tmp_path: Path
) -> None:
    altitude = rewrite_geotiff(scene["dsm"], tmp_path / "dsm.tif", lambda a: a + 120)
    with pytest.raises(DataError, match="DSM - DTM") as error:
        _run(engines, tmp_path, dsm=altitude)
    assert "--dtm" in str(error.value) and "ground at about 1" in str(error.value)


def test_a_terrain_model_turns_altitude_into_height_above_ground(
    engines: Path, scene: dict[str, Path], tmp_path: Path
) -> None:
    """--dtm: the same map as the normalised DSM, from altitude (terrain with relief) minus the DTM."""
    with rasterio.open(scene["dsm"]) as dataset:
        profile = dataset.profile
        rows, cols = np.mgrid[0 : dataset.height, 0 : dataset.width]
    terrain = (300.0 + 0.4 * rows + 0.2 * cols)[None].astype(np.float32)
    dtm = tmp_path / "dtm.tif"
    with rasterio.open(dtm, "w", **{**profile, "nodata": None}) as out:
        out.write(terrain)
    altitude = rewrite_geotiff(scene["dsm"], tmp_path / "altitude.tif", lambda a: a + terrain)
    _, expected = _run(engines, tmp_path / "reference", dsm=scene["dsm"])
    _, classes = _run(engines, tmp_path / "with_dtm", dsm=altitude, dtm=dtm)
    assert (classes == expected).mean() > 0.999
    with pytest.raises(DataError, match="terrain altitude"):
        _run(engines, tmp_path / "without", dsm=altitude)


# ---------------------------------------------------------------------------------- band descriptions


def test_described_bands_in_another_order_are_reordered_and_reported(
    engines: Path, scene: dict[str, Path], tmp_path: Path
) -> None:
    swapped_sar = rewrite_geotiff(scene["sar"], tmp_path / "sar.tif", lambda a: a[::-1], ("VH", "VV"))
    rgbn = rewrite_geotiff(
        scene["optical"], tmp_path / "optical.tif", lambda a: a[[2, 1, 0, 3]], ("B4", "B3", "B2", "B8")
    )
    _, expected = _run(engines, tmp_path / "reference", optical=scene["optical"], sar=scene["sar"])
    summary, classes = _run(engines, tmp_path / "reordered", optical=rgbn, sar=swapped_sar)
    assert np.array_equal(classes, expected)
    notes = " ".join(summary.input_notes)  # type: ignore[attr-defined]
    assert "optical: bands 3,2,1,4 reordered by their descriptions" in notes
    assert "sar: bands 2,1 reordered by their descriptions" in notes


def test_descriptions_naming_other_bands_are_refused(
    engines: Path, scene: dict[str, Path], tmp_path: Path
) -> None:
    swir = rewrite_geotiff(
        scene["optical"], tmp_path / "optical.tif", descriptions=("blue", "green", "red", "swir1")
    )
    with pytest.raises(DataError, match=r"band 4 is described as 'swir1' but would feed the engines' nir"):
        _run(engines, tmp_path, optical=swir)


def test_bands_select_from_a_multiband_stack_by_number_or_description(
    engines: Path, scene: dict[str, Path], tmp_path: Path
) -> None:
    """A 13-band Sentinel-2-like stack (B1..B12, B8A) with the scale tag of L2A products."""
    names = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")
    positions = {"B2": 0, "B3": 1, "B4": 2, "B8": 3}

    def stack(a: np.ndarray) -> np.ndarray:
        filler = np.full(a.shape[1:], 0.2)
        return np.stack([a[positions[n]] if n in positions else filler for n in names]) * 10000

    described = rewrite_geotiff(scene["optical"], tmp_path / "s2.tif", stack, names, "uint16", scale=1e-4)
    bare = rewrite_geotiff(
        scene["optical"], tmp_path / "s2_bare.tif", stack, ("",) * 13, "uint16", scale=1e-4
    )
    _, expected = _run(engines, tmp_path / "reference", optical=scene["optical"])
    for path, selection, note in (
        (described, None, "bands 2,3,4,8 of 13 selected by their descriptions"),
        (bare, {"optical": ("2", "3", "4", "8")}, "bands 2,3,4,8 of 13 (--bands)"),
        (described, {"optical": ("B2", "B3", "B4", "B8")}, "bands 2,3,4,8 of 13 (--bands)"),
    ):
        summary, classes = _run(engines, tmp_path / path.stem, optical=path, bands=selection)
        assert (classes == expected).mean() > 0.999  # uint16 rounding moves a few pixels at most
        assert f"optical: {note}" in summary.input_notes  # type: ignore[attr-defined]
    with pytest.raises(DataError, match=r"has 13 bands .* --bands optical=N,N"):
        _run(engines, tmp_path / "none", optical=bare)


def test_sentinel2_l2a_baseline_04_offset_is_applied(
    engines: Path, scene: dict[str, Path], tmp_path: Path
) -> None:
    """L2A since processing baseline 04.00: DN = (reflectance + 0.1) x 10000, declared as scale 1e-4 and
    offset -0.1 (BOA_ADD_OFFSET); the runtime applies both, so the map matches the reflectance file's."""
    l2a = rewrite_geotiff(
        scene["optical"], tmp_path / "l2a.tif", lambda a: (a + 0.1) * 10000, None, "uint16", 1e-4, -0.1
    )
    _, expected = _run(engines, tmp_path / "reference", optical=scene["optical"])
    summary, classes = _run(engines, tmp_path / "l2a", optical=l2a)
    assert (classes == expected).mean() > 0.999  # uint16 rounding moves a few pixels at most
    assert summary.input_notes == []  # type: ignore[attr-defined]


def test_band_selection_errors_name_the_problem(
    engines: Path, scene: dict[str, Path], tmp_path: Path
) -> None:
    with pytest.raises(ConfigError, match="picks 3 band"):
        _run(engines, tmp_path, optical=scene["optical"], bands={"optical": ("1", "2", "3")})
    with pytest.raises(ConfigError, match=r"band 9 .* is not a band"):
        _run(engines, tmp_path, optical=scene["optical"], bands={"optical": ("1", "2", "3", "9")})
    with pytest.raises(DataError, match="would feed the engines' blue input \\(you chose it\\)"):
        _run(engines, tmp_path, optical=scene["optical"], bands={"optical": ("3", "2", "1", "4")})
    with pytest.raises(ConfigError, match="MODALITY=BANDS"):
        parse_band_selection(["radar=1,2"])
    assert parse_band_selection(["optical=2,3,4,8", "sar=VV,VH"]) == {
        "optical": ("2", "3", "4", "8"),
        "sar": ("VV", "VH"),
    }


def test_description_spellings() -> None:
    assert canonical_band("Sigma0_VV_db") == "vv"
    assert canonical_band("B04 - Red") == "red"
    assert canonical_band("B8A") == "nir_narrow" and canonical_band("B8") == "nir"
    assert canonical_band("near infrared") == "nir"
    assert canonical_band("Band 1") is None and canonical_band("") is None and canonical_band(None) is None


# ---------------------------------------------------------------------------------------------- masks


def test_an_alpha_band_masks_the_data_whatever_the_band_count(
    engines: Path, scene: dict[str, Path], tmp_path: Path
) -> None:
    """4 data bands + alpha, as gdalwarp -dstalpha writes it: alpha 0 means nothing was measured."""
    with rasterio.open(scene["optical"]) as dataset:
        data, profile = dataset.read(), dataset.profile
    alpha = np.full(data.shape[1:], 255, dtype=np.float32)
    alpha[:, :100] = 0
    path = tmp_path / "optical_alpha.tif"
    with rasterio.open(path, "w", **{**profile, "count": 5, "nodata": None}) as out:
        out.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * 3 + [ColorInterp.alpha]
        out.write(np.concatenate([np.where(data == -9999, 0, data), alpha[None]]))
    _run(engines, tmp_path, optical=path, sar=scene["sar"])
    with rasterio.open(tmp_path / "patterns.tif") as dataset:
        patterns = dataset.read(1)
    with_optical = [p.index for p in ALL_PATTERNS if "optical" in p]
    assert not np.isin(patterns[:, :100], with_optical).any()  # no optical where alpha is 0
    assert np.isin(patterns[:, 140:], with_optical).mean() > 0.9


def _assert_sar_only_on_the_left(engines: Path, tmp_path: Path, **inputs: object) -> None:
    """SAR measured on the left half only: no pixel right of it may use SAR, most left of it do."""
    _run(engines, tmp_path, **inputs)
    with rasterio.open(tmp_path / "patterns.tif") as dataset:
        patterns = dataset.read(1)
    with_sar = [p.index for p in ALL_PATTERNS if "sar" in p]
    assert not np.isin(patterns[:, 132:], with_sar).any()
    assert np.isin(patterns[:, :120], with_sar).mean() > 0.8


def test_a_warped_secondary_is_invalid_outside_its_footprint(
    engines: Path, scene: dict[str, Path], tmp_path: Path
) -> None:
    """A SAR raster covering the left half, on another grid, NaN outside and no nodata tag."""
    with rasterio.open(scene["sar"]) as dataset:
        data, transform = dataset.read(), dataset.transform
    left = np.where(data == -9999, np.nan, data)[:, :, :128]
    shifted = transform * transform.translation(0.5, 0.5)  # half a pixel off: the runtime must warp it
    path = tmp_path / "sar_half.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=128, height=256, count=2, dtype="float32", crs=dataset.crs,
        transform=shifted,
    ) as out:  # fmt: skip
        out.write(left.astype(np.float32))
    _assert_sar_only_on_the_left(engines, tmp_path, optical=scene["optical"], sar=path)


def test_four_band_uint8_with_alpha_explains_the_band_count(engines: Path, tmp_path: Path) -> None:
    path = tmp_path / "rgba.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=64, height=64, count=4, dtype="uint8", crs="EPSG:32631",
        transform=from_origin(0, 64, 1, 1), photometric="RGB",
    ) as out:  # fmt: skip
        out.colorinterp = [ColorInterp.red, ColorInterp.green, ColorInterp.blue, ColorInterp.alpha]
        out.write(np.full((4, 64, 64), 20, dtype=np.uint8))
    with pytest.raises(DataError, match=r"3 data band.*band 4 is flagged alpha.*-colorinterp_4 undefined"):
        _run(engines, tmp_path, optical=path)


# ------------------------------------------------------------------------------------------------ paths


def test_vsi_paths_are_read_through_gdal(engines: Path, scene: dict[str, Path], tmp_path: Path) -> None:
    archive = tmp_path / "scene.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.write(scene["sar"], "sar.tif")
    _, expected = _run(engines, tmp_path / "plain", sar=scene["sar"])
    _, classes = _run(engines, tmp_path / "zipped", sar=f"/vsizip/{archive}/sar.tif")
    assert np.array_equal(classes, expected)
    with pytest.raises(DataError, match="not a readable raster"):
        _run(engines, tmp_path / "missing", sar=f"/vsizip/{archive}/nothing.tif")


def test_a_directory_as_input_is_named_as_such(engines: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory; pass a raster file"):
        _run(engines, tmp_path, sar=tmp_path)


# ----------------------------------------------------------------------------------------- real chips


def test_real_chips_with_their_correct_encodings_are_not_refused(
    engines: Path, shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Sentinel-2 L1C (13 bands, reflectance x 10000: the scale tag added as a product carries it) with
    --bands, Sentinel-1 VV/VH dB, and the SpaceNet 6 quad-pol SAR (dB) picked as VV,VH: against the
    synthetic training contract, through the CLI, none is refused."""
    folder = shared_data / "sen1floods11_sample"
    s2, s1 = folder / "Spain_7370579_S2Hand.tif", folder / "Spain_7370579_S1Hand.tif"
    sar6 = shared_data / "spacenet6_solaris_sample" / "sar_masked.tif"
    if not (s2.is_file() and s1.is_file() and sar6.is_file()):
        pytest.skip(f"real chips not found under {shared_data}")
    scaled = rewrite_geotiff(s2, tmp_path / "s2_scaled.tif", scale=1e-4)
    base = ["run", "--engines", str(engines), "--backend", "onnxruntime", "--no-progress"]
    optical_sar = [*base, "--optical", str(scaled), "--sar", str(s1), "--bands", "optical=2,3,4,8"]
    assert _main([*optical_sar, "--out", str(tmp_path / "s1s2.tif")]) == 0
    assert "optical: bands 2,3,4,8 of 13 (--bands)" in capsys.readouterr().out
    spacenet = [*base, "--sar", str(sar6), "--bands", "sar=4,3", "--out", str(tmp_path / "sn6.tif")]
    assert _main(spacenet) == 0
    unscaled = [*base, "--optical", str(s2), "--bands", "optical=2,3,4,8", "--out", str(tmp_path / "dn.tif")]
    assert _main(unscaled) == 1  # the same chip without its scale tag is DN: refused
    assert "looks like reflectance x 10000" in capsys.readouterr().err


def _main(argv: list[str]) -> int:
    from stars_edge.cli import main

    try:
        main(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def test_arrays_are_held_to_the_same_contract(engines: Path) -> None:
    """The on-board path (a sensor hands over arrays) refuses linear power like a file."""
    scene = generate_scene(SyntheticConfig(size=128, seed=HELD_OUT_SEEDS[1]))
    predictor = Predictor(engines, backend="onnxruntime", threads=1)
    sar = np.where(scene.valid["sar"][None], scene.sar, np.nan).astype(np.float32)
    classes, _ = predictor.predict_arrays({"sar": sar}, tile=64)
    assert (classes != 255).any()
    linear = 10 ** (sar / 10)
    with pytest.raises(DataError, match="input array 'sar': sar looks like linear power"):
        predictor.predict_arrays({"sar": linear}, tile=64)
    with pytest.warns(UserWarning, match="looks like linear power"):
        predictor.predict_arrays({"sar": linear}, tile=64, allow_out_of_range=True)


def test_a_warped_secondary_keeps_its_own_alpha_band(
    engines: Path, scene: dict[str, Path], tmp_path: Path
) -> None:
    """SAR with an alpha band (right half 0) on another grid: the warp carries the alpha, the run uses it."""
    with rasterio.open(scene["sar"]) as dataset:
        data, transform, crs = dataset.read(), dataset.transform, dataset.crs
    alpha = np.full(data.shape[1:], 255, dtype=np.float32)
    alpha[:, 128:] = 0
    path = tmp_path / "sar_alpha.tif"
    with rasterio.open(
        path, "w", driver="GTiff", width=256, height=256, count=3, dtype="float32", crs=crs,
        transform=transform * transform.translation(0.5, 0.5),
    ) as out:  # fmt: skip
        out.colorinterp = [ColorInterp.gray, ColorInterp.undefined, ColorInterp.alpha]
        out.write(np.concatenate([np.where(data == -9999, -15.0, data), alpha[None]]).astype(np.float32))
    _assert_sar_only_on_the_left(engines, tmp_path, optical=scene["optical"], sar=path)


def test_gcp_only_rasters_get_the_gdalwarp_advice(engines: Path, tmp_path: Path) -> None:
    from rasterio.control import GroundControlPoint

    path = tmp_path / "raw.tif"
    gcps = [
        GroundControlPoint(r, c, 500000 + c, 5600000 - r) for r, c in ((0, 0), (0, 63), (63, 0), (63, 63))
    ]
    with rasterio.open(
        path, "w", driver="GTiff", width=64, height=64, count=2, dtype="float32", gcps=gcps,
        crs="EPSG:32631",
    ) as out:  # fmt: skip
        out.write(np.full((2, 64, 64), -12.0, dtype=np.float32))
    with pytest.raises(DataError, match=r"ground control points.*gdalwarp") as error:
        _run(engines, tmp_path, sar=path)
    assert "gdal_edit.py -a_srs" not in str(error.value)


def test_two_readers_give_the_maps_of_one_on_inputs_encoded_like_products(
    engines: Path, scene: dict[str, Path], tmp_path: Path
) -> None:
    """Two readers split by file here (optical against SAR + DSM, ``runtime/modality_readers.py``; by
    columns, each on its own handles, where the split is uneven): band descriptions in another order, an
    L2A scale and offset, an alpha band, a SAR warped from a smaller footprint on a shifted grid and a DSM
    in altitude with its terrain model must read the same through both as through one."""
    optical = rewrite_geotiff(
        scene["optical"], tmp_path / "l2a.tif", lambda a: (a[[2, 1, 0, 3]] + 0.1) * 10000,
        ("B4", "B3", "B2", "B8"), "uint16", 1e-4, -0.1,
    )  # fmt: skip
    with rasterio.open(optical) as dataset:
        data, profile = dataset.read(), dataset.profile
        scales, offsets, descriptions = dataset.scales, dataset.offsets, dataset.descriptions
    alpha = np.full(data.shape[1:], 255, dtype=np.uint16)
    alpha[:, :60] = 0
    with_alpha = tmp_path / "l2a_alpha.tif"
    with rasterio.open(with_alpha, "w", **{**profile, "count": 5, "nodata": None}) as out:
        out.colorinterp = [ColorInterp.gray] + [ColorInterp.undefined] * 3 + [ColorInterp.alpha]
        out.write(np.concatenate([data, alpha[None]]))
        out.scales, out.offsets = (*scales, 1.0), (*offsets, 0.0)
        out.descriptions = (*descriptions, "alpha")
    with rasterio.open(scene["sar"]) as dataset:
        sar, transform, crs = dataset.read(), dataset.transform, dataset.crs
    sar_left = tmp_path / "sar_left.tif"
    with rasterio.open(
        sar_left, "w", driver="GTiff", width=128, height=256, count=2, dtype="float32", crs=crs,
        transform=transform * transform.translation(0.5, 0.5),
    ) as out:  # fmt: skip
        out.write(np.where(sar == -9999, np.nan, sar)[:, :, :128].astype(np.float32))
    with rasterio.open(scene["dsm"]) as dataset:
        dsm_profile = dataset.profile
    terrain = np.full((1, 256, 256), 412.0, dtype=np.float32)
    dtm = tmp_path / "dtm.tif"
    with rasterio.open(dtm, "w", **{**dsm_profile, "nodata": None}) as out:
        out.write(terrain)
    altitude = rewrite_geotiff(scene["dsm"], tmp_path / "altitude.tif", lambda a: a + terrain)
    inputs = {"optical": with_alpha, "sar": sar_left, "dsm": altitude, "dtm": dtm}
    source = RasterSource({m: inputs[m] for m in ("optical", "sar", "dsm")}, DEFAULT_SPECS, dtm=dtm)
    try:
        assert modality_groups(source, 2) == [("optical",), ("sar", "dsm")]  # the split these inputs take
    finally:
        source.close()
    outputs = []
    for readers in (1, 2):
        folder = tmp_path / f"readers{readers}"
        folder.mkdir()
        with Predictor(engines, backend="onnxruntime", threads=1, readers=readers) as predictor:
            summary = predictor.predict_scene(
                out=folder / "pred.tif", pattern_map=folder / "patterns.tif", progress=False, **inputs
            )  # type: ignore[arg-type]
        assert summary.reader_threads == readers
        assert "optical: bands 3,2,1,4 reordered by their descriptions" in " ".join(summary.input_notes)
        outputs.append(((folder / "pred.tif").read_bytes(), (folder / "patterns.tif").read_bytes()))
    assert outputs[1] == outputs[0]
    with rasterio.open(tmp_path / "readers2" / "patterns.tif") as dataset:
        patterns = dataset.read(1)
    assert not np.isin(patterns[:, :60], [p.index for p in ALL_PATTERNS if "optical" in p]).any()
    assert not np.isin(patterns[:, 132:], [p.index for p in ALL_PATTERNS if "sar" in p]).any()
