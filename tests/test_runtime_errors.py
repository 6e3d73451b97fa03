"""Bad inputs fail early with one-line StarsEdgeError messages and leave no output that looks complete."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from test_runtime_support import build_engines, make_physical, pattern_class_weights, write_raster

from runtime import Predictor
from stars_edge.errors import BackendUnavailableError, ConfigError, DataError, ManifestError, OutputError
from stars_edge.modalities import Pattern

TRANSFORM = Affine(10.0, 0.0, 300000.0, 0.0, -10.0, 4000000.0)


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engines(tmp_path_factory.mktemp("engines"), pattern_class_weights(), classes=8)


@pytest.fixture
def predictor(engines: Path) -> Predictor:
    return Predictor(engines, backend="onnxruntime", threads=1)


@pytest.fixture(scope="module")
def rasters(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("rasters")
    values = make_physical((64, 64))
    return {
        "optical": write_raster(folder / "optical.tif", values["optical"], TRANSFORM),
        "sar": write_raster(folder / "sar.tif", values["sar"], TRANSFORM),
    }


def _assert_one_line(error: pytest.ExceptionInfo[BaseException]) -> None:
    assert "\n" not in str(error.value) and str(error.value)


def _no_outputs(folder: Path) -> None:
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith((".pred", "pred"))]
    assert leftovers == []


def test_missing_input_file(predictor: Predictor, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist") as error:
        predictor.predict_scene(
            optical=tmp_path / "nope.tif", out=tmp_path / "pred.tif", tile=32, overlap=8, progress=False
        )
    _assert_one_line(error)
    _no_outputs(tmp_path)


def test_unreadable_file(predictor: Predictor, tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tif"
    bogus.write_bytes(b"II*\x00 this is not a tiff at all" * 10)
    with pytest.raises(DataError, match="not a readable raster") as error:
        predictor.predict_scene(optical=bogus, out=tmp_path / "pred.tif", tile=32, overlap=8, progress=False)
    _assert_one_line(error)


def test_truncated_geotiff(predictor: Predictor, tmp_path: Path) -> None:
    values = make_physical((256, 256), seed=2)["optical"]
    path = tmp_path / "truncated.tif"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=256,
        width=256,
        count=4,
        dtype="float32",
        crs="EPSG:32631",
        transform=TRANSFORM,
        tiled=True,
        blockxsize=64,
        blockysize=64,
        compress="deflate",
    ) as dataset:
        dataset.write(values)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated") as error:
        predictor.predict_scene(optical=path, out=tmp_path / "pred.tif", tile=64, overlap=0, progress=False)
    _assert_one_line(error)
    _no_outputs(tmp_path)


def test_rasters_that_do_not_overlap(predictor: Predictor, rasters: dict[str, Path], tmp_path: Path) -> None:
    far = write_raster(
        tmp_path / "far.tif", make_physical((64, 64))["sar"], TRANSFORM @ Affine.translation(5000, 0)
    )
    with pytest.raises(DataError, match="does not overlap") as error:
        predictor.predict_scene(
            optical=rasters["optical"], sar=far, out=tmp_path / "pred.tif", progress=False
        )
    _assert_one_line(error)


def test_wrong_band_count(predictor: Predictor, tmp_path: Path) -> None:
    three = write_raster(tmp_path / "rgb.tif", make_physical((64, 64))["optical"][:3], TRANSFORM)
    with pytest.raises(DataError, match=r"3 data band.*expect 4 optical") as error:
        predictor.predict_scene(optical=three, out=tmp_path / "pred.tif", progress=False)
    _assert_one_line(error)
    with pytest.raises(DataError, match="expect 2 sar"):
        predictor.predict_arrays({"sar": np.zeros((3, 32, 32), dtype=np.float32)}, tile=32, overlap=8)


def test_all_nodata_scene(predictor: Predictor, tmp_path: Path) -> None:
    empty = np.full((2, 64, 64), -9999.0, dtype=np.float32)
    sar = write_raster(tmp_path / "sar_empty.tif", empty, TRANSFORM, nodata=-9999.0)
    with pytest.raises(DataError, match="no valid pixel") as error:
        predictor.predict_scene(sar=sar, out=tmp_path / "pred.tif", tile=32, overlap=8, progress=False)
    _assert_one_line(error)
    _no_outputs(tmp_path)


def test_nan_and_inf_patches_are_invalid(predictor: Predictor) -> None:
    inputs = make_physical((64, 64), seed=4)
    inputs["optical"][2, 5:9, 5:9] = np.nan
    inputs["sar"][0, 40:44, 40:44] = np.inf
    inputs["dsm"][0, 20:22, 50:52] = -np.inf
    classes, patterns = predictor.predict_arrays(inputs, tile=32, overlap=8)
    assert (patterns[5:9, 5:9] == Pattern.parse("sar+dsm").index).all()
    assert (patterns[40:44, 40:44] == Pattern.parse("optical+dsm").index).all()
    # a 2x2 patch is speckle: filled from its valid neighbours and predicted with every modality
    assert (patterns[20:22, 50:52] == Pattern.full().index).all()
    assert (patterns == Pattern.full().index).sum() == 64 * 64 - 16 - 16
    assert (classes == patterns).all()


def test_manifest_from_another_model(engines: Path) -> None:
    with pytest.raises(ManifestError, match="exported from checkpoint") as error:
        Predictor(engines, expected_model_sha256="0" * 64)
    _assert_one_line(error)


def test_engine_file_altered(tmp_path: Path) -> None:
    folder = build_engines(tmp_path / "engines", pattern_class_weights(), classes=8)
    with (folder / "sar.fp32.onnx").open("ab") as handle:
        handle.write(b"tampered")
    predictor = Predictor(folder, backend="onnxruntime")  # engines are verified at first use
    predictor.predict_arrays({"optical": make_physical((32, 32))["optical"]}, tile=32, overlap=0)
    with pytest.raises(ManifestError, match="sha256") as error:
        predictor.predict_arrays({"sar": make_physical((32, 32))["sar"]}, tile=32, overlap=0)
    _assert_one_line(error)


def test_missing_engine_for_a_needed_pattern(tmp_path: Path, rasters: dict[str, Path]) -> None:
    folder = build_engines(
        tmp_path / "engines",
        pattern_class_weights(),
        classes=8,
        patterns=(Pattern.parse("optical+sar"), Pattern.parse("sar")),
    )
    predictor = Predictor(folder, backend="onnxruntime")
    with pytest.raises(ManifestError, match="no engine for optical") as error:
        predictor.predict_scene(
            optical=rasters["optical"], sar=rasters["sar"], out=tmp_path / "p.tif", progress=False
        )
    _assert_one_line(error)
    assert not (tmp_path / "p.tif").exists()


def test_output_path_not_writable(predictor: Predictor, rasters: dict[str, Path], tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(OutputError, match="not a directory") as error:
        predictor.predict_scene(optical=rasters["optical"], out=blocker / "pred.tif", progress=False)
    _assert_one_line(error)
    with pytest.raises(OutputError, match="is a directory"):
        predictor.predict_scene(optical=rasters["optical"], out=tmp_path, progress=False)
    with pytest.raises(OutputError, match="different files"):
        predictor.predict_scene(
            optical=rasters["optical"], out=tmp_path / "x.tif", pattern_map=tmp_path / "x.tif", progress=False
        )


def test_bad_options(predictor: Predictor, rasters: dict[str, Path], tmp_path: Path, engines: Path) -> None:
    with pytest.raises(ConfigError, match="multiple of 32"):
        predictor.predict_scene(optical=rasters["optical"], out=tmp_path / "p.tif", tile=50, progress=False)
    with pytest.raises(ConfigError, match="min-valid"):
        predictor.predict_scene(
            optical=rasters["optical"], out=tmp_path / "p.tif", min_valid=0, progress=False
        )
    with pytest.raises(ConfigError, match="precision"):
        Predictor(engines, precision="int4")
    with pytest.raises(ConfigError, match="backend"):
        Predictor(engines, backend="cuda")
    with pytest.raises(DataError, match="cloud-mask"):
        predictor.predict_scene(sar=rasters["sar"], cloud_mask=rasters["sar"], out=tmp_path / "p.tif")


def test_tensorrt_requested_where_unavailable(
    engines: Path, rasters: dict[str, Path], tmp_path: Path
) -> None:
    from runtime.backends import TensorRTBackend

    if TensorRTBackend.is_available():
        pytest.skip("TensorRT is available here")
    predictor = Predictor(engines, backend="tensorrt")
    with pytest.raises(BackendUnavailableError, match="onnxruntime") as error:
        predictor.predict_scene(optical=rasters["optical"], out=tmp_path / "p.tif", progress=False)
    _assert_one_line(error)
