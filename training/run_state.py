"""Where a training run runs and how it restarts: the device, the seeds, the RNG states a checkpoint stores,
and resuming from a training checkpoint (model, optimizer, scheduler, step and RNG states).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from stars_edge.checkpoint import CheckpointMeta, check_compatible, load_model_state, read_checkpoint
from stars_edge.errors import CheckpointError, TrainingError
from stars_edge.models import STARSModel


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when available; an explicit ``cuda`` without a GPU is a clear error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"device {name!r} requested but no CUDA GPU is available; use device: cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    numpy_state = cast(tuple[Any, ...], np.random.get_state())
    return {
        "torch": torch.get_rng_state(),
        "numpy": [numpy_state[0], torch.from_numpy(np.asarray(numpy_state[1])), *numpy_state[2:]],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, *rest = state["numpy"]
    np.random.set_state((name, keys.numpy(), *rest))
    random.setstate(state["python"])


def resume_training(
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
    set_rng_state(state["rng"])
    return int(state["step"])
