"""Losses of STARS and its baselines, plus the collapse diagnostics.

- segmentation: cross-entropy (ignore index 255), optional soft Dice;
- translation: distance(T_{j->k}(f_j), stopgrad(f_k)) for every ordered pair, every translated scale.
  Detaching the target is the asymmetric alignment: the target encoder is never pulled towards its
  translation, so the constant-feature solution is not a minimum (turn it off to get the
  ``stars_no_stopgrad`` ablation). The default distance is a per-channel *standardized* squared error: it is
  sensitive to scale (a translation at half the norm of the real features is penalised, which cosine
  distance is not) and its value for the per-channel-mean guess is about 1, so ``translation_gain`` =
  1 - error(translator) / error(mean guess) says how much of the target the translator actually predicts;
  On scenes with holes (``valid`` masks given) each pair and scale counts only the feature cells whose
  every input pixel is valid in both modalities (``cell_validity``): a hole's zero inputs are neither
  a source nor a target;
- distillation: each proper subset's logits towards the full pattern's (teacher detached);
- PSA: cross-modal supervised contrastive loss on class-balanced pixel samples; its value for identical
  embeddings is ``log((V - 1) * S)`` (``psa_trivial``), the level a PSA that learns nothing sits at
  (``ignore_invalid_cells`` keeps it off cells with holes);
- ShaSpec: L1 alignment of shared features and modality classification of specific features.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from stars_edge.data.sampling import class_balanced_pixel_indices
from stars_edge.modalities import IGNORE_INDEX


def segmentation_loss(
    logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX, dice_weight: float = 0.0
) -> Tensor:
    """Cross-entropy, plus ``dice_weight`` x soft multi-class Dice over labelled pixels."""
    loss = F.cross_entropy(logits, labels, ignore_index=ignore_index)
    if dice_weight > 0:
        loss = loss + dice_weight * dice_loss(logits, labels, ignore_index)
    return loss


def dice_loss(logits: Tensor, labels: Tensor, ignore_index: int = IGNORE_INDEX, eps: float = 1.0) -> Tensor:
    """1 - mean soft Dice over classes present in the target or the prediction."""
    classes = logits.shape[1]
    valid = labels != ignore_index
    probs = logits.softmax(dim=1) * valid.unsqueeze(1)
    target = F.one_hot(labels.where(valid, torch.zeros_like(labels)), classes).permute(0, 3, 1, 2)
    target = target.to(probs.dtype) * valid.unsqueeze(1)
    intersection = (probs * target).sum(dim=(0, 2, 3))
    total = probs.sum(dim=(0, 2, 3)) + target.sum(dim=(0, 2, 3))
    return 1.0 - ((2 * intersection + eps) / (total + eps)).mean()


#: Floor of each channel's variance in the standardized distance, relative to the mean channel variance: a
#: dead (constant) channel must not blow the error up.
VARIANCE_FLOOR = 0.05


#: Fewest valid cells the standardized distance needs: one cell has no variance to standardise by (the error
#: would be divided by the 1e-8 floor), so a masked term with fewer is 0.
MIN_SCALE_CELLS = 2


def cell_validity(valid: Tensor, size: Sequence[int]) -> Tensor:
    """``(N, H, W)`` pixel validity -> ``(N, 1, h, w)`` for a feature map of ``size`` ``(h, w)``.

    Conservative: a cell is valid only if every input pixel it covers is (max-pool of the invalid mask,
    kernel = stride), so no feature computed mostly from a hole's zero inputs counts as valid.
    """
    height, width = valid.shape[-2:]
    cells_h, cells_w = int(size[0]), int(size[1])
    if height % cells_h or width % cells_w:
        raise ValueError(f"a {height}x{width} mask does not tile a {cells_h}x{cells_w} feature map")
    stride = (height // cells_h, width // cells_w)
    invalid = F.max_pool2d((~valid.bool()).unsqueeze(1).float(), kernel_size=stride, stride=stride)
    return invalid == 0


def ignore_invalid_cells(
    labels: Tensor, valid: Tensor, stride: int, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """``labels`` with every pixel of a ``stride`` cell that holds an invalid pixel set to ``ignore_index``:
    a sampler of stride-``stride`` cells (PSA) then never picks a cell that saw a hole."""
    cells = cell_validity(valid, (labels.shape[-2] // stride, labels.shape[-1] // stride))[:, 0]
    keep = cells.repeat_interleave(stride, dim=-2).repeat_interleave(stride, dim=-1)
    return labels.masked_fill(~keep, ignore_index)


def channel_scale(target: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Per-channel mean and floored variance of a ``(N, C, h, w)`` map, detached: ``(1, C, 1, 1)`` each.

    ``mask`` (bool ``(N, 1, h, w)``) restricts both to its cells (features inside holes are not the target's
    distribution).
    """
    with torch.no_grad():
        t = target.detach().float()
        if mask is None:
            mean = t.mean(dim=(0, 2, 3), keepdim=True)
            var = t.var(dim=(0, 2, 3), keepdim=True, unbiased=False)
        else:
            weight = mask.to(t.dtype)
            count = weight.sum().clamp_min(1.0)
            mean = (t * weight).sum(dim=(0, 2, 3), keepdim=True) / count
            var = ((t - mean) ** 2 * weight).sum(dim=(0, 2, 3), keepdim=True) / count
        var = var + VARIANCE_FLOOR * var.mean() + 1e-8
    return mean, var


def masked_mean(values: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of ``values`` (``(N, C, h, w)``) over the cells of ``mask`` (``(N, 1, h, w)``; None = all).

    Values outside the mask are replaced, not multiplied, so a non-finite one cannot leak in; with no valid
    cell the result is 0 (still attached to the graph).
    """
    if mask is None:
        return values.mean()
    kept = values.masked_fill(~mask, 0.0)
    return kept.sum() / (mask.sum() * values.shape[1]).clamp_min(1)


def standardized_error(
    prediction: Tensor, target: Tensor, var: Tensor | None = None, mask: Tensor | None = None
) -> Tensor:
    """Mean over pixels (those of ``mask``) and channels of ``(prediction - target)^2 / var_c`` (``var``
    from the target; with ``mask``, 0 below ``MIN_SCALE_CELLS`` cells)."""
    if mask is not None and int(mask.sum()) < MIN_SCALE_CELLS:
        return prediction.sum() * 0.0
    if var is None:
        _mean, var = channel_scale(target, mask)
    return masked_mean((prediction - target) ** 2 / var, mask)


def feature_distance(
    prediction: Tensor, target: Tensor, kind: str = "standardized", mask: Tensor | None = None
) -> Tensor:
    """Distance between feature maps: standardized squared error, ``1 - cos`` over channels, MSE or L1;
    with ``mask`` (bool ``(N, 1, h, w)``) only over its cells (0 when it has none)."""
    if kind == "standardized":
        return standardized_error(prediction, target, mask=mask)
    if mask is None:
        if kind == "cosine":
            return (1.0 - F.cosine_similarity(prediction, target, dim=1)).mean()
        if kind == "mse":
            return F.mse_loss(prediction, target)
        if kind == "l1":
            return F.l1_loss(prediction, target)
    elif kind == "cosine":
        return masked_mean(1.0 - F.cosine_similarity(prediction, target, dim=1).unsqueeze(1), mask)
    elif kind == "mse":
        return masked_mean((prediction - target) ** 2, mask)
    elif kind == "l1":
        return masked_mean((prediction - target).abs(), mask)
    raise ValueError(f"unknown translation distance {kind!r}")


def pair_validity(
    valid: Mapping[str, Tensor] | None, source: str, target: str, size: Sequence[int]
) -> Tensor | None:
    """Cells of a ``size`` feature map valid in both ``source`` and ``target`` (None without masks)."""
    if valid is None:
        return None
    return cell_validity(valid[source].bool() & valid[target].bool(), size)


def translation_loss(
    translations: Mapping[tuple[str, str], Mapping[int, Tensor]],
    targets: Mapping[str, Sequence[Tensor]],
    stop_gradient: bool = True,
    distance: str = "standardized",
    valid: Mapping[str, Tensor] | None = None,
) -> Tensor:
    """Mean over ordered pairs and translated scales of distance(T_{j->k}(f_j), f_k), the target detached
    by default (``translations[(j, k)]`` maps a scale index to the translated features).

    ``valid`` (``{modality: bool (N, H, W)}``) limits each term to the cells valid in both modalities; a
    term without such a cell is 0.
    """
    terms = []
    for (source, target), predicted in translations.items():
        for scale, pred in predicted.items():
            real = targets[target][scale]
            mask = pair_validity(valid, source, target, pred.shape[-2:])
            terms.append(feature_distance(pred, real.detach() if stop_gradient else real, distance, mask))
    if not terms:
        raise ValueError("translation_loss needs at least one translated pair")
    return torch.stack(terms).mean()


@torch.no_grad()
def translation_gains(
    translations: Mapping[tuple[str, str], Mapping[int, Tensor]],
    targets: Mapping[str, Sequence[Tensor]],
    guesses: Mapping[tuple[str, int], Tensor] | None = None,
    valid: Mapping[str, Tensor] | None = None,
) -> dict[str, float]:
    """``translation_gain/<source>-><target>/s<scale>`` = 1 - error(translator) / error(mean guess).

    Both errors are the standardized squared error against the same real features. The guess is, by
    default, the target's per-channel mean over these very features (the best constant in hindsight, an
    oracle: used in the training log); ``guesses[(target, scale)]`` replaces it by a constant measured
    elsewhere (on training tiles, for held-out evaluation: the constant a deployed model could use).
    0 means the translator is no better than that constant, 1 a perfect translation.
    ``translation_gain_min`` is the smallest over pairs and scales. ``valid`` (as in ``translation_loss``)
    limits both errors and the statistics to cells valid in both modalities (a pair and scale with fewer than
    ``MIN_SCALE_CELLS`` reports 0: no evidence either way, and every rank logs the same keys).
    """
    gains: dict[str, float] = {}
    for (source, target), predicted in translations.items():
        for scale, pred in predicted.items():
            real = targets[target][scale].detach().float()
            key = f"translation_gain/{source}->{target}/s{scale}"
            mask = pair_validity(valid, source, target, pred.shape[-2:])
            if mask is not None and int(mask.sum()) < MIN_SCALE_CELLS:
                gains[key] = 0.0
                continue
            mean, var = channel_scale(real, mask)
            if guesses is not None:
                mean = guesses[(target, scale)].reshape(1, -1, 1, 1).to(real)
            guess = standardized_error(mean.expand_as(real), real, var, mask)
            error = standardized_error(pred.detach().float(), real, var, mask)
            gains[key] = float(1.0 - error / guess.clamp_min(1e-12))
    if gains:
        gains["translation_gain_min"] = min(gains.values())
    return gains


def distillation_loss(student: Tensor, teacher: Tensor, temperature: float = 2.0) -> Tensor:
    """KL(teacher || student) on temperature-softened class distributions, times T^2 (Hinton et al.)."""
    t = temperature
    target = F.log_softmax(teacher.detach() / t, dim=1)
    log_student = F.log_softmax(student / t, dim=1)
    per_pixel = (target.exp() * (target - log_student)).sum(dim=1)
    return per_pixel.mean() * (t * t)


def downsample_labels(labels: Tensor, stride: int) -> Tensor:
    """Centre-pixel label of each ``stride x stride`` cell, matching a stride-``stride`` feature map."""
    offset = stride // 2
    return labels[:, offset::stride, offset::stride]


def cross_modal_supcon(embeddings: Sequence[Tensor], classes: Tensor, temperature: float) -> Tensor:
    """Supervised contrastive loss across views: anchors in one view, candidates in every *other* view.

    ``embeddings`` are ``(S, D)`` L2-normalised samples of the same ``S`` pixels in each view (modality, real
    or translated); positives are same-class candidates, negatives the other classes.
    """
    views = len(embeddings)
    samples = classes.numel()
    z = torch.cat(list(embeddings), dim=0)
    labels = classes.repeat(views)
    view = torch.arange(views, device=z.device).repeat_interleave(samples)
    cross = view[:, None] != view[None, :]
    positive = cross & (labels[:, None] == labels[None, :])
    similarity = (z @ z.t()) / temperature
    similarity = similarity.masked_fill(~cross, float("-inf"))
    log_prob = similarity - torch.logsumexp(similarity, dim=1, keepdim=True)
    log_prob = log_prob.masked_fill(~cross, 0.0)
    counts = positive.sum(dim=1)
    has_positive = counts > 0
    per_anchor = -(log_prob * positive).sum(dim=1) / counts.clamp(min=1)
    return per_anchor[has_positive].mean()


def psa_trivial_value(views: int, samples: int) -> float:
    """The PSA loss when every embedding is the same: ``log((V - 1) * S)`` (0 when nothing is sampled)."""
    return math.log((views - 1) * samples) if views > 1 and samples > 0 else 0.0


def psa_loss(
    embeddings: Mapping[str, Tensor],
    labels: Tensor,
    stride: int,
    per_class: int,
    temperature: float,
    balanced: bool = True,
    generator: torch.Generator | None = None,
    ignore_index: int = IGNORE_INDEX,
    stats: dict[str, float] | None = None,
) -> Tensor:
    """PSA: sample pixels (class-balanced unless ``balanced=False``) at the same positions in every view,
    then the cross-modal supervised contrastive loss between views.

    ``stats``, when given, receives ``psa_trivial`` (this step's trivial value) and ``psa_samples``.
    """
    views = list(embeddings.values())
    small = downsample_labels(labels, stride)
    indices, classes = class_balanced_pixel_indices(small, per_class, ignore_index, generator, balanced)
    if stats is not None:
        stats["psa_samples"] = float(indices.numel())
        stats["psa_trivial"] = psa_trivial_value(len(views), int(indices.numel()))
    if indices.numel() < 2 or len(views) < 2:
        return sum((v.sum() * 0.0 for v in views), torch.zeros((), device=labels.device))
    dim = views[0].shape[1]
    samples = [v.permute(0, 2, 3, 1).reshape(-1, dim)[indices] for v in views]
    return cross_modal_supcon(samples, classes, temperature)


@torch.no_grad()
def embedding_class_gaps(
    embedding: Tensor, labels: Tensor, stride: int, classes: int, ignore_index: int, max_pixels: int = 4096
) -> dict[int, float]:
    """Per class: mean cosine to same-class pixels minus mean cosine to other-class pixels.

    ``embedding`` is L2-normalised ``(N, D, h, w)``; a gap near 0 means PSA's embedding does not separate
    that class (collapsed), larger is better.
    """
    small = downsample_labels(labels, stride).reshape(-1)
    z = embedding.permute(0, 2, 3, 1).reshape(-1, embedding.shape[1]).float()
    keep = (small != ignore_index).nonzero().squeeze(1)
    if keep.numel() > max_pixels:
        keep = keep[:: keep.numel() // max_pixels][:max_pixels]
    z, y = z[keep], small[keep]
    similarity = z @ z.t()
    gaps: dict[int, float] = {}
    for c in range(classes):
        mine = y == c
        if int(mine.sum()) < 2 or int((~mine).sum()) < 1:
            continue
        block = similarity[mine]
        same = (block[:, mine].sum() - mine.sum()) / (mine.sum() * (mine.sum() - 1))
        other = block[:, ~mine].mean()
        gaps[c] = float(same - other)
    return gaps


def shared_alignment_loss(shared: Mapping[str, Sequence[Tensor]]) -> Tensor:
    """ShaSpec's shared-feature alignment: mean L1 between every pair of modalities' shared features."""
    terms = [
        F.l1_loss(a, b)
        for first, second in itertools.combinations(list(shared), 2)
        for a, b in zip(shared[first], shared[second], strict=True)
    ]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).mean()


def modality_classification_loss(logits_by_modality: Sequence[Tensor]) -> Tensor:
    """ShaSpec's domain loss: specific features must reveal which modality they came from."""
    logits = torch.cat(list(logits_by_modality), dim=0)
    target = torch.cat(
        [
            torch.full((lg.shape[0],), i, dtype=torch.long, device=lg.device)
            for i, lg in enumerate(logits_by_modality)
        ]
    )
    return F.cross_entropy(logits, target)


@torch.no_grad()
def collapse_diagnostics(features: Tensor, max_pixels: int = 2048) -> dict[str, float]:
    """Representation-collapse indicators on a ``(N, C, h, w)`` feature map.

    ``feature_std``: mean per-channel std of the per-pixel L2-normalised features (about 1/sqrt(C) when the
    features spread over the sphere, 0 when collapsed); ``effective_rank``: exp(entropy) of the normalised
    singular values of the centred pixel x channel matrix (1 = collapsed to a line, C = full rank).
    """
    channels = features.shape[1]
    z = F.normalize(features.detach().float(), dim=1).permute(0, 2, 3, 1).reshape(-1, channels)
    if z.shape[0] > max_pixels:
        step = z.shape[0] // max_pixels
        z = z[::step][:max_pixels]
    std = z.std(dim=0).mean().item()
    singular = torch.linalg.svdvals(z - z.mean(dim=0, keepdim=True))
    total = singular.sum()
    if total <= 0:
        return {"feature_std": std, "effective_rank": 1.0}
    p = singular / total
    entropy = -(p * torch.log(p.clamp_min(1e-12))).sum()
    return {"feature_std": std, "effective_rank": float(torch.exp(entropy).item())}
