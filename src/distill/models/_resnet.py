"""Residual networks (He et al., 2016, "Deep Residual Learning for Image Recognition").

Two layouts, both with a 3x3 stride-1 stem and no max-pool, as CIFAR work runs them:

- `CifarResNet`: the paper's CIFAR networks (Sec. 4.2): three stages of n basic blocks, depth 6n+2. The
  KD benchmarks (RepDistiller, mdistiller) use projection shortcuts (1x1 conv + BN) wherever the shape
  changes, not the paper's zero-padding option A, and widen the stages for the "x4" models.
- `ResNet`: the ImageNet ResNet-18/34/50 stage layout (widths 64/128/256/512, basic or bottleneck blocks)
  on 32x32 inputs: 3x3 stem, stride 1, so the four stages run at 32, 16, 8 and 4 pixels.

Module paths: `conv1`, `bn1`, `layer1` .. `layer3` (`layer4` in `ResNet`), each block `layerS.I` with
`conv1`/`bn1`, `conv2`/`bn2` (`conv3`/`bn3` in a bottleneck) and `downsample` where the shape changes;
`pool` (the pooled (B, D) feature) and `fc`. Stage outputs are post-ReLU; a block's last BN output
(e.g. `layer3.4.bn2`) is its residual branch before the sum. No operation is in-place, so a tapped
tensor is never overwritten later in the forward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from distill.models._common import GlobalAvgPool, conv1x1, conv3x3, he_init


def projection(in_channels: int, out_channels: int, stride: int) -> nn.Module | None:
    """The 1x1 conv + BN shortcut where a block changes the shape (the paper's option B); None keeps identity."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(conv1x1(in_channels, out_channels, stride), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU, conv3x3-BN, add the shortcut, ReLU. The first conv carries the stride."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels)
        self.bn2 = nn.BatchNorm2d(channels)
        self.downsample = projection(in_channels, channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Bottleneck(nn.Module):
    """conv1x1 reduce, conv3x3 (carries the stride), conv1x1 expand to 4x `channels`, each with BN; ReLU after
    the sum."""

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1):
        super().__init__()
        out_channels = channels * self.expansion
        self.conv1 = conv1x1(in_channels, channels)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv3 = conv1x1(channels, out_channels)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.downsample = projection(in_channels, out_channels, stride)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


Block = type[BasicBlock] | type[Bottleneck]


def make_stage(block: Block, in_channels: int, channels: int, num_blocks: int, stride: int) -> nn.Sequential:
    """`num_blocks` blocks; the first takes the stride and the change of width."""
    blocks = [block(in_channels, channels, stride)]
    blocks += [block(channels * block.expansion, channels) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for CIFAR: stem of `widths[0]` channels, then 3 stages of n basic blocks of widths
    `widths[1:]` at strides 1, 2, 2, global average pooling and a linear classifier."""

    def __init__(self, depth: int, widths: Sequence[int], in_channels: int = 3, num_classes: int = 100):
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n+2 (8, 14, 20, ...), got {depth}")
        if len(widths) != 4:
            raise ValueError(f"widths are (stem, stage1, stage2, stage3), got {tuple(widths)}")
        n = (depth - 2) // 6
        self.conv1 = conv3x3(in_channels, widths[0])
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.layer1 = make_stage(BasicBlock, widths[0], widths[1], n, stride=1)
        self.layer2 = make_stage(BasicBlock, widths[1], widths[2], n, stride=2)
        self.layer3 = make_stage(BasicBlock, widths[2], widths[3], n, stride=2)
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(widths[3], num_classes)
        he_init(self)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, w0, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, w3, H/4, W/4)
        return self.fc(self.pool(x))  # (B, num_classes)


class ResNet(nn.Module):
    """ResNet-18/34/50 stage layout for small images: 3x3 stride-1 stem of 64 channels, no max-pool, four
    stages of widths 64/128/256/512 (x4 out of a bottleneck) at strides 1, 2, 2, 2, then pool and classify."""

    def __init__(
        self,
        block: Block,
        blocks_per_stage: Sequence[int],
        in_channels: int = 3,
        num_classes: int = 100,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        e = block.expansion
        n1, n2, n3, n4 = blocks_per_stage
        self.conv1 = conv3x3(in_channels, 64)
        self.bn1 = nn.BatchNorm2d(64)
        self.layer1 = make_stage(block, 64, 64, n1, stride=1)
        self.layer2 = make_stage(block, 64 * e, 128, n2, stride=2)
        self.layer3 = make_stage(block, 128 * e, 256, n3, stride=2)
        self.layer4 = make_stage(block, 256 * e, 512, n4, stride=2)
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(512 * e, num_classes)
        he_init(self)
        if zero_init_residual:  # each block starts as the identity (Goyal et al., 2017)
            for m in self.modules():
                if isinstance(m, (BasicBlock, Bottleneck)):
                    last_bn = m.bn3 if isinstance(m, Bottleneck) else m.bn2
                    nn.init.zeros_(last_bn.weight)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (B, 64, H, W)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # (B, 512 * e, H/8, W/8)
        return self.fc(self.pool(x))  # (B, num_classes)
