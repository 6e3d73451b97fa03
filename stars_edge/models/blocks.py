"""Small building blocks: plain conv + BN + ReLU units (they fold and quantise to integer kernels), ResNet
basic and bottleneck blocks, SCSE attention."""

from __future__ import annotations

from torch import Tensor, nn


class ConvBNReLU(nn.Sequential):
    """Conv -> BatchNorm -> ReLU: folds into one conv at export and maps to QLinearConv / TensorRT int8."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, relu: bool = True) -> None:
        layers: list[nn.Module] = [
            nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=kernel // 2, bias=False),
            nn.BatchNorm2d(out_ch),
        ]
        if relu:
            layers.append(nn.ReLU(inplace=True))
        super().__init__(*layers)


class PlainBlock(nn.Module):
    """One 3x3 conv unit with a residual add when shapes allow: the cheapest block that still trains deep."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv = ConvBNReLU(in_ch, out_ch, 3, stride, relu=False)
        self.residual = stride == 1 and in_ch == out_ch
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv(x)
        if self.residual:
            out = out + x
        return self.act(out)


class BasicBlock(nn.Module):
    """ResNet-18/34 basic block (two 3x3 convs and a projected shortcut when the shape changes)."""

    expansion = 1

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(in_ch, out_ch, 3, stride)
        self.conv2 = ConvBNReLU(out_ch, out_ch, 3, 1, relu=False)
        self.shortcut: nn.Module = (
            ConvBNReLU(in_ch, out_ch, 1, stride, relu=False)
            if stride != 1 or in_ch != out_ch
            else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class BottleneckBlock(nn.Module):
    """ResNet-50 bottleneck: 1x1 reduce, 3x3 (strided), 1x1 expand to ``out_ch`` (= 4x the inner width)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int = 1) -> None:
        super().__init__()
        inner = max(out_ch // 4, 1)
        self.conv1 = ConvBNReLU(in_ch, inner, 1)
        self.conv2 = ConvBNReLU(inner, inner, 3, stride)
        self.conv3 = ConvBNReLU(inner, out_ch, 1, relu=False)
        self.shortcut: nn.Module = (
            ConvBNReLU(in_ch, out_ch, 1, stride, relu=False)
            if stride != 1 or in_ch != out_ch
            else nn.Identity()
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


BLOCKS: dict[str, type[nn.Module]] = {"plain": PlainBlock, "basic": BasicBlock, "bottleneck": BottleneckBlock}


class SCSE(nn.Module):
    """Concurrent spatial and channel squeeze-excitation (Roy et al. 2018), used on the concatenated
    modality features so the fusion can weight modalities per channel and per pixel."""

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        hidden = max(channels // reduction, 4)
        self.channel_gate = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, channels, 1),
            nn.Sigmoid(),
        )
        self.spatial_gate = nn.Sequential(nn.Conv2d(channels, 1, 1), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:
        return x * self.channel_gate(x) + x * self.spatial_gate(x)
