"""Per-modality normalization in the shared trunk: shared convolutions, one BatchNorm per modality.

STARS runs one trunk on optical, SAR and DSM. With one BatchNorm per layer, the trunk normalizes all three
with the statistics of their mixture, so each modality is mis-scaled by the others; a single-modality
specialist's trunk is not. ``ModalityNorm`` keeps one BatchNorm (statistics and affine) per modality, the
domain-specific BatchNorm of multi-domain learning: a few hundred parameters, and at export the active
modality's constants fold into the preceding convolution like any BatchNorm.

The active modality is set around each trunk call (``active_modality``); a trunk with ModalityNorms is run
once per modality, never on a batch that mixes them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

from torch import Tensor, nn

from stars_edge.errors import ConfigError
from stars_edge.models.pattern_norm import activated

TRUNK_NORM_MODES: tuple[str, ...] = ("shared", "modality")


class ModalityNorm(nn.Module):
    """BatchNorm2d with one set of statistics and affine parameters per modality."""

    def __init__(self, channels: int, modalities: Sequence[str]) -> None:
        super().__init__()
        self.channels = channels
        self.per_modality = nn.ModuleDict({m: nn.BatchNorm2d(channels) for m in modalities})
        self.active: str | None = None

    def extra_repr(self) -> str:
        return f"{self.channels}, modalities={', '.join(self.per_modality)}"

    def forward(self, x: Tensor) -> Tensor:
        if self.active is None:
            raise ConfigError("ModalityNorm called outside active_modality(): the trunk needs its modality")
        if self.active not in self.per_modality:
            raise ConfigError(f"modality {self.active!r} has no normalization in this trunk")
        bn: nn.Module = self.per_modality[self.active]
        return bn(x)


def use_modality_norms(trunk: nn.Module, modalities: Sequence[str]) -> int:
    """Replace every BatchNorm2d under ``trunk`` by a ModalityNorm; returns how many were replaced."""
    replaced = 0
    for name, child in list(trunk.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            setattr(trunk, name, ModalityNorm(child.num_features, modalities))
            replaced += 1
        else:
            replaced += use_modality_norms(child, modalities)
    return replaced


def modality_norms(module: nn.Module) -> list[ModalityNorm]:
    return [m for m in module.modules() if isinstance(m, ModalityNorm)]


def active_modality(norms: Sequence[ModalityNorm], modality: str) -> contextlib.AbstractContextManager[None]:
    """Within the block, every norm in ``norms`` uses ``modality``'s BatchNorm."""
    return activated(norms, modality)
