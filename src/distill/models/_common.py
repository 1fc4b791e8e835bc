"""Pieces the zoo models share: the pooled-feature module and the He initialisation."""

from __future__ import annotations

from torch import Tensor, nn


class GlobalAvgPool(nn.Module):
    """Average over the spatial dimensions: (B, C, H, W) -> (B, C).

    Every zoo model names this module `pool`, so its output is the feature the classifier sees.
    """

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3))


def he_init(model: nn.Module) -> None:
    """He-normal convolutions over fan-out with zero biases (He et al., 2015), BatchNorm at gamma=1, beta=0.

    The initialisation the CIFAR benchmark repositories use for their ResNets, WRNs, VGGs and MobileNetV2.
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


def conv3x3(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """3x3 convolution, padding 1, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, groups=groups, bias=False)


def conv1x1(in_channels: int, out_channels: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    """1x1 convolution, no bias (a BatchNorm follows)."""
    return nn.Conv2d(in_channels, out_channels, 1, stride=stride, groups=groups, bias=False)
