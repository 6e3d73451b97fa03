"""INT8 accuracy control: the layers it ranks first are the ones that cost accuracy; it keeps them float."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import onnx
import pytest
from int8_models import SPECS, TILE, export_fp32, train_tiny

from export.accuracy_control import ControlTiles, control_int8, logit_error, quantized_convs, rank_layers
from export.ort_utils import make_session, run_logits
from export.quantize import quantize_int8
from export.tiles import TileSet, load_tiles
from stars_edge.modalities import Pattern

PATTERN = Pattern.parse("sar")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TileSet, ControlTiles]:
    tiles = load_tiles("synthetic", SPECS, 24, TILE, "calibration")  # 16 calibrate, 8 control
    calibration, control = tiles.subset(slice(0, 16)), tiles.subset(slice(16, None))
    fp32 = export_fp32(train_tiny(calibration), [PATTERN], tmp_path_factory.mktemp("control"))[PATTERN]
    return fp32, calibration, ControlTiles(control.select(PATTERN.modalities), control.labels, 7, 255)


def _quantizer(fp32: Path, calibration: TileSet, folder: Path):  # type: ignore[no-untyped-def]
    ranges = folder / "ranges.json"

    def quantize(float_nodes: Sequence[str], path: Path) -> Path:
        inputs = calibration.select(PATTERN.modalities)
        return quantize_int8(fp32, path, inputs, float_nodes=float_nodes, ranges_cache=ranges)

    return quantize


def test_the_top_ranked_layer_costs_more_than_the_last(
    setup: tuple[Path, TileSet, ControlTiles], tmp_path: Path
) -> None:
    """Keeping the first-ranked layer float must cut the logit error more than keeping the last one float."""
    fp32, calibration, tiles = setup
    quantize = _quantizer(fp32, calibration, tmp_path)
    reference = run_logits(make_session(fp32), tiles.inputs)
    full = quantize((), tmp_path / "full.onnx")
    candidates = quantized_convs(onnx.load(str(full)))
    ranking = rank_layers(quantize, candidates, tiles, reference, tmp_path / "r.onnx", None)
    assert sorted(ranking) == sorted(candidates) and len(candidates) > 5

    def error(float_nodes: Sequence[str]) -> float:
        path = quantize(float_nodes, tmp_path / "e.onnx")
        return logit_error(run_logits(make_session(path), tiles.inputs), reference)

    all_quantized, first, last = error(()), error(ranking[:1]), error(ranking[-1:])
    assert first < all_quantized and first < last, (first, last, all_quantized)


def test_control_keeps_layers_float_until_the_target(
    setup: tuple[Path, TileSet, ControlTiles], tmp_path: Path
) -> None:
    fp32, calibration, tiles = setup
    quantize = _quantizer(fp32, calibration, tmp_path)
    easy = control_int8(quantize, fp32, tmp_path / "easy.onnx", tiles, target=100.0)
    assert easy.float_layers == () and easy.drop_after == easy.drop_before and easy.within_target
    lines: list[str] = []
    hard = control_int8(quantize, fp32, tmp_path / "hard.onnx", tiles, -100.0, 3, lines.append)
    assert not hard.within_target and len(hard.float_layers) <= 3
    assert sum("float layer(s)" in line for line in lines) == 3  # it tried 1, 2 and 3 layers
    assert hard.drop_after <= hard.drop_before
    written = onnx.load(str(tmp_path / "hard.onnx"))
    assert not set(hard.float_layers) & set(quantized_convs(written))
    assert len(quantized_convs(written)) == hard.candidates - len(hard.float_layers)
    assert not (tmp_path / "hard.onnx.control.onnx").exists()
