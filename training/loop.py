"""The training loop shared by STARS and every baseline: same data, schedule and budget for all methods.

Determinism: batches, augmentations, drawn patterns and PSA samples are functions of ``(seed, step, rank)``;
the checkpoint stores model, optimizer, scheduler, step and RNG states, so ``resume`` continues exactly.
What a step draws and checks is in ``training/steps.py``; seeding, RNG states and resuming in
``training/run_state.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from stars_edge.checkpoint import CheckpointMeta, replace_meta, save_checkpoint
from stars_edge.config import config_to_dict
from stars_edge.io import ensure_writable_dir
from stars_edge.modalities import parse_patterns
from stars_edge.models import STARSModel, create_model
from training.config import TrainConfig
from training.data import (
    TrainingData,
    build_training_data,
    check_batch,
    draw_batch,
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
from training.objective import TrainingObjective
from training.run_state import resolve_device, resume_training, rng_state, seed_everything
from training.speed import autocast_context, prepare_batch, prepare_model
from training.steps import (
    append_log,
    check_finite,
    draw_pattern,
    learning_rate_factor,
    reestimate_pattern_norms,
    training_diagnostics,
    unlabelled_batch,
)

__all__ = [
    "CHECKPOINT_NAME",
    "LOG_NAME",
    "TrainResult",
    "draw_pattern",
    "learning_rate_factor",
    "resolve_device",
    "train",
]

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
    seed_everything(config.seed)
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
        start_step = resume_training(config.resume, model, optimizer, scheduler, meta)
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
            batch = draw_batch(
                data.train,
                keys,
                step,
                config.batch_size,
                config.seed,
                context.rank,
                context.world_size,
                masks=config.trains_on_holes(),
            )
            if step == start_step:
                check_batch(batch, in_channels, data.source)
            batch = prepare_batch({k: v.to(device, non_blocking=True) for k, v in batch.items()}, config)
            unlabelled = unlabelled_batch(data, model, config, step, context, device)
            pattern = draw_pattern(
                model.modalities, step_generator(config.seed, step, 3), config.full_pattern_prob
            )
            with autocast_context(config, device):
                losses = runner(
                    batch, pattern, step_generator(config.seed, step, 4, context.rank), unlabelled
                )
            total = losses["total"]
            check_finite(total, losses, step + 1, last_good, context, device)
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
                    diagnostics = training_diagnostics(model, batch, data.class_names, data.ignore_index)
                    record.update(diagnostics)
                bar.set_postfix(loss=f"{losses_seen['total']:.3f}", psa=f"{losses_seen.get('psa', 0):.2f}")
                if context.is_main:
                    append_log(log_path, record)
            validate = (done % config.val_every == 0 or last) and data.val is not None
            reestimated = (validate or last) and reestimate_pattern_norms(
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
                    append_log(log_path, {"step": done, "val": val_scores})
                barrier(context)
            if done % config.checkpoint_every == 0 or last:
                if last:
                    sync_buffers(model, context)
                if context.is_main:
                    training_state = {
                        "step": done,
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": rng_state(),
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
        append_log(log_path, {"step": config.steps, "final": True, **checks})
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
