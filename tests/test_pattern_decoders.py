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


def test_each_decoder_gets_its_own_inference_mode_statistics() -> None:
    """``estimate_pattern_statistics`` re-estimates every per-pattern decoder's BatchNorms (it used 0 batches
    before): the statistics of the features that decoder sees at inference, one pattern each."""
    from stars_edge.models.pattern_norm import estimate_pattern_statistics

    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=3, decoder="per_pattern")
    norm = model.pattern_decoders["sar"]["smooth"][1].shared  # type: ignore[index]
    norm.running_mean.fill_(123.0)
    full_norm = model.pattern_decoders["optical+sar+dsm"]["smooth"][1].shared  # type: ignore[index]
    batch = {m: torch.randn(4, b, 64, 64) for m, b in BANDS.items()}
    assert estimate_pattern_statistics(model, [batch, batch]) == 2
    assert model.training  # restored
    assert not torch.allclose(norm.running_mean, torch.full_like(norm.running_mean, 123.0))
    assert not torch.allclose(norm.running_mean, full_norm.running_mean)
    model.eval()
    with torch.no_grad():  # the sar decoder normalises with what it was estimated on: near zero mean
        encoded = model.encode({"sar": batch["sar"]})
        smooth_input: list[torch.Tensor] = []
        handle = model.pattern_decoders["sar"]["smooth"][1].register_forward_hook(  # type: ignore[index]
            lambda module, args, out: smooth_input.append(out.clone())  # before the in-place ReLU
        )
        model.decode(model.complete({"sar": encoded["sar"]}), model.patterns[-2])
        handle.remove()
    assert model.patterns[-2].name == "sar"
    assert smooth_input[0].mean(dim=(0, 2, 3)).abs().mean() < 0.2


def test_per_pattern_decoders_refuse_the_draw_schedule() -> None:
    from training.config import TrainConfig

    with pytest.raises(ConfigError, match="needs pattern_schedule: all"):
        TrainConfig(decoder="per_pattern", pattern_schedule="draw")
    TrainConfig(decoder="per_pattern")


def test_the_manifest_says_how_per_pattern_decoder_statistics_were_obtained() -> None:
    from types import SimpleNamespace

    from export.build_options import describe_normalization

    model = create_model("tiny", BANDS, classes=3, decoder="per_pattern")
    trained = SimpleNamespace(config={"pattern_norm_batches": 16, "decoder_statistics": "reestimated"})
    assert "re-estimated in inference mode on 16" in describe_normalization(model, trained)
    older = SimpleNamespace(config={"pattern_norm_batches": 16})  # trained before the re-estimation existed
    assert "from training" in describe_normalization(model, older)
