"""Multi-process data-parallel training (``torchrun``): gloo on CPU, nccl on GPU.

``torchrun --nproc_per_node 2 -m training.train --config c.yaml`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; ``setup_distributed`` reads them. Without them training
runs in one process, unchanged.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from stars_edge.errors import TrainingError


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> DistributedContext:
    """Join the process group described by torchrun's environment variables (a no-op without them)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistributedContext()
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
    if dist.is_initialized():
        return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, False)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(local_rank)
    try:
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    except (RuntimeError, ValueError) as exc:
        raise TrainingError(
            f"cannot join the {backend} process group (rank {rank} of {world_size}): {exc}; "
            "launch with torchrun"
        ) from exc
    return DistributedContext(rank, world_size, local_rank, True)


def teardown_distributed(context: DistributedContext) -> None:
    """Leave the process group if this module created it."""
    if context.initialised_here and dist.is_initialized():
        dist.destroy_process_group()


def wrap_ddp(module: nn.Module, context: DistributedContext, device: torch.device) -> nn.Module:
    """DistributedDataParallel around the training objective (gradients averaged across ranks)."""
    if not context.enabled:
        return module
    device_ids = [context.local_rank] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=device_ids)


def sync_buffers(module: nn.Module, context: DistributedContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, so all ranks hold one model."""
    if not context.enabled:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer.data, src=0)


def all_reduce_mean(value: torch.Tensor, context: DistributedContext) -> torch.Tensor:
    """Mean of a tensor over ranks (for logging losses)."""
    if not context.enabled:
        return value
    reduced = value.detach().clone()
    dist.all_reduce(reduced, op=dist.ReduceOp.SUM)
    return reduced / context.world_size


def barrier(context: DistributedContext) -> None:
    if context.enabled:
        dist.barrier()
