"""The CIFAR-100 knowledge-distillation benchmark zoo, by the names its tables use.

The architectures of CRD (Tian et al., 2020, "Contrastive Representation Distillation", code: RepDistiller),
DKD (Zhao et al., 2022, "Decoupled Knowledge Distillation", code: mdistiller) and the papers that report on
the same teacher-student pairs, rebuilt layer for layer so parameter counts match theirs:

    resnet8 .. resnet110, resnet8x4, resnet32x4   CIFAR ResNets (He et al., 2016)        distill.models._resnet
    ResNet18, ResNet34, ResNet50                  ImageNet stage layout on 32x32 inputs  distill.models._resnet
    wrn_16_1, wrn_16_2, wrn_40_1, wrn_40_2        wide ResNets (Zagoruyko & Komodakis)   distill.models._wrn
    vgg8, vgg13                                   VGG with BatchNorm                     distill.models._vgg
    MobileNetV2                                   width 0.5 ("mobile_half")              distill.models._mobilenet
    ShuffleV1, ShuffleV2                          ShuffleNet V1 (g=3) and V2 (1x)        distill.models._shufflenet

Each factory takes `input_shape` (C, H, W), `num_classes` (100 by default) and, for some, an option; the
model maps (B, C, H, W) to logits (B, num_classes). Module paths to tap, with output shapes for a 3x32x32
input (every model also has `pool`, the pooled feature the classifier reads, and the classifier `fc`):

    resnet8..110    layer1 (16, 32, 32)    layer2 (32, 16, 16)    layer3 (64, 8, 8)      pool (64)
    resnet8x4/32x4  layer1 (64, 32, 32)    layer2 (128, 16, 16)   layer3 (256, 8, 8)     pool (256)
    ResNet18/34     layer1 (64, 32, 32)    layer2 (128, 16, 16)   layer3 (256, 8, 8)     layer4 (512, 4, 4)
    ResNet50        layer1 (256, 32, 32)   layer2 (512, 16, 16)   layer3 (1024, 8, 8)    layer4 (2048, 4, 4)
    wrn_D_K         layer1 (16K, 32, 32)   layer2 (32K, 16, 16)   layer3 (64K, 8, 8)     bn, pool (64K)
    vgg8, vgg13     block0 (64, 32, 32)    block1 (128, 16, 16)   block2 (256, 8, 8)     block3, block4 (512, 4, 4)
    MobileNetV2     conv1 (16, 16, 16)     stage2 (12, 16, 16)    stage3 (16, 8, 8)      stage5 (48, 4, 4)
                    stage7 (160, 2, 2)     conv2 (1280, 2, 2)     pool (1280)            (and stage1, 4, 6)
    ShuffleV1       layer1 (240, 16, 16)   layer2 (480, 8, 8)     layer3 (960, 4, 4)     pool (960)
    ShuffleV2       layer1 (116, 16, 16)   layer2 (232, 8, 8)     layer3 (464, 4, 4)     conv2 (1024, 4, 4)

Block-level paths (e.g. `layer3.4.bn2`, a residual branch before the sum) are described in each family's
module docstring.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from distill.errors import ConfigError
from distill.models import MODELS
from distill.models._mobilenet import MobileNetV2
from distill.models._resnet import BasicBlock, Bottleneck, CifarResNet, ResNet
from distill.models._shufflenet import ShuffleNetV1, ShuffleNetV2
from distill.models._vgg import VGG
from distill.models._wrn import WideResNet

CIFAR = (3, 32, 32)
NARROW = (16, 16, 32, 64)  # stem and stage widths of resnet8 .. resnet110
WIDE = (32, 64, 128, 256)  # the "x4" models


def _channels(name: str, input_shape: Sequence[int]) -> int:
    """The input's channel count, after checking it is an image shape (C, H, W)."""
    if len(input_shape) != 3:
        raise ConfigError(f"model '{name}' needs image inputs (C, H, W), got per-sample shape {tuple(input_shape)}")
    return int(input_shape[0])


# --- CIFAR ResNets: depth 6n+2, three stages of n basic blocks -------------------------------------------


@MODELS.register("resnet8")
def resnet8(input_shape: Sequence[int] = CIFAR, num_classes: int = 100) -> nn.Module:
    """ResNet-8: one basic block per stage, widths 16/32/64."""
    return CifarResNet(8, NARROW, _channels("resnet8", input_shape), num_classes)


@MODELS.register("resnet14")
def resnet14(input_shape: Sequence[int] = CIFAR, num_classes: int = 100) -> nn.Module:
    """ResNet-14: two basic blocks per stage, widths 16/32/64."""
    return CifarResNet(14, NARROW, _channels("resnet14", input_shape), num_classes)


@MODELS.register("resnet20")
def resnet20(input_shape: Sequence[int] = CIFAR, num_classes: int = 100) -> nn.Module:
    """ResNet-20: three basic blocks per stage, widths 16/32/64."""
    return CifarResNet(20, NARROW, _channels("resnet20", input_shape), num_classes)


@MODELS.register("resnet32")
def resnet32(input_shape: Sequence[int] = CIFAR, num_classes: int = 100) -> nn.Module:
    """ResNet-32: five basic blocks per stage, widths 16/32/64."""
    return CifarResNet(32, NARROW, _channels("resnet32", input_shape), num_classes)


@MODELS.register("resnet44")
def resnet44(input_shape: Sequence[int] = CIFAR, num_classes: int = 100) -> nn.Module:
    """ResNet-44: seven basic blocks per stage, widths 16/32/64."""
    return CifarResNet(44, NARROW, _channels("resnet44", input_shape), num_classes)


@MODELS.register("resnet56")
def resnet56(input_shape: Sequence[int] = CIFAR, num_classes: int = 100) -> nn.Module:
    """ResNet-56: nine basic blocks per stage, widths 16/32/64."""
    return CifarResNet(56, NARROW, _channels("resnet56", input_shape), num_classes)


@MODELS.register("resnet110")
def resnet110(input_shape: Sequence[int] = CIFAR, num_classes: int = 100) -> nn.Module:
    """ResNet-110: eighteen basic blocks per stage, widths 16/32/64."""
    return CifarResNet(110, NARROW, _channels("resnet110", input_shape), num_classes)


@MODELS.register("resnet8x4")
def resnet8x4(input_shape: Sequence[int] = CIFAR, num_classes: int = 100) -> nn.Module:
    """ResNet-8x4: one basic block per stage, stem 32 and stage widths 64/128/256."""
    return CifarResNet(8, WIDE, _channels("resnet8x4", input_shape), num_classes)


@MODELS.register("resnet32x4")
def resnet32x4(input_shape: Sequence[int] = CIFAR, num_classes: int = 100) -> nn.Module:
    """ResNet-32x4: five basic blocks per stage, stem 32 and stage widths 64/128/256."""
    return CifarResNet(32, WIDE, _channels("resnet32x4", input_shape), num_classes)


# --- ImageNet-layout ResNets on 32x32 inputs -------------------------------------------------------------


@MODELS.register("ResNet18")
def resnet18(input_shape: Sequence[int] = CIFAR, num_classes: int = 100, zero_init_residual: bool = False) -> nn.Module:
    """ResNet-18: 2/2/2/2 basic blocks, widths 64/128/256/512, 3x3 stem and no max-pool."""
    return ResNet(BasicBlock, (2, 2, 2, 2), _channels("ResNet18", input_shape), num_classes, zero_init_residual)


@MODELS.register("ResNet34")
def resnet34(input_shape: Sequence[int] = CIFAR, num_classes: int = 100, zero_init_residual: bool = False) -> nn.Module:
    """ResNet-34: 3/4/6/3 basic blocks, widths 64/128/256/512, 3x3 stem and no max-pool."""
    return ResNet(BasicBlock, (3, 4, 6, 3), _channels("ResNet34", input_shape), num_classes, zero_init_residual)


@MODELS.register("ResNet50")
def resnet50(input_shape: Sequence[int] = CIFAR, num_classes: int = 100, zero_init_residual: bool = False) -> nn.Module:
    """ResNet-50: 3/4/6/3 bottleneck blocks, output widths 256/512/1024/2048, 3x3 stem and no max-pool."""
    return ResNet(Bottleneck, (3, 4, 6, 3), _channels("ResNet50", input_shape), num_classes, zero_init_residual)


# --- Wide ResNets: WRN-depth-width -----------------------------------------------------------------------


@MODELS.register("wrn_16_1")
def wrn_16_1(input_shape: Sequence[int] = CIFAR, num_classes: int = 100, dropout: float = 0.0) -> nn.Module:
    """WRN-16-1: two pre-activation blocks per stage, widths 16/32/64."""
    return WideResNet(16, 1, _channels("wrn_16_1", input_shape), num_classes, dropout)


@MODELS.register("wrn_16_2")
def wrn_16_2(input_shape: Sequence[int] = CIFAR, num_classes: int = 100, dropout: float = 0.0) -> nn.Module:
    """WRN-16-2: two pre-activation blocks per stage, widths 32/64/128."""
    return WideResNet(16, 2, _channels("wrn_16_2", input_shape), num_classes, dropout)


@MODELS.register("wrn_40_1")
def wrn_40_1(input_shape: Sequence[int] = CIFAR, num_classes: int = 100, dropout: float = 0.0) -> nn.Module:
    """WRN-40-1: six pre-activation blocks per stage, widths 16/32/64."""
    return WideResNet(40, 1, _channels("wrn_40_1", input_shape), num_classes, dropout)


@MODELS.register("wrn_40_2")
def wrn_40_2(input_shape: Sequence[int] = CIFAR, num_classes: int = 100, dropout: float = 0.0) -> nn.Module:
    """WRN-40-2: six pre-activation blocks per stage, widths 32/64/128."""
    return WideResNet(40, 2, _channels("wrn_40_2", input_shape), num_classes, dropout)


# --- VGG with BatchNorm, global-average-pooled ---------------------------------------------------------


@MODELS.register("vgg8")
def vgg8(input_shape: Sequence[int] = CIFAR, num_classes: int = 100) -> nn.Module:
    """VGG-8: one conv per block (RepDistiller's configuration "S")."""
    c = _channels("vgg8", input_shape)
    return VGG((1, 1, 1, 1, 1), c, num_classes, image_size=min(input_shape[1:]))


@MODELS.register("vgg13")
def vgg13(input_shape: Sequence[int] = CIFAR, num_classes: int = 100) -> nn.Module:
    """VGG-13: two convs per block (the paper's configuration B)."""
    c = _channels("vgg13", input_shape)
    return VGG((2, 2, 2, 2, 2), c, num_classes, image_size=min(input_shape[1:]))


# --- Mobile students -------------------------------------------------------------------------------------


@MODELS.register("MobileNetV2")
def mobilenet_v2(input_shape: Sequence[int] = CIFAR, num_classes: int = 100) -> nn.Module:
    """MobileNetV2 at width 0.5, expansion 6 (RepDistiller's and mdistiller's "mobile_half")."""
    return MobileNetV2(width=0.5, t=6, in_channels=_channels("MobileNetV2", input_shape), num_classes=num_classes)


@MODELS.register("ShuffleV1")
def shuffle_v1(input_shape: Sequence[int] = CIFAR, num_classes: int = 100) -> nn.Module:
    """ShuffleNet V1, 3 groups, stage widths 240/480/960."""
    return ShuffleNetV1(in_channels=_channels("ShuffleV1", input_shape), num_classes=num_classes)


@MODELS.register("ShuffleV2")
def shuffle_v2(input_shape: Sequence[int] = CIFAR, num_classes: int = 100) -> nn.Module:
    """ShuffleNet V2 1x, stage widths 116/232/464, 1024 before pooling."""
    return ShuffleNetV2(in_channels=_channels("ShuffleV2", input_shape), num_classes=num_classes)


ZOO = (
    "resnet8",
    "resnet14",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet8x4",
    "resnet32x4",
    "ResNet18",
    "ResNet34",
    "ResNet50",
    "wrn_16_1",
    "wrn_16_2",
    "wrn_40_1",
    "wrn_40_2",
    "vgg8",
    "vgg13",
    "MobileNetV2",
    "ShuffleV1",
    "ShuffleV2",
)
"""Every model name this module registers."""
