"""Training-time augmentations, applied per sample in the train IndexedDataset; names are what `data.augment` takes.

A draw is a function of (seed, view, sample index) alone, never of a global random state: the same view of a
sample is the same pixels in every process of a data-parallel run, after a resume, and in a teacher cache
that recorded the teacher's outputs on it (`cache.views`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import torch
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
    whole: bool  # draws from the whole decoded picture, before an image file's resize; else from the sample

    def params(self) -> dict[str, int]: ...

    def __call__(self, image: Tensor, key: int) -> Tensor: ...


class CropFlip:
    """The standard CIFAR training augmentation (He et al., 2016): zero-pad by `pad`, crop back to the original
    size at an offset drawn from `key`, flip left-right for half the keys.

    The padding is 0 in the input's own units, which for normalised images is the mean colour (torchvision pads
    before normalising, with black)."""

    name = "crop_flip"
    whole = False

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


class ResizedCropFlip:
    """The standard ImageNet training augmentation (Szegedy et al., 2015): a crop of 8% to 100% of the picture's
    area at an aspect ratio of 3/4 to 4/3, resized to the sample's size, and a left-right flip for half the
    keys; with `rand_augment`, then RandAugment (Cubuk et al., 2020) of `ops` operations at `magnitude`. Drawn by
    kornia from a generator seeded with `key`. Takes pixels in [0, 1], before standardisation."""

    whole = True

    def __init__(self, size: tuple[int, int], rand_augment: bool = False, ops: int = 2, magnitude: int = 9):
        self.size, self.rand_augment, self.ops, self.magnitude = size, rand_augment, ops, magnitude
        self.name = "randaugment" if rand_augment else "standard"
        self.steps: Any = None  # built at the first call: kornia is imported only when used

    def params(self) -> dict[str, int]:
        return {"ops": self.ops, "magnitude": self.magnitude} if self.rand_augment else {}

    def __call__(self, image: Tensor, key: int) -> Tensor:
        if self.steps is None:
            self.steps = _kornia_steps(self)
        with torch.random.fork_rng(devices=[]):  # the draw is the key's alone; the caller's stream is untouched
            torch.manual_seed(key & (2**63 - 1))
            return self.steps(image.unsqueeze(0)).squeeze(0)


def _kornia_steps(augment: ResizedCropFlip) -> Any:
    try:
        import kornia.augmentation as K
        from kornia.augmentation.auto import RandAugment
    except ImportError:
        raise DistillError(f"data.augment={augment.name} needs kornia: pip install 'distill[images]'") from None
    steps = [K.RandomResizedCrop(augment.size, scale=(0.08, 1.0), p=1.0), K.RandomHorizontalFlip(p=0.5)]
    if augment.rand_augment:
        steps.append(RandAugment(n=augment.ops, m=augment.magnitude))
    return K.AugmentationSequential(*steps)


AUGMENTS: dict[str, Callable[[tuple[int, int]], Augment] | None] = {  # each made for the samples' (H, W)
    "none": None,
    "crop_flip": lambda size: CropFlip(),
    "standard": ResizedCropFlip,
    "randaugment": lambda size: ResizedCropFlip(size, rand_augment=True),
}


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
    return None if make is None else make(tuple(input_shape[1:]))
