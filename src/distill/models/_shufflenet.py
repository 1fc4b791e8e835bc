"""ShuffleNet V1 (Zhang et al., 2018) and V2 (Ma et al., 2018) as the CIFAR KD benchmarks build them
(RepDistiller's and mdistiller's "ShuffleV1" and "ShuffleV2", after kuangliu/pytorch-cifar).

CIFAR adaptations kept from that source: a 1x1 stem conv of 24 channels at stride 1 and no max-pool, so
the three stages run at 16, 8 and 4 pixels for a 32x32 input. V1: 3 groups, stage widths 240/480/960, 4/8/4
units, a ReLU also after the depthwise BN, the first unit's first 1x1 conv ungrouped (its input is the
24-channel stem). V2 at 1x: stage widths 116/232/464, a downsampling unit plus 3/7/3 basic units per stage,
a 1x1 conv to 1024 channels before pooling.

Module paths, both: `conv1`, `bn1` (the stem), `layer1` .. `layer3` (units `layerS.I`), `pool` (the pooled
feature: (B, 960) for V1, (B, 1024) for V2) and `fc`; V2 also `conv2`, `bn2` (the last 1x1 conv and its BN).
V1 units have `conv1`/`bn1`, `conv2`/`bn2` (depthwise), `conv3`/`bn3`; V2 units have `branch` (and `left`,
`right` in a downsampling unit), conv-BN(-ReLU) Sequentials. Stage outputs are post-ReLU. No operation is
in-place.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.models._common import GlobalAvgPool, conv1x1, conv3x3

STEM_CHANNELS = 24


def channel_shuffle(x: Tensor, groups: int) -> Tensor:
    """Interleave the channels of `groups` groups so the next grouped conv sees all of them: (B, C, H, W)."""
    b, c, h, w = x.shape
    return x.reshape(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)


class ShuffleV1Unit(nn.Module):
    """Grouped 1x1 - shuffle - depthwise 3x3 - grouped 1x1, bottleneck at a quarter of the output width.
    Stride 2 concatenates a 3x3 average-pooled shortcut (the unit's output is then in + branch channels)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int, group_first_conv: bool = True):
        super().__init__()
        branch = out_channels - in_channels if stride == 2 else out_channels
        mid = branch // 4
        self.first_groups = groups if group_first_conv else 1
        self.conv1 = conv1x1(in_channels, mid, groups=self.first_groups)
        self.bn1 = nn.BatchNorm2d(mid)
        self.conv2 = conv3x3(mid, mid, stride, groups=mid)
        self.bn2 = nn.BatchNorm2d(mid)
        self.conv3 = conv1x1(mid, branch, groups=groups)
        self.bn3 = nn.BatchNorm2d(branch)
        self.shortcut = nn.AvgPool2d(3, stride=2, padding=1) if stride == 2 else None

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = channel_shuffle(out, self.first_groups)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.shortcut is None:
            return F.relu(out + x)
        return F.relu(torch.cat([out, self.shortcut(x)], dim=1))


class ShuffleNetV1(nn.Module):
    """ShuffleNet V1 with `groups` groups; stage i has `units[i]` units and ends `widths[i]` channels wide."""

    def __init__(
        self,
        widths: Sequence[int] = (240, 480, 960),
        units: Sequence[int] = (4, 8, 4),
        groups: int = 3,
        in_channels: int = 3,
        num_classes: int = 100,
    ):
        super().__init__()
        self.conv1 = conv1x1(in_channels, STEM_CHANNELS)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        stages, channels = [], STEM_CHANNELS
        for i, (width, n) in enumerate(zip(widths, units, strict=True)):
            first = ShuffleV1Unit(channels, width, 2, groups, group_first_conv=i > 0)
            stages.append(nn.Sequential(first, *(ShuffleV1Unit(width, width, 1, groups) for _ in range(n - 1))))
            channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 24, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 960, H/8, W/8)
        return self.fc(self.pool(x))  # (B, num_classes)


def conv_bn_layers(conv: nn.Conv2d, relu: bool) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(conv.out_channels)] + ([nn.ReLU()] if relu else [])


class ShuffleV2Unit(nn.Module):
    """Split the channels in half; one half passes, the other goes 1x1 - depthwise 3x3 - 1x1; concatenate, shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            *conv_bn_layers(conv1x1(half, half), relu=True),
            *conv_bn_layers(conv3x3(half, half, groups=half), relu=False),
            *conv_bn_layers(conv1x1(half, half), relu=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        kept, transformed = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat([kept, self.branch(transformed)], dim=1), 2)


class ShuffleV2Down(nn.Module):
    """Both branches see the whole input and halve the resolution; each gives half of `out_channels`."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        half = out_channels // 2
        self.left = nn.Sequential(
            *conv_bn_layers(conv3x3(in_channels, in_channels, stride=2, groups=in_channels), relu=False),
            *conv_bn_layers(conv1x1(in_channels, half), relu=True),
        )
        self.right = nn.Sequential(
            *conv_bn_layers(conv1x1(in_channels, half), relu=True),
            *conv_bn_layers(conv3x3(half, half, stride=2, groups=half), relu=False),
            *conv_bn_layers(conv1x1(half, half), relu=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], dim=1), 2)


class ShuffleNetV2(nn.Module):
    """ShuffleNet V2; stage i is a downsampling unit to `widths[i]` channels and `units[i]` basic units,
    then a 1x1 conv to `widths[3]` channels."""

    def __init__(
        self,
        widths: Sequence[int] = (116, 232, 464, 1024),
        units: Sequence[int] = (3, 7, 3),
        in_channels: int = 3,
        num_classes: int = 100,
    ):
        super().__init__()
        self.conv1 = conv1x1(in_channels, STEM_CHANNELS)
        self.bn1 = nn.BatchNorm2d(STEM_CHANNELS)
        stages, channels = [], STEM_CHANNELS
        for width, n in zip(widths[:3], units, strict=True):
            stages.append(nn.Sequential(ShuffleV2Down(channels, width), *(ShuffleV2Unit(width) for _ in range(n))))
            channels = width
        self.layer1, self.layer2, self.layer3 = stages
        self.conv2 = conv1x1(channels, widths[3])
        self.bn2 = nn.BatchNorm2d(widths[3])
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 24, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 464, H/8, W/8)
        x = F.relu(self.bn2(self.conv2(x)))  # (B, 1024, H/8, W/8)
        return self.fc(self.pool(x))  # (B, num_classes)
