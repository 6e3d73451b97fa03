"""The demo's sizes and budgets (``DemoConfig``) and what it wrote and measured (``DemoResult``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class DemoConfig:
    """Sizes and budgets of the demo; ``quick()`` is the under-2-minutes variant."""

    out: Path
    seed: int = 0
    variant: str = "edge"
    train_scenes: int = 16
    train_scene_size: int = 256
    train_steps: int = 600
    batch_size: int = 8
    train_tile: int = 128
    scene_size: int = 1024
    tile: int = 256
    overlap: int = 32
    precisions: tuple[str, ...] = ("fp32", "int8")
    calib_tiles: int = 8
    gate_tiles: int = 16
    threads: int | None = None
    latency_runs: int = 5
    quick: bool = False

    @classmethod
    def quick_config(cls, out: Path, seed: int = 0, threads: int | None = None) -> DemoConfig:
        return cls(
            out=out,
            seed=seed,
            variant="tiny",
            train_scenes=4,
            train_scene_size=128,
            train_steps=60,
            batch_size=4,
            train_tile=64,
            scene_size=512,
            tile=256,
            overlap=32,
            precisions=("fp32",),
            calib_tiles=8,
            gate_tiles=8,
            threads=threads,
            latency_runs=3,
            quick=True,
        )


@dataclass
class DemoResult:
    """Where the demo wrote its artifacts and what it measured."""

    out: Path
    prediction: Path
    pattern_map: Path
    preview: Path
    report: Path
    checkpoint: Path
    engines: Path
    miou: float
    per_pattern: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
