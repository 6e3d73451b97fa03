"""Per-modality mask dilation (``--mask-dilation optical=16``) and the context-margin override.

Dilation grows a modality's holes before anything uses them: the thin cloud edge a cloud mask misses. It is
read with a halo, so a tile's validity does not depend on where the tile starts; speckle is not grown.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_runtime_support import build_engines, make_physical, pattern_class_weights

from runtime import Predictor
from runtime.predictor import parse_mask_dilation
from stars_edge.errors import ConfigError
from stars_edge.manifest import load_manifest, save_manifest
from stars_edge.modalities import Pattern

SHAPE = (160, 200)
OPTICAL_SAR = Pattern.parse("optical+sar").index
SAR = Pattern.parse("sar").index


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_engines(tmp_path_factory.mktemp("engines"), pattern_class_weights(), classes=8)


def _inputs() -> tuple[dict[str, np.ndarray], np.ndarray]:
    values = make_physical(SHAPE, seed=4)
    clouds = np.zeros(SHAPE, dtype=bool)
    clouds[40:60, 70:110] = True  # ends 4 rows above a 64 px tile border: its growth crosses it
    return {"optical": values["optical"], "sar": values["sar"]}, clouds


def test_holes_grow_by_the_dilation_whatever_the_tiling(engines: Path) -> None:
    inputs, clouds = _inputs()
    plain = Predictor(engines, backend="onnxruntime", threads=1)
    dilated = Predictor(engines, backend="onnxruntime", threads=1, mask_dilation={"optical": 12})
    _, before = plain.predict_arrays(inputs, cloud_mask=clouds, tile=64, overlap=16)
    _, small = dilated.predict_arrays(inputs, cloud_mask=clouds, tile=64, overlap=0)
    _, large = dilated.predict_arrays(inputs, cloud_mask=clouds, tile=128, overlap=32)
    grown = np.zeros(SHAPE, dtype=bool)
    grown[28:72, 58:122] = True
    assert (before[grown & ~clouds] == OPTICAL_SAR).all()
    assert (small[grown] == SAR).all() and (large[grown] == SAR).all()
    assert (small[~grown] == OPTICAL_SAR).all()
    np.testing.assert_array_equal(small, large)


def test_speckle_is_not_grown(engines: Path) -> None:
    inputs, _ = _inputs()
    inputs["optical"][:, 30, 40] = np.nan  # one dead pixel: filled from its neighbours, not a hole
    dilated = Predictor(engines, backend="onnxruntime", threads=1, mask_dilation={"optical": 12})
    _, patterns = dilated.predict_arrays(inputs, tile=64, overlap=16)
    assert (patterns == OPTICAL_SAR).all()


def test_the_manifest_default_and_the_overrides(engines: Path, tmp_path: Path) -> None:
    manifest = load_manifest(engines)
    assert manifest.mask_dilation == {}
    manifest.mask_dilation = {"optical": 7}
    copy = tmp_path / "engines"
    copy.mkdir()
    for path in engines.iterdir():
        (copy / path.name).write_bytes(path.read_bytes())
    save_manifest(manifest, copy)
    assert Predictor(copy).mask_dilation == {"optical": 7}
    assert Predictor(copy, mask_dilation={"optical": 0}).mask_dilation == {"optical": 0}
    assert Predictor(copy, context_margin=5).context_margin == 5
    assert parse_mask_dilation(["optical=16", "SAR=2"]) == {"optical": 16, "sar": 2}
    assert parse_mask_dilation(None) is None
    with pytest.raises(ConfigError, match="MODALITY=PIXELS"):
        parse_mask_dilation(["optical:16"])
    with pytest.raises(ConfigError, match="--mask-dilation names 'radar'"):
        Predictor(copy, mask_dilation={"radar": 3})
    with pytest.raises(ConfigError, match="--context-margin must be >= 0"):
        Predictor(copy, context_margin=-1)


def test_edge_choice_picks_the_setting_with_the_best_miou(engines: Path) -> None:
    """Labels say: SAR alone inside the cloud and in an 8 px ring around it, optical+SAR elsewhere. A margin
    of 8 and a dilation of 8 both get it exactly; the tie goes to the margin (closer to the safe bound)."""
    from runtime.edges import HoleScene, choose_edges

    inputs, clouds = _inputs()
    label = np.full(SHAPE, OPTICAL_SAR, dtype=np.uint8)
    label[32:68, 62:118] = SAR
    scenes = [HoleScene(inputs, clouds, label)]
    choice = choose_edges(engines, scenes, measured_margin=0, source="test", tile=64, margins=(0, 8, 16))
    assert (choice.context_margin, choice.mask_dilation) == (8, {})
    scores = {(r["context_margin"], r["optical_dilation"]): r["miou"] for r in choice.scores}
    assert scores[(8, 0)] == scores[(0, 8)] == 100.0
    assert scores[(0, 0)] < 100.0 and scores[(16, 0)] < 100.0
    assert choice.to_dict()["chosen"] == {"context_margin": 8, "mask_dilation": {}}


def test_a_real_size_patch_keeps_its_optical_data_outside_the_hole(engines: Path) -> None:
    """101 px with a 40 px cloud: with a margin of 0 and a 16 px dilation, optical is dropped only within
    16 px of the cloud; the old 64 px margin dropped it everywhere."""
    values = make_physical((101, 101), seed=5)
    inputs = {"optical": values["optical"], "sar": values["sar"]}
    clouds = np.zeros((101, 101), dtype=bool)
    clouds[30:70, 30:70] = True
    near = np.zeros((101, 101), dtype=bool)
    near[14:86, 14:86] = True
    chosen = Predictor(
        engines, backend="onnxruntime", threads=1, context_margin=0, mask_dilation={"optical": 16}
    )
    _, patterns = chosen.predict_arrays(inputs, cloud_mask=clouds, tile=64, overlap=16)
    assert (patterns[~near] == OPTICAL_SAR).all() and (patterns[near] == SAR).all()
    old = Predictor(engines, backend="onnxruntime", threads=1, context_margin=64)
    _, patterns = old.predict_arrays(inputs, cloud_mask=clouds, tile=64, overlap=16)
    assert (patterns == SAR).all()


def test_the_edge_study_compares_against_the_measured_margin_not_the_chosen_one(engines: Path) -> None:
    from studies.edge_study import sensitivity_margin

    manifest = load_manifest(engines)
    manifest.context_margin = 16
    manifest.edge_choice = None
    assert sensitivity_margin(manifest) == 16  # no choice made: the manifest's margin is the measured one
    manifest.edge_choice = {"chosen": {"context_margin": 16, "mask_dilation": {}}, "measured_margin": 64}
    assert sensitivity_margin(manifest) == 64
