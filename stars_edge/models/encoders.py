"""Plain-PyTorch multi-scale encoders with a timm-like interface.

timm cannot be imported beside the CPU torch wheel used here (it hard-imports torchvision), so the
backbones are written out: each encoder maps ``(N, in_chans, H, W)`` to four feature maps at strides
4, 8, 16 and 32 and exposes ``in_chans`` and ``feature_channels``, like ``timm.create_model(...,
features_only=True)``. ``"timm:<name>"`` still uses timm where it imports.

An encoder is a *stem* (stride 4, owns the band count) and a *body* (four stages). STARS builds one stem per
modality and shares one body across modalities, so the split is explicit here.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from stars_edge.errors import ConfigError
from stars_edge.models.blocks import BLOCKS, ConvBNReLU

REDUCTIONS: tuple[int, ...] = (4, 8, 16, 32)


@dataclass(frozen=True)
class EncoderArch:
    """Shape of a backbone: stem type and width, per-stage widths, blocks per stage, block type."""

    stem: Literal["light", "resnet"]
    stem_channels: int
    widths: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    block: Literal["plain", "basic", "bottleneck"]

    def scaled(self, width_scale: float, depth: int | None = None) -> EncoderArch:
        """A lighter copy (the modality-specific branch): widths scaled, optionally ``depth`` blocks/stage."""
        multiple = 4
        widths = tuple(max(multiple, math.ceil(w * width_scale / multiple) * multiple) for w in self.widths)
        depths = self.depths if depth is None else (depth,) * 4
        return dataclasses.replace(self, widths=widths, depths=depths)  # type: ignore[arg-type]


#: Backbones by name. "tiny" is for tests; "edge" is the deployment default; resnet* follow torchvision.
ENCODER_REGISTRY: dict[str, EncoderArch] = {
    "tiny": EncoderArch("light", 8, (8, 16, 24, 32), (1, 1, 1, 1), "plain"),
    "edge": EncoderArch("light", 16, (16, 32, 64, 96), (1, 1, 1, 1), "plain"),
    "resnet18": EncoderArch("resnet", 64, (64, 128, 256, 512), (2, 2, 2, 2), "basic"),
    "resnet34": EncoderArch("resnet", 64, (64, 128, 256, 512), (3, 4, 6, 3), "basic"),
    "resnet50": EncoderArch("resnet", 64, (256, 512, 1024, 2048), (3, 4, 6, 3), "bottleneck"),
}


def get_arch(name: str) -> EncoderArch:
    """Look up a registry encoder; the error lists every valid name."""
    try:
        return ENCODER_REGISTRY[name]
    except KeyError:
        valid = ", ".join([*ENCODER_REGISTRY, "timm:<name>"])
        raise ConfigError(f"unknown encoder {name!r}; valid encoders: {valid}") from None


def build_stem(arch: EncoderArch, in_chans: int) -> nn.Module:
    """Stride-4 stem for ``in_chans`` bands: two strided 3x3 convs ("light") or ResNet's 7x7 + max-pool."""
    if arch.stem == "resnet":
        return nn.Sequential(
            ConvBNReLU(in_chans, arch.stem_channels, 7, 2), nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        )
    half = max(arch.stem_channels // 2, 4)
    return nn.Sequential(ConvBNReLU(in_chans, half, 3, 2), ConvBNReLU(half, arch.stem_channels, 3, 2))


class EncoderBody(nn.Module):
    """Four stages at strides 4, 8, 16, 32 (relative to the image) on top of a stride-4 stem output."""

    def __init__(self, arch: EncoderArch, in_channels: int) -> None:
        super().__init__()
        block = BLOCKS[arch.block]
        stages = []
        channels = in_channels
        for index, (width, depth) in enumerate(zip(arch.widths, arch.depths, strict=True)):
            stride = 1 if index == 0 else 2
            layers = [block(channels, width, stride)]
            layers.extend(block(width, width, 1) for _ in range(depth - 1))
            stages.append(nn.Sequential(*layers))
            channels = width
        self.stages = nn.ModuleList(stages)
        self.in_channels = in_channels
        self.feature_channels: list[int] = list(arch.widths)

    def forward(self, x: Tensor) -> list[Tensor]:
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class Encoder(nn.Module):
    """Stem + body: ``forward(x) -> [f4, f8, f16, f32]``, timm ``features_only`` style."""

    def __init__(self, arch: EncoderArch, in_chans: int) -> None:
        super().__init__()
        self.in_chans = in_chans
        self.stem = build_stem(arch, in_chans)
        self.body = EncoderBody(arch, arch.stem_channels)
        self.feature_channels: list[int] = self.body.feature_channels
        self.reductions: tuple[int, ...] = REDUCTIONS

    def forward(self, x: Tensor) -> list[Tensor]:
        return self.body(self.stem(x))


class TimmEncoder(nn.Module):
    """A timm backbone (``features_only=True``) restricted to its stride 4/8/16/32 feature maps."""

    def __init__(self, name: str, in_chans: int) -> None:
        super().__init__()
        try:
            import timm
        except Exception as exc:  # timm fails at import beside the CPU torch wheel (torchvision mismatch)
            raise ConfigError(
                f"encoder 'timm:{name}' needs a working timm install ({type(exc).__name__}: {exc}); "
                f"use a built-in encoder instead: {', '.join(ENCODER_REGISTRY)}"
            ) from exc
        try:
            model = timm.create_model(name, features_only=True, in_chans=in_chans, pretrained=False)
        except RuntimeError as exc:
            raise ConfigError(f"timm cannot build {name!r}: {exc}") from exc
        reductions = list(model.feature_info.reduction())
        missing = [r for r in REDUCTIONS if r not in reductions]
        if missing:
            raise ConfigError(
                f"timm model {name!r} has no features at stride(s) {missing}; pick a CNN backbone"
            )
        self.model = model
        self.keep = [reductions.index(r) for r in REDUCTIONS]
        channels = list(model.feature_info.channels())
        self.in_chans = in_chans
        self.feature_channels: list[int] = [channels[i] for i in self.keep]
        self.reductions: tuple[int, ...] = REDUCTIONS

    def forward(self, x: Tensor) -> list[Tensor]:
        features = self.model(x)
        return [features[i] for i in self.keep]


def create_encoder(name: str, in_chans: int) -> nn.Module:
    """Build an encoder by registry name or ``"timm:<name>"``; it exposes ``feature_channels``."""
    if name.startswith("timm:"):
        return TimmEncoder(name.split(":", 1)[1], in_chans)
    return Encoder(get_arch(name), in_chans)
