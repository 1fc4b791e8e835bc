"""Training-time augmentations, applied per sample in the train IndexedDataset; names are what `data.augment` takes.

A draw is a function of (seed, view, sample index) alone, never of a global random state: the same view of a
sample is the same pixels in every process of a data-parallel run, after a resume, and in a teacher cache
that recorded the teacher's outputs on it (`cache.views`).
"""

from __future__ import annotations

from typing import Protocol

import torch.nn.functional as F
from torch import Tensor

from distill.errors import DistillError
from distill.registry import did_you_mean

_MASK = 2**64 - 1


def view_key(seed: int, view: int, index: int) -> int:
    """A 64-bit draw for view `view` of sample `index` under `seed` (splitmix64 of the three, chained)."""
    key = 0
    for part in (seed, view, index):
        key = ((key ^ part) + 0x9E3779B97F4A7C15) & _MASK
        key = ((key ^ (key >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
        key = ((key ^ (key >> 27)) * 0x94D049BB133111EB) & _MASK
        key ^= key >> 31
    return key


class Augment(Protocol):
    name: str

    def params(self) -> dict[str, int]: ...

    def __call__(self, image: Tensor, key: int) -> Tensor: ...


class CropFlip:
    """The standard CIFAR training augmentation (He et al., 2016): zero-pad by `pad`, crop back to the original
    size at an offset drawn from `key`, flip left-right for half the keys.

    The padding is 0 in the input's own units, which for normalised images is the mean colour (torchvision pads
    before normalising, with black)."""

    name = "crop_flip"

    def __init__(self, pad: int = 4):
        self.pad = pad

    def params(self) -> dict[str, int]:
        return {"pad": self.pad}

    def __call__(self, image: Tensor, key: int) -> Tensor:
        _, height, width = image.shape  # (C, H, W)
        pad, offsets = self.pad, 2 * self.pad + 1
        draw = key % (2 * offsets * offsets)  # split into (flip, top, left)
        flip, draw = draw % 2, draw // 2
        top, left = divmod(draw, offsets)
        padded = F.pad(image, (pad, pad, pad, pad))  # (C, H + 2 pad, W + 2 pad)
        crop = padded[:, top : top + height, left : left + width]
        return crop.flip(-1) if flip else crop


AUGMENTS: dict[str, type[Augment] | None] = {"none": None, "crop_flip": CropFlip}


def augmentation(name: str, input_shape: tuple[int, ...], where: str) -> Augment | None:
    """The per-sample transform called `name`, checked against the data's sample shape; None for 'none'."""
    if name not in AUGMENTS:
        known = ", ".join(AUGMENTS)
        raise DistillError(f"data.augment must be one of {known}, got '{name}'{did_you_mean(name, list(AUGMENTS))}")
    if name != "none" and len(input_shape) != 3:
        raise DistillError(
            f"data.augment={name} needs images shaped (C, H, W), but {where} has samples shaped {input_shape}; "
            "set data.augment to none"
        )
    make = AUGMENTS[name]
    return None if make is None else make()
