"""The STARS decoder: per-scale SCSE fusion of the modalities' features, an FPN top-down path to stride 4,
a smoothing conv and the classifier, every norm a ``PatternNorm`` (per-pattern statistics).

``decoder_parts`` builds one decoder (for the patterns whose statistics it keeps); ``decode_features`` runs
one. ``STARSModel`` holds either one shared decoder (``fusion``/``smooth``/``head``) or, with
``decoder="per_pattern"``, one per pattern in ``pattern_decoders``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from contextvars import ContextVar
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stars_edge.errors import ConfigError
from stars_edge.manifest import LOGITS_STRIDES
from stars_edge.models.blocks import SCSE, ConvBNReLU
from stars_edge.models.pattern_norm import PatternNorm, activated


def decoder_parts(
    patterns: list[str],
    feature_channels: Sequence[int],
    modalities: int,
    width: int,
    classes: int,
    scse_reduction: int,
    pattern_norm: str,
) -> tuple[nn.ModuleList, nn.Module, nn.Conv2d]:
    """One decoder's fusion (per scale: SCSE -> 1x1 conv), smoothing 3x3 conv and classifier.

    ``patterns`` are the patterns its ``PatternNorm``s keep statistics for (``pattern_norm`` mode).
    """

    def unit(in_ch: int, kernel: int) -> ConvBNReLU:
        layer = ConvBNReLU(in_ch, width, kernel)
        layer[1] = PatternNorm(width, patterns, pattern_norm)
        return layer

    fusion = nn.ModuleList(
        [
            nn.Sequential(SCSE(modalities * c, scse_reduction), unit(modalities * c, 1))
            for c in feature_channels
        ]
    )
    return fusion, unit(width, 3), nn.Conv2d(width, classes, 1)


#: Stride of the logits ``decode_features`` returns when not told: 1 (upsampled), or 4 inside
#: ``logits_at_stride(4)`` (the export wrapper's, for ``build-engines --logits-stride 4``).
_LOGITS_STRIDE: ContextVar[int] = ContextVar("logits_stride", default=1)


@contextlib.contextmanager
def logits_at_stride(stride: int) -> Iterator[None]:
    """Within the block, decoders return logits at ``stride`` (1 or 4): an exported graph then ends at the
    classifier, and the runtime upsamples once per output pixel (issue 21) instead of the engine."""
    if stride not in LOGITS_STRIDES:
        raise ConfigError(f"--logits-stride must be 1 or 4, got {stride}")
    token = _LOGITS_STRIDE.set(stride)
    try:
        yield
    finally:
        _LOGITS_STRIDE.reset(token)


def decode_features(
    features: Mapping[str, Sequence[Tensor]],
    modalities: Sequence[str],
    fusion: nn.Module,
    smooth: nn.Module,
    head: nn.Module,
    norms: list[PatternNorm],
    pattern: str,
) -> Tensor:
    """Concat modalities per scale -> fusion; FPN top-down to stride 4; smooth; head; upsample x4.

    ``norms`` (the per-pattern ones) are switched to ``pattern`` for the call. Inside
    ``logits_at_stride(4)`` the final upsampling is skipped.
    """
    with activated(norms, pattern) if norms else contextlib.nullcontext():
        laterals = [
            fuse(torch.cat([features[m][i] for m in modalities], dim=1))
            for i, fuse in enumerate(cast(nn.ModuleList, fusion))
        ]
        top = laterals[-1]
        for lateral in reversed(laterals[:-1]):
            top = lateral + F.interpolate(top, scale_factor=2.0, mode="nearest")
        logits = head(smooth(top))
    if _LOGITS_STRIDE.get() == 4:
        return logits
    return F.interpolate(logits, scale_factor=4.0, mode="bilinear", align_corners=False)
