"""Class-balanced pixel sampling for PSA (Pixel-level Semantic sampling Alignment).

Uniform pixel sampling hands the alignment loss almost only majority-class pixels (vegetation, background),
so minority classes (cars, buildings) barely shape the embedding. Sampling up to ``per_class`` pixels of every
class present gives each class the same number of anchors. ``balanced=False`` draws the same total count
uniformly: the ``stars_psa_uniform`` ablation, which isolates the effect of the balancing.
"""

from __future__ import annotations

import torch

from stars_edge.errors import DataError


def class_balanced_pixel_indices(
    labels: torch.Tensor,
    per_class: int,
    ignore_index: int = 255,
    generator: torch.Generator | None = None,
    balanced: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick pixel positions for the alignment loss; the same positions are then read in every modality.

    Args:
        labels: ``(N, H, W)`` integer class map (``ignore_index`` marks unlabelled pixels).
        per_class: at most this many pixels per class present (all of a class's pixels when it has fewer).
        ignore_index: label value never sampled.
        generator: CPU generator, so a seeded run samples the same pixels again (exact resume).
        balanced: ``False`` draws the same total number of pixels uniformly among valid pixels instead.

    Returns:
        ``(indices, classes)``: int64 flat indices into ``N*H*W`` (sorted by class when balanced) and the
        class of each sampled pixel.
    """
    if labels.ndim != 3:
        raise DataError(f"labels must be (N, H, W), got shape {tuple(labels.shape)}; add a batch dimension")
    if per_class <= 0:
        raise DataError(f"per_class must be positive, got {per_class}; set psa_pixels_per_class >= 1")
    flat = labels.reshape(-1).to("cpu", torch.int64)
    valid = torch.nonzero(flat != ignore_index, as_tuple=False).squeeze(1)
    if valid.numel() == 0:
        empty = torch.zeros(0, dtype=torch.int64)
        return empty, empty
    classes_present = torch.unique(flat[valid])
    chosen: list[torch.Tensor] = []
    for cls in classes_present.tolist():
        members = valid[flat[valid] == cls]
        take = min(per_class, members.numel())
        order = torch.randperm(members.numel(), generator=generator)[:take]
        chosen.append(members[order])
    if balanced:
        indices = torch.cat(chosen)
    else:
        total = sum(c.numel() for c in chosen)
        order = torch.randperm(valid.numel(), generator=generator)[:total]
        indices = valid[order]
    indices = indices.to(labels.device)
    return indices, labels.reshape(-1)[indices].to(torch.int64)
