"""MobileNetV2 (Sandler et al., 2018, "MobileNetV2: Inverted Residuals and Linear Bottlenecks") as the CIFAR
KD benchmarks build it: RepDistiller's and mdistiller's "mobile_half", listed as "MobileNetV2" in their tables.

Kept from that variant, since it decides parameter counts and results: width multiplier 0.5 on the stem and
the seven bottleneck stages but not on the last 1x1 conv (1280 channels); ReLU, not ReLU6; a 1x1 expansion
conv in the first stage too (t=1); stride 2 in the stem and stride 1 in the 24-channel stage, so a 32x32
input runs at 16, 16, 8, 4, 4, 2, 2 pixels through the stages.

Module paths: `conv1` (the stem), `stage1` .. `stage7` (each block `stageS.I` with `expand`, `depthwise` and
`project`, each a conv-BN(-ReLU) Sequential), `conv2` (the 1x1 conv to 1280 channels), `pool` (the pooled
(B, 1280) feature) and `fc`. Stage outputs are linear bottlenecks (no ReLU). No operation is in-place.
"""

from __future__ import annotations

from torch import Tensor, nn

from distill.models._common import GlobalAvgPool, conv1x1, conv3x3, he_init

# (expansion t, output channels c, blocks n, first stride s) per stage, the paper's Table 2 with CIFAR strides
STAGES = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def conv_bn(conv: nn.Conv2d, relu: bool = True) -> nn.Sequential:
    layers = [conv, nn.BatchNorm2d(conv.out_channels)]
    return nn.Sequential(*layers, nn.ReLU()) if relu else nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """1x1 expansion by t, 3x3 depthwise (carries the stride), linear 1x1 projection; a residual connection
    when the shape is unchanged."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expansion: int):
        super().__init__()
        hidden = in_channels * expansion
        self.expand = conv_bn(conv1x1(in_channels, hidden))
        self.depthwise = conv_bn(conv3x3(hidden, hidden, stride, groups=hidden))
        self.project = conv_bn(conv1x1(hidden, out_channels), relu=False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


def inverted_stage(in_channels: int, out_channels: int, num_blocks: int, stride: int, t: int) -> nn.Sequential:
    blocks = [InvertedResidual(in_channels, out_channels, stride, t)]
    blocks += [InvertedResidual(out_channels, out_channels, 1, t) for _ in range(num_blocks - 1)]
    return nn.Sequential(*blocks)


class MobileNetV2(nn.Module):
    """MobileNetV2 with width multiplier `width` (0.5 in the benchmarks) and expansion `t` in stages 2-7."""

    def __init__(self, width: float = 0.5, t: int = 6, in_channels: int = 3, num_classes: int = 100):
        super().__init__()
        channels = int(32 * width)
        self.conv1 = conv_bn(conv3x3(in_channels, channels, stride=2))
        stages = []
        for i, (expansion, c, n, s) in enumerate(STAGES):
            out_channels = int(c * width)
            stages.append(inverted_stage(channels, out_channels, n, s, expansion if i == 0 else t))
            channels = out_channels
        self.stage1, self.stage2, self.stage3, self.stage4, self.stage5, self.stage6, self.stage7 = stages
        last = int(1280 * width) if width > 1.0 else 1280  # never narrower than 1280
        self.conv2 = conv_bn(conv1x1(channels, last))
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(last, num_classes)
        he_init(self)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv1(x)  # (B, 32w, H/2, W/2)
        for stage in (self.stage1, self.stage2, self.stage3, self.stage4, self.stage5, self.stage6, self.stage7):
            x = stage(x)  # down to (B, 320w, H/16, W/16)
        x = self.conv2(x)  # (B, 1280, H/16, W/16)
        return self.fc(self.pool(x))  # (B, num_classes)
