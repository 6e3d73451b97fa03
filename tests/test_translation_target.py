"""``translation_target="specific"``: translators predict a missing modality's specific features, and its
fused features are rebuilt from the present modalities' shared features through its own mixer."""

from __future__ import annotations

import pytest
import torch

from stars_edge.errors import ConfigError
from stars_edge.modalities import Pattern
from stars_edge.models import create_model, export_module

BANDS = {"optical": 4, "sar": 2, "dsm": 1}


def _inputs(pattern: Pattern, size: int = 64, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {m: torch.randn(2, BANDS[m], size, size, generator=generator) for m in pattern}


def test_translators_output_the_specific_width_and_targets_are_specific_features() -> None:
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=4, translation_scales=(1, 3), translation_target="specific")
    encoded = model.eval().encode(_inputs(Pattern.full()))
    targets = model.translation_targets(encoded)
    for m, features in targets.items():
        assert all(t is s for t, s in zip(features, encoded[m].specific, strict=True))
    translated = model.translate("optical", "dsm", encoded["optical"].fused)
    for scale, output in translated.items():
        assert output.shape == encoded["dsm"].specific[scale].shape
        assert output.shape[1] != encoded["dsm"].fused[scale].shape[1]
    fused_model = create_model("tiny", BANDS, classes=4)
    fused_targets = fused_model.eval().translation_targets(fused_model.encode(_inputs(Pattern.full())))
    assert fused_targets["sar"][3].shape[1] == fused_model.feature_channels[3]


def test_missing_modality_is_rebuilt_from_shared_mean_and_translated_specific_through_its_mixer() -> None:
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=4, translation_target="specific").eval()
    encoded = model.encode(_inputs(Pattern.parse("optical+sar")))
    completed = model.complete(encoded)
    specific = (
        model.translate("optical", "dsm", encoded["optical"].fused)[3]
        + model.translate("sar", "dsm", encoded["sar"].fused)[3]
    ) / 2
    shared = (encoded["optical"].shared[3] + encoded["sar"].shared[3]) / 2
    mixer = model.mixers["dsm"][3]  # type: ignore[index]
    torch.testing.assert_close(completed["dsm"][3], shared + mixer(torch.cat([shared, specific], dim=1)))
    assert not completed["dsm"][0].any()
    # the real modalities keep their own features
    assert completed["optical"][3] is encoded["optical"].fused[3]


def test_the_missing_modality_mixer_shapes_the_output_only_with_the_specific_target() -> None:
    """Perturbing dsm's mixer changes an optical+sar prediction with the specific target, not with fused."""
    inputs = _inputs(Pattern.parse("optical+sar"))
    for target, expect_change in (("specific", True), ("fused", False)):
        torch.manual_seed(0)
        model = create_model("tiny", BANDS, classes=4, translation_target=target).eval()
        before = model(inputs)
        with torch.no_grad():
            for parameter in model.mixers["dsm"].parameters():
                parameter.add_(0.5)
        changed = not torch.allclose(before, model(inputs))
        assert changed == expect_change, target


def test_export_module_of_a_specific_target_model_matches_the_model() -> None:
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=3, translation_target="specific")
    pattern = Pattern.parse("sar")
    module = export_module(model, pattern)
    inputs = _inputs(pattern)
    torch.testing.assert_close(module(inputs["sar"]), model.eval()(inputs))


def test_unknown_translation_target_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match="fused, specific"):
        create_model("tiny", BANDS, classes=3, translation_target="shared")


def test_specific_target_translators_are_trained_towards_specific_features() -> None:
    """One optimiser step on the translation loss alone moves the translation towards the specific target."""
    from training.losses import translation_loss

    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=4, translation_target="specific").train()
    inputs = _inputs(Pattern.full())
    optimiser = torch.optim.SGD(model.translators.parameters(), lr=0.05)

    def loss() -> torch.Tensor:
        encoded = model.encode(inputs)
        fused = {m: e.fused for m, e in encoded.items()}
        pairs = {(s, t): model.translate(s, t, fused[s]) for s in fused for t in fused if s != t}
        return translation_loss(pairs, model.translation_targets(encoded), stop_gradient=True)

    first = loss()
    optimiser.zero_grad()
    first.backward()
    optimiser.step()
    assert loss().item() < first.item()
