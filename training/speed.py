"""Training speed options: channels-last memory format and bf16 autocast, switched by ``TrainConfig``.

The default (``channels_last: false``, ``autocast: none``) is the plain fp32 path: with a fixed seed and
thread count it gives bit-identical losses run after run (``tests/test_accuracy_harness.py``), which the
accuracy study relies on to compare methods. The other options trade that for speed where the CPU has the
kernels (oneDNN's channels-last convolutions; bf16 on CPUs with AVX512_BF16 or AMX, see ``cpu_flags``).
Only the forward pass and the losses run under autocast; gradients and the AdamW update stay fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Protocol

import torch

from stars_edge.errors import ConfigError

#: Valid values of ``TrainConfig.autocast``.
AUTOCAST_MODES: tuple[str, ...] = ("none", "bf16")

#: CPU flags that decide whether bf16 autocast has native kernels (otherwise it is emulated and slow).
BF16_CPU_FLAGS: tuple[str, ...] = ("avx512_bf16", "amx_bf16", "amx_tile")


class SpeedOptions(Protocol):
    """The speed fields of ``training.config.TrainConfig`` (a Protocol, so this module does not import
    the config, which imports it to validate them)."""

    @property
    def channels_last(self) -> bool: ...

    @property
    def autocast(self) -> str: ...


def check_speed_options(config: SpeedOptions) -> None:
    """Reject an unknown ``autocast`` mode with the list of valid ones."""
    if config.autocast not in AUTOCAST_MODES:
        raise ConfigError(
            f"autocast must be one of {', '.join(AUTOCAST_MODES)}, got {config.autocast!r}; "
            "use none for the bit-stable fp32 path"
        )


def prepare_model(model: torch.nn.Module, config: SpeedOptions) -> torch.nn.Module:
    """Convert the weights to channels-last when asked (in place; returns the model for chaining)."""
    if config.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model


def prepare_batch(batch: Mapping[str, torch.Tensor], config: SpeedOptions) -> dict[str, torch.Tensor]:
    """The batch in the model's memory format: 4-D float images become channels-last when asked."""
    if not config.channels_last:
        return dict(batch)
    return {
        key: value.contiguous(memory_format=torch.channels_last)
        if value.ndim == 4 and value.is_floating_point()
        else value
        for key, value in batch.items()
    }


def autocast_context(config: SpeedOptions, device: torch.device) -> AbstractContextManager[object]:
    """The context the forward pass and losses run in: bf16 autocast, or nothing (fp32)."""
    if config.autocast == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_flags(path: Path = Path("/proc/cpuinfo")) -> tuple[str, ...]:
    """The CPU's feature flags (empty where ``/proc/cpuinfo`` is absent, e.g. macOS)."""
    try:
        text = path.read_text()
    except OSError:
        return ()
    for line in text.splitlines():
        if line.startswith("flags"):
            return tuple(sorted(line.split(":", 1)[1].split()))
    return ()


def native_bf16(flags: tuple[str, ...] | None = None) -> bool:
    """Whether the CPU has bf16 instructions (AVX512_BF16 or AMX), so bf16 autocast can pay off."""
    present = set(cpu_flags() if flags is None else flags)
    return any(flag in present for flag in BF16_CPU_FLAGS)
