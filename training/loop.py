"""The training loop shared by STARS and every baseline: same data, schedule and budget for all methods.

Determinism: batches, augmentations, drawn patterns and PSA samples are functions of ``(seed, step, rank)``;
the checkpoint stores model, optimizer, scheduler, step and RNG states, so ``resume`` continues exactly.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from tqdm import tqdm

from stars_edge.checkpoint import (
    CheckpointMeta,
    check_compatible,
    load_model_state,
    read_checkpoint,
    replace_meta,
    save_checkpoint,
)
from stars_edge.config import config_to_dict
from stars_edge.errors import CheckpointError, TrainingError
from stars_edge.io import ensure_writable_dir
from stars_edge.modalities import Pattern, all_patterns, parse_patterns
from stars_edge.models import STARSModel, create_model
from stars_edge.models.pattern_norm import estimate_pattern_statistics
from training.config import TrainConfig
from training.data import (
    TrainingData,
    batch_indices,
    build_training_data,
    check_batch,
    collate,
    step_generator,
)
from training.distributed import (
    DistributedContext,
    all_reduce_mean,
    barrier,
    setup_distributed,
    sync_buffers,
    teardown_distributed,
    wrap_ddp,
)
from training.evaluation import evaluate_model
from training.losses import collapse_diagnostics, embedding_class_gaps
from training.objective import TrainingObjective
from training.speed import autocast_context, prepare_batch, prepare_model

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "log.jsonl"


@dataclass
class TrainResult:
    """What a run produced: the checkpoint (with training state), the log, the final model and scores."""

    checkpoint: Path
    log_path: Path
    steps: int
    model: STARSModel
    meta: CheckpointMeta
    val_scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_losses: dict[str, float] = field(default_factory=dict)
    diagnostics: dict[str, float] = field(default_factory=dict)


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; an explicit ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} requested but no CUDA GPU is available; use device: cpu")
    return torch.device(name)


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


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _rng_state() -> dict[str, Any]:
    numpy_state = cast(tuple[Any, ...], np.random.get_state())
    return {
        "torch": torch.get_rng_state(),
        "numpy": [numpy_state[0], torch.from_numpy(np.asarray(numpy_state[1])), *numpy_state[2:]],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    random.setstate(state["python"])


def train(config: TrainConfig, progress: bool = True, data: TrainingData | None = None) -> TrainResult:
    """Train ``config.method``, return the checkpoint; ``data`` overrides ``config.data`` (custom datasets).

    Runs data-parallel when launched by torchrun (``WORLD_SIZE`` > 1). Raises ``TrainingError`` on a
    non-finite loss, naming the step and the last good checkpoint.
    """
    device = resolve_device(config.device)
    if config.threads > 0:
        torch.set_num_threads(config.threads)
    context = setup_distributed(device)
    try:
        return _train(config, progress, data, device, context)
    finally:
        teardown_distributed(context)


def _train(
    config: TrainConfig,
    progress: bool,
    data: TrainingData | None,
    device: torch.device,
    context: DistributedContext,
) -> TrainResult:
    _seed_everything(config.seed)
    data = data or build_training_data(config)
    in_channels = data.in_channels(config.modalities)
    classes = len(data.class_names)
    model = create_model(config.variant, in_channels, classes, config.method, **config.model_overrides())
    model.to(device)
    prepare_model(model, config)
    output_dir = Path(config.output_dir)
    checkpoint_path = output_dir / CHECKPOINT_NAME
    log_path = output_dir / LOG_NAME
    if context.is_main:
        ensure_writable_dir(output_dir)
    meta = CheckpointMeta(
        variant=config.variant,
        method=config.method,
        in_channels=in_channels,
        classes=classes,
        class_names=data.class_names,
        specs={m: data.specs[m] for m in in_channels},
        tile_size=config.tile_size,
        ignore_index=data.ignore_index,
        model_kwargs=model.config.to_dict(),
        config=config_to_dict(config),
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: learning_rate_factor(s, config))
    start_step = 0
    last_good: Path | None = None
    if config.resume is not None:
        start_step = _resume(config.resume, model, optimizer, scheduler, meta)
        last_good = Path(config.resume)

    if context.is_main and start_step == 0 and log_path.exists():
        log_path.unlink()
    objective = TrainingObjective(model, config, data.ignore_index)
    runner = wrap_ddp(objective, context, device)
    patterns = parse_patterns(config.val_patterns, model.modalities)
    keys = [*model.modalities, "label"]
    losses_seen: dict[str, float] = {}
    diagnostics: dict[str, float] = {}
    val_scores: dict[str, dict[str, Any]] = {}
    bar = tqdm(
        total=config.steps,
        initial=start_step,
        desc=f"train {config.method}",
        unit="step",
        disable=not progress or not context.is_main,
        dynamic_ncols=True,
    )
    try:
        for step in range(start_step, config.steps):
            model.train()
            epoch, indices = batch_indices(
                len(data.train), config.batch_size, step, config.seed, context.rank, context.world_size
            )
            set_epoch = getattr(data.train, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)
            batch = collate([data.train[i] for i in indices], keys)
            if step == start_step:
                check_batch(batch, in_channels, data.source)
            batch = prepare_batch({k: v.to(device, non_blocking=True) for k, v in batch.items()}, config)
            unlabelled = _unlabelled_batch(data, model, config, step, context, device)
            pattern = draw_pattern(
                model.modalities, step_generator(config.seed, step, 3), config.full_pattern_prob
            )
            with autocast_context(config, device):
                losses = runner(
                    batch, pattern, step_generator(config.seed, step, 4, context.rank), unlabelled
                )
            total = losses["total"]
            _check_finite(total, losses, step + 1, last_good, context, device)
            optimizer.zero_grad(set_to_none=True)
            total.backward()
            if config.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            scheduler.step()
            done = step + 1
            last = done == config.steps
            if done % config.log_every == 0 or last:
                losses_seen = {k: float(all_reduce_mean(v, context).item()) for k, v in losses.items()}
                record: dict[str, Any] = {
                    "step": done,
                    "pattern": pattern.name if config.pattern_schedule == "draw" else "all",
                    "lr": scheduler.get_last_lr()[0],
                    **losses_seen,
                }
                if config.diagnostics:
                    diagnostics = _diagnostics(model, batch, data.class_names, data.ignore_index)
                    record.update(diagnostics)
                bar.set_postfix(loss=f"{losses_seen['total']:.3f}", psa=f"{losses_seen.get('psa', 0):.2f}")
                if context.is_main:
                    _append_log(log_path, record)
            validate = (done % config.val_every == 0 or last) and data.val is not None
            reestimated = (validate or last) and _reestimate_pattern_norms(
                model, data, config, keys, device, context
            )
            if reestimated and len(model.pattern_decoders):
                meta.config["decoder_statistics"] = "reestimated"  # the manifest says so (export)
            if validate and data.val is not None:
                if context.is_main:
                    scores = evaluate_model(
                        model, data.val, patterns, config.val_batch_size, data.ignore_index, device=device
                    )
                    val_scores = {name: s.as_dict(data.class_names) for name, s in scores.items()}
                    _append_log(log_path, {"step": done, "val": val_scores})
                barrier(context)
            if done % config.checkpoint_every == 0 or last:
                if last:
                    sync_buffers(model, context)
                if context.is_main:
                    training_state = {
                        "step": done,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": _rng_state(),
                    }
                    save_checkpoint(checkpoint_path, model, replace_meta(meta, step=done), training_state)
                    if config.keep_checkpoints:
                        save_checkpoint(
                            output_dir / f"checkpoint-{done:06d}.pt",
                            model,
                            replace_meta(meta, step=done),
                            training_state,
                        )
                last_good = checkpoint_path
                barrier(context)
            bar.update(1)
    finally:
        bar.close()
    if context.is_main and losses_seen and start_step < config.steps:
        # the log's last line carries the final losses and mechanism checks (psa, psa_trivial,
        # translation_gain_min, psa_gap/...) after the last validation record
        checks = {
            k: v
            for k, v in {**losses_seen, **diagnostics}.items()
            if k.startswith(("psa", "translation_gain", "feature_std", "effective_rank"))
        }
        _append_log(log_path, {"step": config.steps, "final": True, **checks})
    model.eval()
    return TrainResult(
        checkpoint=checkpoint_path,
        log_path=log_path,
        steps=config.steps,
        model=model,
        meta=replace_meta(meta, step=config.steps),
        val_scores=val_scores,
        last_losses=losses_seen,
        diagnostics=diagnostics,
    )


#: Batch-order stream of the unlabelled tiles (streams 1, 3 and 4 are the labelled order, the pattern
#: draw and PSA's pixel sampling).
UNLABELLED_STREAM = 5


def _unlabelled_batch(
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
    epoch, indices = batch_indices(
        len(data.unlabelled),
        config.batch_size,
        step,
        config.seed,
        context.rank,
        context.world_size,
        stream=UNLABELLED_STREAM,
    )
    set_epoch = getattr(data.unlabelled, "set_epoch", None)
    if set_epoch is not None:
        set_epoch(epoch)
    batch = collate([data.unlabelled[i] for i in indices], list(model.modalities))
    return prepare_batch({k: v.to(device, non_blocking=True) for k, v in batch.items()}, config)


def _resume(
    path: Path,
    model: STARSModel,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    meta: CheckpointMeta,
) -> int:
    payload = read_checkpoint(path)
    saved = CheckpointMeta.from_dict(payload["meta"])
    check_compatible(
        saved,
        path,
        variant=meta.variant,
        method=meta.method,
        in_channels=meta.in_channels,
        classes=meta.classes,
    )
    state = payload.get("training_state")
    if state is None:
        raise CheckpointError(
            f"{path} holds no training state (optimizer, step); resume from a training checkpoint"
        )
    load_model_state(model, payload["model_state"], path)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    _set_rng_state(state["rng"])
    return int(state["step"])


def _check_finite(
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


def _reestimate_pattern_norms(
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
def _diagnostics(
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


def _append_log(path: Path, record: dict[str, Any]) -> None:
    with path.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
