"""decoder="per_pattern": one decoder per availability pattern; its engine holds only that one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stars_edge.errors import ConfigError
from stars_edge.models import create_model, export_module

pytest.importorskip("onnx")
from onnx_checks import BANDS, conv_count, export_legacy


def _conv_count(module: torch.nn.Module, names: list[str], path: Path) -> int:
    export_legacy(module, names, path)
    return conv_count(path)


def test_the_default_decoder_is_shared_and_keeps_its_parameter_names() -> None:
    model = create_model("tiny", BANDS, classes=3)
    keys = model.state_dict().keys()
    assert not any(k.startswith("pattern_decoders.") for k in keys)
    assert {"head.weight", "smooth.0.weight", "fusion.0.1.0.weight"} <= set(keys)


def test_each_pattern_has_its_own_decoder_and_nothing_else_changes() -> None:
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=3, decoder="per_pattern").eval()
    assert sorted(model.pattern_decoders) == sorted(p.name for p in model.patterns)
    assert not hasattr(model, "head")
    x = {m: torch.randn(1, b, 64, 64) for m, b in BANDS.items()}
    with torch.no_grad():
        before = {p: model({m: x[m] for m in p.split("+")}) for p in ("optical", "sar", "optical+sar")}
        model.pattern_decoders["optical"]["head"].bias.add_(1.0)  # type: ignore[index,union-attr]
        after = {p: model({m: x[m] for m in p.split("+")}) for p in before}
    assert not torch.allclose(before["optical"], after["optical"])
    torch.testing.assert_close(before["sar"], after["sar"])
    torch.testing.assert_close(before["optical+sar"], after["optical+sar"])


def test_an_engine_holds_only_its_patterns_decoder(tmp_path: Path) -> None:
    torch.manual_seed(0)
    shared = create_model("tiny", BANDS, classes=3).eval()
    per_pattern = create_model("tiny", BANDS, classes=3, decoder="per_pattern").eval()
    for pattern in ("sar", "optical+sar+dsm"):
        names = pattern.split("+")
        assert _conv_count(export_module(per_pattern, pattern), names, tmp_path / "p.onnx") == _conv_count(
            export_module(shared, pattern), names, tmp_path / "s.onnx"
        )


def test_single_modality_models_and_unknown_modes() -> None:
    single = create_model("tiny", {"sar": 2}, classes=3, method="single_modality", decoder="per_pattern")
    assert not single.pattern_decoders and hasattr(single, "head")
    with pytest.raises(ConfigError, match="shared, per_pattern"):
        create_model("tiny", BANDS, classes=3, decoder="private")
