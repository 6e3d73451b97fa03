"""One training step's forward pass and losses for every method, as an ``nn.Module`` (so DDP can wrap it).

The encoders run once on all modalities; every pattern's output (missing modalities filled the method's
way), the translation, distillation, PSA and ShaSpec losses all reuse those features.

Pattern schedule (``pattern_schedule``): ``all`` (default) decodes the full pattern and every proper subset
in every step, each subset supervised by the labels (and, with ``lambda_distill`` > 0, distilled from the
full pattern's logits; off by default because it cost accuracy on every pattern); ``draw``
decodes the full pattern and one drawn pattern (the old schedule, where a single modality got about one step
in eight).

Scenes with holes (``TrainConfig.trains_on_holes``: clouds, a SAR swath gap, DSM voids in the training
scenes): the inputs are already zero where invalid and the segmentation keeps its labels everywhere (the
model must learn to predict under a cloud from what is there), but the translation loss and its gains count
only feature cells valid in both modalities, and PSA samples no cell where a modality it views is invalid.
Off, the batch's validity masks are not read, so the clean-scene path is unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor, nn

from stars_edge.modalities import Pattern
from stars_edge.models import STARSModel
from training.config import TrainConfig
from training.data import validity_masks
from training.losses import (
    distillation_loss,
    ignore_invalid_cells,
    modality_classification_loss,
    psa_loss,
    segmentation_loss,
    shared_alignment_loss,
    translation_gains,
    translation_loss,
)


class TrainingObjective(nn.Module):
    """``forward(batch, pattern, generator) -> {"total", "seg", ...}`` for ``model.method``.

    Besides the differentiable losses, the result holds detached measurements for the log: ``psa_trivial``
    and the ``translation_gain/...`` values.
    """

    def __init__(self, model: STARSModel, config: TrainConfig, ignore_index: int = 255) -> None:
        super().__init__()
        self.model = model
        self.config = config
        self.ignore_index = ignore_index

    def supervised_patterns(self, drawn: Pattern) -> list[Pattern]:
        """The proper subsets decoded in this step (besides the full pattern)."""
        model = self.model
        if self.config.pattern_schedule == "all":
            return list(model.patterns[1:])
        return [] if drawn == model.patterns[0] else [drawn]

    def forward(
        self,
        batch: Mapping[str, Tensor],
        pattern: Pattern,
        generator: torch.Generator | None = None,
        unlabelled: Mapping[str, Tensor] | None = None,
    ) -> dict[str, Tensor]:
        """The step's losses; ``unlabelled`` (tiles without labels) adds to the translation loss only."""
        model = self.model
        spec = model.method_spec
        cfg = self.config
        labels = batch["label"]
        modalities = model.modalities
        encoded = model.encode({m: batch[m] for m in modalities})
        fused = {m: encoded[m].fused for m in modalities}
        valid = validity_masks(batch, modalities) if cfg.trains_on_holes() else None

        translations = self._translations(fused)

        losses: dict[str, Tensor] = {}
        full_logits = model.decode(fused, model.patterns[0])
        seg = segmentation_loss(full_logits, labels, self.ignore_index, cfg.dice_weight)
        losses["seg_full"] = seg.detach()
        distill_terms: list[Tensor] = []
        completed_by_pattern: dict[str, dict[str, list[Tensor]]] = {}
        for subset in self.supervised_patterns(pattern):
            completed = model.complete({m: encoded[m] for m in subset}, translations)
            completed_by_pattern[subset.name] = completed
            logits = model.decode(completed, subset)
            seg = seg + cfg.subset_weight * segmentation_loss(
                logits, labels, self.ignore_index, cfg.dice_weight
            )
            if cfg.lambda_distill > 0:
                distill_terms.append(distillation_loss(logits, full_logits, cfg.distill_temperature))
        losses["seg"] = seg
        total = cfg.seg_weight * seg
        if distill_terms:
            losses["distill"] = torch.stack(distill_terms).sum()
            total = total + cfg.lambda_distill * losses["distill"]

        if spec.translation_loss and translations:
            targets = model.translation_targets(encoded)
            losses["translation"] = translation_loss(
                translations,
                targets,
                stop_gradient=spec.stop_gradient,
                distance=cfg.translation_distance,
                valid=valid,
            )
            if unlabelled is not None:
                # the same loss on tiles nobody labelled: what a label-free objective can add (the
                # low-label study); the two batches weigh the same
                encoded_u = model.encode({m: unlabelled[m] for m in modalities})
                fused_u = {m: encoded_u[m].fused for m in modalities}
                extra = translation_loss(
                    self._translations(fused_u),
                    model.translation_targets(encoded_u),
                    stop_gradient=spec.stop_gradient,
                    distance=cfg.translation_distance,
                    valid=validity_masks(unlabelled, modalities) if valid is not None else None,
                )
                losses["translation_unlabelled"] = extra.detach()
                losses["translation"] = (losses["translation"] + extra) / 2
            total = total + cfg.lambda_tr * losses["translation"]
            for key, value in translation_gains(translations, targets, valid=valid).items():
                losses[key] = torch.tensor(value)
        if spec.psa and len(modalities) > 1:
            viewed = [m for m in modalities if m in cfg.psa_view_modalities()]
            views = {m: model.project(fused[m]) for m in viewed}
            seen = set(viewed)  # the modalities the views are computed from
            if cfg.psa_views == "real+translated":
                for m in viewed:
                    alone = [p for p in completed_by_pattern if m not in Pattern.parse(p)]
                    if alone:
                        views[f"{m}~translated"] = model.project(completed_by_pattern[alone[0]][m])
                        seen.update(Pattern.parse(alone[0]).modalities)
            stride = 4 * 2**model.config.psa_scale
            psa_labels = labels
            if valid is not None:
                everywhere = torch.stack([valid[m] for m in modalities if m in seen]).all(dim=0)
                psa_labels = ignore_invalid_cells(labels, everywhere, stride, self.ignore_index)
            stats: dict[str, float] = {}
            losses["psa"] = psa_loss(
                views,
                psa_labels,
                stride,
                cfg.psa_pixels_per_class,
                cfg.psa_temperature,
                balanced=spec.psa_balanced,
                generator=generator,
                ignore_index=self.ignore_index,
                stats=stats,
            )
            losses["psa_trivial"] = torch.tensor(stats["psa_trivial"])
            losses["psa_samples"] = torch.tensor(stats["psa_samples"])
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

    def _translations(self, fused: Mapping[str, list[Tensor]]) -> dict[tuple[str, str], dict[int, Tensor]]:
        """Every ordered pair's translated features (empty when the method does not translate)."""
        model = self.model
        modalities = model.modalities
        if model.fill != "translate" or len(modalities) < 2 or not model.translation_scales:
            return {}
        return {
            (source, target): model.translate(source, target, fused[source])
            for source in modalities
            for target in modalities
            if source != target
        }
