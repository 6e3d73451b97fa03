"""Real chips from ../shared/data end to end, with conv engines whose band counts match the files."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from test_runtime_support import build_engines, random_weights, reference_probabilities

from runtime import Predictor
from runtime.validity import speckle_mask
from stars_edge.modalities import ModalitySpec, Pattern

S2_BANDS = ("B1", "B2", "B3", "B4", "B5", "B6", "B7", "B8", "B8A", "B9", "B10", "B11", "B12")


def _spec(name: str, bands: tuple[str, ...], mean: float, std: float) -> ModalitySpec:
    return ModalitySpec(name, bands, (mean,) * len(bands), (std,) * len(bands))


def test_sen1floods11_optical_sar(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "sen1floods11_sample"
    optical, sar = folder / "Spain_7370579_S2Hand.tif", folder / "Spain_7370579_S1Hand.tif"
    if not optical.is_file() or not sar.is_file():
        pytest.skip(f"Sen1Floods11 chip not found in {folder}")
    specs = {
        "optical": _spec("optical", S2_BANDS, 1500.0, 1000.0),
        "sar": _spec("sar", ("vv", "vh"), -12.0, 5.0),
    }
    weights = random_weights(classes=2, seed=11)
    engines = build_engines(tmp_path / "engines", weights, classes=2, specs=specs)
    out = tmp_path / "pred.tif"
    summary = Predictor(engines, backend="onnxruntime", threads=1).predict_scene(
        optical=optical,
        sar=sar,
        out=out,
        pattern_map=tmp_path / "patterns.tif",
        tile=256,
        overlap=32,
        batch=2,
        progress=False,
    )
    with rasterio.open(optical) as reference, rasterio.open(out) as result:
        assert result.crs == reference.crs and result.transform == reference.transform
        assert result.shape == reference.shape == (512, 512)
        classes = result.read(1)
        inputs = {"optical": reference.read().astype(np.float32)}
    with rasterio.open(sar) as dataset:
        inputs["sar"] = dataset.read()
    assert summary.pattern_pixels == {"none": 0, "optical+sar": 512 * 512}
    expected = reference_probabilities(inputs, specs, Pattern.parse("optical+sar"), weights).argmax(axis=0)
    assert (classes == expected).mean() > 0.999


@pytest.mark.parametrize("logits_stride", [1, 4])
def test_spacenet6_rgb_and_sar_with_nan_footprint(
    shared_data: Path, tmp_path: Path, logits_stride: int
) -> None:
    folder = shared_data / "spacenet6_solaris_sample"
    optical, sar = folder / "rgb_unmasked.tif", folder / "sar_masked.tif"
    if not optical.is_file() or not sar.is_file():
        pytest.skip(f"SpaceNet 6 sample not found in {folder}")
    specs = {
        "optical": _spec("optical", ("red", "green", "blue"), 100.0, 60.0),
        "sar": _spec("sar", ("hh", "hv", "vh", "vv"), 10.0, 8.0),
    }
    weights = random_weights(classes=3, seed=2)
    engines = build_engines(
        tmp_path / "engines", weights, classes=3, specs=specs, logits_stride=logits_stride
    )
    predictor = Predictor(engines, backend="onnxruntime", threads=1)
    predictor.predict_scene(
        optical=optical,
        sar=sar,
        out=tmp_path / "pred.tif",
        pattern_map=tmp_path / "patterns.tif",
        tile=64,
        overlap=16,
        min_valid=0.01,
        progress=False,
    )
    with rasterio.open(sar) as dataset:
        sar_valid = np.isfinite(dataset.read()).all(axis=0)
    with rasterio.open(tmp_path / "patterns.tif") as dataset:
        patterns = dataset.read(1)
    assert 0.3 < 1 - sar_valid.mean() < 0.5  # the README's 39 % NaN footprint
    # every tile with any SAR uses it, pixel by pixel: SAR exactly where it is finite, optical elsewhere
    np.testing.assert_array_equal(patterns[sar_valid], Pattern.parse("optical+sar").index)
    # NaN speckle (no all-NaN 3x3 square around it, e.g. jagged footprint edges) is filled from neighbours
    speckle = speckle_mask(sar_valid, np.ones_like(sar_valid))
    np.testing.assert_array_equal(patterns[~sar_valid & ~speckle], Pattern.parse("optical").index)
