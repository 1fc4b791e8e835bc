"""Training-time augmentations, applied per sample in the train IndexedDataset; names are what `data.augment` takes."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.errors import DistillError
from distill.registry import did_you_mean


def crop_flip(image: Tensor, pad: int = 4) -> Tensor:
    """The standard CIFAR training augmentation (He et al., 2016): zero-pad by `pad`, crop back to the original size
    at a random offset, flip left-right with p=0.5.

    The padding is 0 in the input's own units, which for normalised images is the mean colour (torchvision pads
    before normalising, with black). One draw from torch's global RNG per call, so `torch.manual_seed` and
    DataLoader's per-worker seeding make it reproducible.
    """
    _, height, width = image.shape  # (C, H, W)
    offsets = 2 * pad + 1
    draw = int(torch.randint(0, 2 * offsets * offsets, ()))  # one draw, split into (flip, top, left)
    flip, draw = draw % 2, draw // 2
    top, left = divmod(draw, offsets)
    padded = F.pad(image, (pad, pad, pad, pad))  # (C, H + 2 pad, W + 2 pad)
    crop = padded[:, top : top + height, left : left + width]
    return crop.flip(-1) if flip else crop


AUGMENTS: dict[str, Callable[[Tensor], Tensor] | None] = {"none": None, "crop_flip": crop_flip}


def augmentation(name: str, input_shape: tuple[int, ...], where: str) -> Callable[[Tensor], Tensor] | None:
    """The per-sample transform called `name`, checked against the data's sample shape; None for 'none'."""
    if name not in AUGMENTS:
        known = ", ".join(AUGMENTS)
        raise DistillError(f"data.augment must be one of {known}, got '{name}'{did_you_mean(name, list(AUGMENTS))}")
    if name != "none" and len(input_shape) != 3:
        raise DistillError(
            f"data.augment={name} needs images shaped (C, H, W), but {where} has samples shaped {input_shape}; "
            "set data.augment to none"
        )
    return AUGMENTS[name]
