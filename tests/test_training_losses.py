"""The mechanisms STARS relies on: stop-gradient, collapse without it, class-balanced PSA."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from stars_edge.models import STARSModel, create_model
from training.config import TrainConfig
from training.data import build_training_data
from training.loop import train
from training.losses import (
    collapse_diagnostics,
    cross_modal_supcon,
    dice_loss,
    psa_loss,
    segmentation_loss,
    translation_loss,
)

BANDS = {"optical": 4, "sar": 2, "dsm": 1}


def _stem_grad(model: STARSModel, modality: str) -> float:
    grads = [p.grad.abs().sum().item() for p in model.stems[modality].parameters() if p.grad is not None]
    return float(sum(grads))


@pytest.mark.parametrize("stop_gradient", [True, False])
def test_stop_gradient_blocks_the_target_branch_only(stop_gradient: bool) -> None:
    torch.manual_seed(0)
    # eval mode: in train mode the shared trunk's BatchNorm batch statistics mix all modalities, a (tiny)
    # second path between branches that has nothing to do with the loss (see docs/MODEL.md)
    model = create_model("tiny", BANDS, classes=3).eval()
    inputs = {m: torch.randn(2, b, 64, 64) for m, b in BANDS.items()}
    encoded = model.encode(inputs)
    fused = {m: e.fused for m, e in encoded.items()}
    translations = {("optical", "sar"): model.translate("optical", "sar", fused["optical"])}
    translation_loss(translations, fused, stop_gradient=stop_gradient).backward()
    assert _stem_grad(model, "optical") > 0  # the source always learns to translate
    if stop_gradient:
        assert _stem_grad(model, "sar") == 0.0  # the target is never pulled towards its translation
    else:
        assert _stem_grad(model, "sar") > 0


def test_collapse_without_stop_gradient_but_not_with_it(tmp_path: Path) -> None:
    """Translation loss alone (no segmentation signal) at a high learning rate is collapse-prone: the
    symmetric variant shrinks the spread of normalised features towards 0, the stop-gradient one does not."""
    base = dict(
        variant="tiny",
        tile_size=64,
        batch_size=4,
        synthetic_size=128,
        synthetic_train_scenes=2,
        synthetic_val_scenes=1,
        steps=40,
        seg_weight=0.0,
        lambda_psa=0.0,
        lambda_tr=1.0,
        lr=0.02,
        warmup_steps=0,
        schedule="constant",
        log_every=5,
        val_every=1000,
        checkpoint_every=1000,
        full_pattern_prob=1.0,
        pattern_schedule="draw",
        decoder="shared",
        lambda_distill=0.0,
        translation_distance="cosine",
        translation_scales=(0, 1, 2, 3),
        psa_scale=0,
        seed=0,
    )
    data = build_training_data(TrainConfig(**base))  # type: ignore[arg-type]
    stds = {}
    for method in ("stars", "stars_no_stopgrad"):
        config = TrainConfig(**base, method=method, output_dir=tmp_path / method)  # type: ignore[arg-type]
        result = train(config, progress=False, data=data)
        rows = [json.loads(line) for line in result.log_path.read_text().splitlines()]
        stds[method] = [row["feature_std"] for row in rows if "feature_std" in row]
    assert stds["stars_no_stopgrad"][-1] < 0.35 * stds["stars"][-1]
    assert stds["stars_no_stopgrad"][-1] < 0.5 * stds["stars_no_stopgrad"][0]
    assert stds["stars"][-1] > 0.7 * stds["stars"][0]


def test_psa_uses_equal_anchors_per_class_and_rewards_aligned_views(monkeypatch: pytest.MonkeyPatch) -> None:
    labels = torch.zeros(2, 64, 64, dtype=torch.long)
    labels[:, :4, :] = 1  # minority class
    labels[0, 30:34, 30:34] = 2  # rare class
    generator = torch.Generator().manual_seed(0)
    classes = torch.arange(3).repeat_interleave(8)
    prototypes = F.normalize(torch.randn(3, 16, generator=generator), dim=1)
    aligned = [prototypes[classes], prototypes[classes]]
    shuffled = [prototypes[classes], prototypes[classes[torch.randperm(24, generator=generator)]]]
    assert cross_modal_supcon(aligned, classes, 0.1) < cross_modal_supcon(shuffled, classes, 0.1)

    embeddings = {m: F.normalize(torch.randn(2, 8, 16, 16, generator=generator), dim=1) for m in ("a", "b")}
    seen: list[torch.Tensor] = []
    import training.losses as losses_module

    original = losses_module.class_balanced_pixel_indices

    def spy(*args: Any, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        out = original(*args, **kwargs)
        seen.append(out[1])
        return out

    monkeypatch.setattr(losses_module, "class_balanced_pixel_indices", spy)
    loss = psa_loss(embeddings, labels, stride=4, per_class=6, temperature=0.1, generator=generator)
    assert torch.isfinite(loss)
    assert torch.bincount(seen[0], minlength=3).tolist() == [
        6,
        6,
        1,
    ]  # the 4x4 rare patch is one stride-4 cell


def test_segmentation_and_dice_losses_ignore_unlabelled_pixels() -> None:
    labels = torch.randint(0, 3, (2, 8, 8))
    perfect = F.one_hot(labels, 3).permute(0, 3, 1, 2).float() * 20
    assert dice_loss(perfect, labels) < 0.01
    ignored = labels.clone()
    ignored[:, :4] = 255
    noisy = perfect.clone()
    noisy[:, :, :4] = torch.randn(2, 3, 4, 8) * 20
    assert segmentation_loss(noisy, ignored, dice_weight=1.0) < 0.01


def test_collapse_diagnostics_tell_collapsed_from_spread_features() -> None:
    generator = torch.Generator().manual_seed(0)
    spread = collapse_diagnostics(torch.randn(2, 16, 8, 8, generator=generator))
    collapsed = collapse_diagnostics(
        torch.ones(2, 16, 8, 8) + 1e-4 * torch.randn(2, 16, 8, 8, generator=generator)
    )
    assert spread["feature_std"] > 0.2 and collapsed["feature_std"] < 0.01
    assert spread["effective_rank"] > 10
