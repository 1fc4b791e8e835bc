"""Wide residual networks WRN-d-k (Zagoruyko & Komodakis, 2016, "Wide Residual Networks"), for CIFAR.

A 3x3 stem of 16 channels, three stages of (d-4)/6 pre-activation basic blocks of widths 16k, 32k, 64k at
strides 1, 2, 2, a final BN-ReLU, global average pooling and a linear classifier. A 1x1 conv shortcut
(no BN) replaces the identity where the width changes, and it reads the pre-activated input.

Module paths: `conv1`, `layer1` .. `layer3` (each block `layerS.I` with `bn1`, `conv1`, `bn2`, `conv2` and,
where the width changes, `downsample`), `bn` (the final BatchNorm), `pool` (the pooled (B, 64k) feature)
and `fc`. The blocks are pre-activation, so stage outputs are sums before any BN-ReLU; the next stage's
first `bn1` (or the final `bn`) normalises them. No operation is in-place.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from distill.models._common import GlobalAvgPool, conv1x1, conv3x3, he_init


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-(dropout)-conv3x3, plus the shortcut. The first conv carries the stride."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1, dropout: float = 0.0):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = conv3x3(in_channels, channels, stride)
        self.bn2 = nn.BatchNorm2d(channels)
        self.conv2 = conv3x3(channels, channels)
        self.dropout = dropout
        # widths change exactly where strides do in a WRN, so width alone decides the projection
        self.downsample = conv1x1(in_channels, channels, stride) if in_channels != channels else None

    def forward(self, x: Tensor) -> Tensor:
        pre = F.relu(self.bn1(x))
        shortcut = x if self.downsample is None else self.downsample(pre)
        out = F.relu(self.bn2(self.conv1(pre)))
        if self.dropout:
            out = F.dropout(out, self.dropout, self.training)
        return self.conv2(out) + shortcut


def wide_stage(in_channels: int, channels: int, num_blocks: int, stride: int, dropout: float) -> nn.Sequential:
    blocks = [WideBlock(in_channels, channels, stride, dropout)]
    blocks += [WideBlock(channels, channels, 1, dropout) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class WideResNet(nn.Module):
    """WRN-`depth`-`widen_factor`; `dropout` is the rate between a block's two convs (0 in the KD benchmarks)."""

    def __init__(
        self, depth: int, widen_factor: int, in_channels: int = 3, num_classes: int = 100, dropout: float = 0.0
    ):
        super().__init__()
        if depth < 10 or (depth - 4) % 6:
            raise ValueError(f"a WRN has depth 6n+4 (10, 16, 22, ...), got {depth}")
        n, k = (depth - 4) // 6, widen_factor
        self.conv1 = conv3x3(in_channels, 16)
        self.layer1 = wide_stage(16, 16 * k, n, stride=1, dropout=dropout)
        self.layer2 = wide_stage(16 * k, 32 * k, n, stride=2, dropout=dropout)
        self.layer3 = wide_stage(32 * k, 64 * k, n, stride=2, dropout=dropout)
        self.bn = nn.BatchNorm2d(64 * k)
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(64 * k, num_classes)
        he_init(self)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)  # (B, 16, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (B, 64k, H/4, W/4), pre-activation
        x = F.relu(self.bn(x))
        return self.fc(self.pool(x))  # (B, num_classes)
