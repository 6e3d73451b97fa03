"""Data-parallel training: two CPU processes (gloo) end with identical weights."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.multiprocessing as mp

from training.config import TrainConfig
from training.loop import train


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(rank: int, world_size: int, port: int, out: str) -> None:
    os.environ.update(
        {
            "RANK": str(rank),
            "WORLD_SIZE": str(world_size),
            "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
        }
    )
    torch.set_num_threads(1)
    config = TrainConfig(
        variant="tiny",
        tile_size=64,
        batch_size=2,
        synthetic_size=128,
        synthetic_train_scenes=2,
        synthetic_val_scenes=1,
        steps=3,
        log_every=1,
        val_every=1000,
        checkpoint_every=1000,
        device="cpu",
        output_dir=Path(out) / "run",
        seed=5,
        val_patterns="sar",
    )
    result = train(config, progress=False)
    torch.save(result.model.state_dict(), Path(out) / f"rank{rank}.pt")


def test_two_cpu_processes_hold_identical_weights(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    first = torch.load(tmp_path / "rank0.pt", weights_only=True)
    second = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), name
    assert (tmp_path / "run" / "checkpoint.pt").is_file()
