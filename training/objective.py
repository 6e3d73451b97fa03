"""One training step's forward pass and losses for every method, as an ``nn.Module`` (so DDP can wrap it).

The encoders run once on all modalities; the full-pattern output, the drawn pattern's output (missing
modalities filled the method's way), the translation, PSA and ShaSpec losses all reuse those features.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from stars_edge.modalities import Pattern
from stars_edge.models import STARSModel
from training.config import TrainConfig
from training.losses import (
    modality_classification_loss,
    psa_loss,
    segmentation_loss,
    shared_alignment_loss,
    translation_loss,
)


class TrainingObjective(nn.Module):
    """``forward(batch, pattern, generator) -> {"total", "seg", ...}`` for ``model.method``."""

    def __init__(self, model: STARSModel, config: TrainConfig, ignore_index: int = 255) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.ignore_index = ignore_index

    def forward(
        self, batch: Mapping[str, Tensor], pattern: Pattern, generator: torch.Generator | None = None
    ) -> dict[str, Tensor]:
        model = self.model
        spec = model.method_spec
        cfg = self.config
        labels = batch["label"]
        modalities = model.modalities
        encoded = model.encode({m: batch[m] for m in modalities})
        fused = {m: encoded[m].fused for m in modalities}

        translations: dict[tuple[str, str], list[Tensor]] = {}
        if model.fill == "translate" and len(modalities) > 1:
            for source in modalities:
                for target in modalities:
                    if source != target:
                        translations[(source, target)] = model.translate(source, target, fused[source])

        losses: dict[str, Tensor] = {}
        seg = segmentation_loss(model.decode(fused), labels, self.ignore_index, cfg.dice_weight)
        completed = fused
        if tuple(pattern.modalities) != modalities:
            completed = model.complete({m: encoded[m] for m in pattern}, translations)
            seg = seg + segmentation_loss(model.decode(completed), labels, self.ignore_index, cfg.dice_weight)
        losses["seg"] = seg
        total = cfg.seg_weight * seg

        if spec.translation_loss and translations:
            losses["translation"] = translation_loss(
                translations, fused, stop_gradient=spec.stop_gradient, distance=cfg.translation_distance
            )
            total = total + cfg.lambda_tr * losses["translation"]
        if spec.psa and len(modalities) > 1:
            views = {m: model.project(fused[m]) for m in modalities}
            for m in pattern.missing(modalities):
                views[f"{m}~translated"] = model.project(completed[m])
            stride = 4 * 2**model.config.psa_scale
            losses["psa"] = psa_loss(
                views,
                labels,
                stride,
                cfg.psa_pixels_per_class,
                cfg.psa_temperature,
                balanced=spec.psa_balanced,
                generator=generator,
                ignore_index=self.ignore_index,
            )
            total = total + cfg.lambda_psa * losses["psa"]
        if spec.shaspec_losses and model.modality_classifier is not None and len(modalities) > 1:
            losses["shared_align"] = shared_alignment_loss({m: encoded[m].shared for m in modalities})
            classifier = model.modality_classifier
            domain_logits = [classifier(encoded[m].specific[-1].mean(dim=(2, 3))) for m in modalities]
            losses["modality_cls"] = modality_classification_loss(domain_logits)
            total = (
                total
                + cfg.lambda_shaspec_align * losses["shared_align"]
                + cfg.lambda_shaspec_domain * losses["modality_cls"]
            )
        losses["total"] = total
        return losses
