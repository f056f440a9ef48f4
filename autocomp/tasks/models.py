"""Built-in architectures: a small residual CNN and a MobileNet-style inverted-residual net.

Both take a ``width`` multiplier so that a narrower student of the same
architecture (same module paths, fewer channels) can be built fresh for
distillation. Channel counts are rounded to multiples of 8 because that is
what every device profile wants from pruning as well.
"""

from __future__ import annotations

import torch
from torch import nn


def scaled_channels(channels: int, width: float, *, multiple: int = 8) -> int:
    """``channels * width`` rounded to the nearest multiple (at least one multiple)."""
    return max(multiple, int(round(channels * width / multiple)) * multiple)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs with BatchNorm and an identity (or 1x1) skip."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNetDigits(nn.Module):
    """Residual CNN for 1x32x32 inputs: stem, three stages of two basic blocks, linear head."""

    BASE_CHANNELS = (24, 48, 96)

    def __init__(self, *, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, c3 = (scaled_channels(c, width) for c in self.BASE_CHANNELS)
        self.stem = nn.Sequential(nn.Conv2d(1, c1, 3, padding=1, bias=False), nn.BatchNorm2d(c1), nn.ReLU())
        self.layer1 = nn.Sequential(BasicBlock(c1, c1), BasicBlock(c1, c1))
        self.layer2 = nn.Sequential(BasicBlock(c1, c2, stride=2), BasicBlock(c2, c2))
        self.layer3 = nn.Sequential(BasicBlock(c2, c3, stride=2), BasicBlock(c3, c3))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 project; skip when shapes match."""

    def __init__(self, in_channels: int, out_channels: int, *, stride: int, expand: int) -> None:
        super().__init__()
        hidden = in_channels * expand
        self.use_skip = stride == 1 and in_channels == out_channels
        self.expand = nn.Sequential(nn.Conv2d(in_channels, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6())
        self.depthwise = nn.Sequential(
            nn.Conv2d(hidden, hidden, 3, stride=stride, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU6(),
        )
        self.project = nn.Sequential(nn.Conv2d(hidden, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.use_skip else out


class MobileNetDigits(nn.Module):
    """MobileNetV2-style net for 1x32x32 inputs (depthwise-separable, inverted residuals)."""

    # (out_channels, stride, expand) per block
    BLOCKS = ((16, 1, 1), (24, 2, 4), (24, 1, 4), (48, 2, 4), (48, 1, 4), (64, 1, 4), (96, 2, 4), (96, 1, 4))

    def __init__(self, *, width: float = 1.0, num_classes: int = 10) -> None:
        super().__init__()
        stem_channels = scaled_channels(32, width)
        self.stem = nn.Sequential(nn.Conv2d(1, stem_channels, 3, padding=1, bias=False), nn.BatchNorm2d(stem_channels), nn.ReLU6())
        blocks, in_channels = [], stem_channels
        for out, stride, expand in self.BLOCKS:
            out_channels = scaled_channels(out, width)
            blocks.append(InvertedResidual(in_channels, out_channels, stride=stride, expand=expand))
            in_channels = out_channels
        self.blocks = nn.Sequential(*blocks)
        head_channels = scaled_channels(256, width)
        self.head = nn.Sequential(nn.Conv2d(in_channels, head_channels, 1, bias=False), nn.BatchNorm2d(head_channels), nn.ReLU6())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(head_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(torch.flatten(self.pool(x), 1))
