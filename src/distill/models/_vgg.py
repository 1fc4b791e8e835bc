"""VGG with batch normalisation (Simonyan & Zisserman, 2015), the CIFAR variant of the KD benchmarks.

Five blocks of conv3x3 (with bias) - BN - ReLU layers of widths 64, 128, 256, 512, 512, 2x2 max-pools after
the first three, and no hidden fully connected layers: global average pooling feeds one linear classifier.
VGG-8 has one conv per block, VGG-13 two. As in RepDistiller, block3 and block4 both run at 4x4 for a
32x32 input; an input larger than 32 pixels gets a fourth max-pool between them (RepDistiller: at 64x64).

Module paths: `block0` .. `block4` (each a Sequential of conv, BN, ReLU triples, so `block1.1` is its first
BN and the block's last BN is its output before the final ReLU), `pool0` .. `pool3` (`pool3` is an
identity at 32x32), `pool` (the pooled (B, 512) feature) and `fc`. Block outputs are post-ReLU. No
operation is in-place.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from distill.models._common import GlobalAvgPool, he_init

WIDTHS = (64, 128, 256, 512, 512)


def vgg_block(in_channels: int, width: int, num_convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for _ in range(num_convs):
        layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU()]
        in_channels = width
    return nn.Sequential(*layers)


class VGG(nn.Module):
    """VGG-BN with `convs_per_block[i]` convolutions in block i; `image_size` (the smaller side) decides `pool3`."""

    def __init__(
        self, convs_per_block: Sequence[int], in_channels: int = 3, num_classes: int = 100, image_size: int = 32
    ):
        super().__init__()
        if len(convs_per_block) != len(WIDTHS):
            raise ValueError(f"VGG has {len(WIDTHS)} blocks, got convs_per_block={tuple(convs_per_block)}")
        widths_in = (in_channels, *WIDTHS[:-1])
        blocks = [vgg_block(c_in, w, n) for c_in, w, n in zip(widths_in, WIDTHS, convs_per_block, strict=True)]
        self.block0, self.block1, self.block2, self.block3, self.block4 = blocks
        self.pool0, self.pool1, self.pool2 = nn.MaxPool2d(2), nn.MaxPool2d(2), nn.MaxPool2d(2)
        self.pool3 = nn.MaxPool2d(2) if image_size > 32 else nn.Identity()
        self.pool = GlobalAvgPool()
        self.fc = nn.Linear(WIDTHS[-1], num_classes)
        he_init(self)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool0(self.block0(x))  # (B, 64, H/2, W/2)
        x = self.pool1(self.block1(x))  # (B, 128, H/4, W/4)
        x = self.pool2(self.block2(x))  # (B, 256, H/8, W/8)
        x = self.pool3(self.block3(x))  # (B, 512, H/8, W/8) at 32x32, H/16 above
        x = self.block4(x)
        return self.fc(self.pool(x))  # (B, num_classes)
