"""What one training step draws and what the loop checks around it: the step's pattern, the learning-rate
schedule, the unlabelled batch, the finite-loss check, the per-pattern decoder statistics, the collapse
diagnostics and the JSON-lines log.

Every draw is a function of ``(seed, step, rank)`` (``training.data.step_generator``, ``batch_indices``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stars_edge.errors import TrainingError
from stars_edge.modalities import Pattern, all_patterns
from stars_edge.models import STARSModel
from stars_edge.models.pattern_norm import estimate_pattern_statistics
from training.config import TrainConfig
from training.data import TrainingData, batch_indices, collate, draw_batch
from training.distributed import DistributedContext, barrier
from training.losses import collapse_diagnostics, embedding_class_gaps
from training.speed import prepare_batch


def draw_pattern(modalities: tuple[str, ...], generator: torch.Generator, full_probability: float) -> Pattern:
    """The step's pattern: the full set with ``full_probability``, else a uniformly drawn proper subset."""
    patterns = all_patterns(modalities)
    if len(patterns) == 1 or torch.rand((), generator=generator).item() < full_probability:
        return patterns[0]
    index = int(torch.randint(1, len(patterns), (), generator=generator).item())
    return patterns[index]


def learning_rate_factor(step: int, config: TrainConfig) -> float:
    """Linear warm-up, then poly (power 0.9), cosine or constant decay over ``config.steps``."""
    if config.warmup_steps > 0 and step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = min(step / max(config.steps, 1), 1.0)
    if config.schedule == "poly":
        return float((1.0 - progress) ** 0.9)
    if config.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0


#: Batch-order stream of the unlabelled tiles (streams 1, 3 and 4 are the labelled order, the pattern
#: draw and PSA's pixel sampling).
UNLABELLED_STREAM = 5


def unlabelled_batch(
    data: TrainingData,
    model: STARSModel,
    config: TrainConfig,
    step: int,
    context: DistributedContext,
    device: torch.device,
) -> dict[str, torch.Tensor] | None:
    """This step's tiles of the unlabelled scenes, for methods whose translation loss can use them."""
    if data.unlabelled is None or not model.method_spec.translation_loss:
        return None
    batch = draw_batch(
        data.unlabelled,
        list(model.modalities),
        step,
        config.batch_size,
        config.seed,
        context.rank,
        context.world_size,
        stream=UNLABELLED_STREAM,
        masks=config.trains_on_holes(),
    )
    return prepare_batch({k: v.to(device, non_blocking=True) for k, v in batch.items()}, config)


def check_finite(
    total: torch.Tensor,
    losses: dict[str, torch.Tensor],
    step: int,
    last_good: Path | None,
    context: DistributedContext,
    device: torch.device,
) -> None:
    finite = torch.isfinite(total.detach()).to(device=device, dtype=torch.float32)
    if context.enabled:
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    if finite.item() < 1:
        bad = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
        where = f"last good checkpoint: {last_good}" if last_good else "no checkpoint written yet"
        raise TrainingError(
            f"non-finite loss at step {step} ({bad}); {where}; lower lr or check the data for NaN/inf"
        )


def reestimate_pattern_norms(
    model: STARSModel,
    data: TrainingData,
    config: TrainConfig,
    keys: list[str],
    device: torch.device,
    context: DistributedContext,
) -> int:
    """Per-pattern decoder statistics from ``pattern_norm_batches`` fixed training batches (``reestimate``);
    with per-pattern decoders, each decoder's own statistics. Returns the batches used.

    The batches are a function of the seed only, so every rank (and a resumed run) gets the same statistics.
    """
    if model.config.pattern_norm != "reestimate" or config.pattern_norm_batches == 0:
        return 0

    def batches() -> Iterator[dict[str, torch.Tensor]]:
        for index in range(config.pattern_norm_batches):
            _epoch, indices = batch_indices(
                len(data.train), config.batch_size, index, config.seed + 7919, 0, 1
            )
            batch = collate([data.train[i] for i in indices], keys)
            yield {k: v.to(device) for k, v in batch.items()}

    used = estimate_pattern_statistics(model, batches())
    barrier(context)
    return used


@torch.no_grad()
def training_diagnostics(
    model: STARSModel, batch: dict[str, torch.Tensor], class_names: Sequence[str], ignore_index: int
) -> dict[str, float]:
    """Collapse indicators of each modality's fused features at the PSA scale (mean over modalities too),
    and, with PSA, the embedding's same-class minus other-class cosine gap per class (``psa_gap/<class>``)."""
    was_training = model.training
    model.eval()
    encoded = model.encode({m: batch[m] for m in model.modalities})
    out: dict[str, float] = {}
    for m, features in encoded.items():
        for key, value in collapse_diagnostics(features.fused[model.config.psa_scale]).items():
            out[f"{key}/{m}"] = value
    for key in ("feature_std", "effective_rank"):
        values = [v for k, v in out.items() if k.startswith(key + "/")]
        out[key] = float(np.mean(values))
    if model.psa_head is not None:
        stride = 4 * 2**model.config.psa_scale
        gaps: dict[int, list[float]] = {}
        for features in encoded.values():
            embedding = model.project(features.fused)
            for c, gap in embedding_class_gaps(
                embedding, batch["label"], stride, model.classes, ignore_index
            ).items():
                gaps.setdefault(c, []).append(gap)
        for c, values in sorted(gaps.items()):
            out[f"psa_gap/{class_names[c]}"] = float(np.mean(values))
        if gaps:
            out["psa_gap_min"] = min(out[f"psa_gap/{class_names[c]}"] for c in gaps)
    model.train(was_training)
    return out


def append_log(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
