"""trunk_norm="modality": one BatchNorm per modality in the shared trunk (export: test_model_export.py)."""

from __future__ import annotations

import pytest
import torch

from stars_edge.errors import ConfigError
from stars_edge.models import create_model
from stars_edge.models.modality_norm import ModalityNorm, active_modality, modality_norms

BANDS = {"optical": 4, "sar": 2, "dsm": 1}


def test_default_trunk_is_unchanged_and_modality_trunk_has_one_norm_per_modality() -> None:
    shared = create_model("tiny", BANDS, classes=3)
    per_modality = create_model("tiny", BANDS, classes=3, trunk_norm="modality")
    assert not modality_norms(shared)
    norms = modality_norms(per_modality.shared)
    assert norms and all(list(n.per_modality) == ["optical", "sar", "dsm"] for n in norms)
    assert not [
        m
        for m in per_modality.shared.modules()
        if type(m) is torch.nn.BatchNorm2d and m not in {bn for n in norms for bn in n.per_modality.values()}
    ]
    # the convolutions are shared: same parameter count apart from the extra BatchNorm affines
    extra = sum(p.numel() for n in norms for p in n.parameters()) - sum(
        p.numel() for n in norms for p in n.per_modality["optical"].parameters()
    )
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(per_modality) - count(shared) == extra
    single = create_model("tiny", {"sar": 2}, classes=3, method="single_modality", trunk_norm="modality")
    assert not modality_norms(single)


def test_unknown_trunk_norm_is_refused_with_the_valid_names() -> None:
    with pytest.raises(ConfigError, match="shared, modality"):
        create_model("tiny", BANDS, classes=3, trunk_norm="instance")


def test_a_norm_without_its_modality_is_an_error() -> None:
    norm = ModalityNorm(4, ["optical"])
    with pytest.raises(ConfigError, match="active_modality"):
        norm(torch.randn(1, 4, 2, 2))
    with active_modality([norm], "sar"), pytest.raises(ConfigError, match="'sar'"):
        norm(torch.randn(1, 4, 2, 2))


def test_training_gathers_statistics_per_modality_and_inference_uses_them() -> None:
    """A training forward updates each modality's statistics from its own inputs only; in eval mode a
    modality's features do not depend on what the other modalities' BatchNorms hold."""
    torch.manual_seed(0)
    model = create_model("tiny", BANDS, classes=3, trunk_norm="modality").train()
    inputs = {
        "optical": torch.randn(2, 4, 64, 64),
        "sar": 5 + 3 * torch.randn(2, 2, 64, 64),
        "dsm": torch.randn(2, 1, 64, 64),
    }
    model(inputs)
    first = modality_norms(model.shared)[0]
    means = {m: first.per_modality[m].running_mean.clone() for m in BANDS}
    assert not torch.allclose(means["optical"], means["sar"])
    model.eval()
    with torch.no_grad():
        sar_before = model.encode({"sar": inputs["sar"]})["sar"].shared[0]
        optical_before = model.encode({"optical": inputs["optical"]})["optical"].shared[0]
        for norm in modality_norms(model.shared):
            norm.per_modality["optical"].running_mean.mul_(0.5)
        sar_after = model.encode({"sar": inputs["sar"]})["sar"].shared[0]
        optical_after = model.encode({"optical": inputs["optical"]})["optical"].shared[0]
    torch.testing.assert_close(sar_before, sar_after)
    assert not torch.allclose(optical_before, optical_after)
