"""Images read from their files as they are needed: the evaluation transform every image goes through (what
`distill predict` and an exported model's user apply too), and `ImageFiles`, the samples of a data set that
keeps only its file list in memory."""

from __future__ import annotations

import functools
import hashlib
import json
import os
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from distill.errors import DistillError, first_line

if TYPE_CHECKING:
    from PIL import Image as PILImage

    from distill.data._augment import Augment

SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
STATS_IMAGES = 1000  # training images the per-channel statistics are read from (a seeded choice)
_MODES = {1: "L", 3: "RGB"}


@functools.cache
def _pillow() -> Any:
    try:
        from PIL import Image, ImageFile
    except ImportError:
        raise DistillError("reading image files needs Pillow: pip install 'distill[images]'") from None
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, never grey pixels
    return Image


@dataclass(frozen=True)
class ImageTransform:
    """One image file to a (C, H, W) float32 tensor: decode (a GIF's first frame), convert to `channels`
    (1: grey, 3: RGB; RGBA and palettes lose their alpha over black), resize the shorter side to `resize` and
    crop the centre `size` (or, without `resize`, resize to `size` itself when the image differs), scale
    to [0, 1], then standardise each channel as (x - mean) / std when `mean` is given."""

    size: tuple[int, int]  # (H, W)
    channels: int = 3
    resize: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> ImageTransform:
        tuples = {key: tuple(value) for key, value in saved.items() if isinstance(value, list)}
        return cls(**{**saved, **tuples})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        height, width = self.size
        fit = (
            f"shorter side resized to {self.resize}, centre {height}x{width} cropped"
            if self.resize
            else (f"resized to {height}x{width}")
        )
        scaled = f"{_MODES[self.channels]} pixels of 0..255 divided by 255"
        standardised = "; each channel then (x - mean) / std" if self.mean is not None else ""
        return f"images decoded, {fit}, {scaled}{standardised}"

    def __call__(self, image: PILImage.Image) -> Tensor:
        """A decoded image (any mode) as the model takes it."""
        return self.standardise(self.pixels(self.fit(self.convert(image))))

    def open(self, file: str | Path) -> PILImage.Image:
        """The decoded image file in this transform's mode; a DistillError naming the file when it cannot be."""
        try:
            with _pillow().open(file) as image:  # an animation opens at its first frame
                return self.convert(image)
        except (OSError, SyntaxError, ValueError) as e:
            raise DistillError(
                f"{file}: cannot decode it as an image ({first_line(e)}); replace or remove it"
            ) from None

    def convert(self, image: PILImage.Image) -> PILImage.Image:
        """`image` in this transform's mode: grey, or RGB with any transparency over black."""
        if image.mode in ("RGBA", "LA", "P", "PA") and self.channels == 3:
            return _over_black(image.convert("RGBA"))
        return image.convert(_MODES[self.channels])

    def fit(self, image: PILImage.Image) -> PILImage.Image:
        """Resized and centre-cropped to `size`."""
        height, width = self.size
        if self.resize is None:
            return image if image.size == (width, height) else image.resize((width, height), _bilinear())
        scale = self.resize / min(image.size)
        scaled = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
        image = image.resize(scaled, _bilinear()) if scaled != image.size else image
        left, top = (image.width - width) // 2, (image.height - height) // 2
        return image.crop((left, top, left + width, top + height))

    def pixels(self, image: PILImage.Image) -> Tensor:
        """(C, H, W) float32 in [0, 1]."""
        array = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy())  # (H, W) or (H, W, C)
        array = array.unsqueeze(0) if array.ndim == 2 else array.permute(2, 0, 1)
        return array.float() / 255

    def standardise(self, pixels: Tensor) -> Tensor:
        if self.mean is None or self.std is None:
            return pixels
        mean, std = torch.tensor(self.mean).view(-1, 1, 1), torch.tensor(self.std).view(-1, 1, 1)
        return (pixels - mean) / std


def _bilinear() -> int:
    return _pillow().Resampling.BILINEAR


def _over_black(image: PILImage.Image) -> PILImage.Image:
    background = _pillow().new("RGB", image.size)
    background.paste(image, mask=image.getchannel("A"))
    return background


class Pictures(ABC):
    """Images decoded as they are needed, indexed like a tensor of them: an int gives one transformed image,
    a tensor of rows or a slice gives the pictures of those rows. A subclass says how picture `i` is decoded
    (`picture`) and how a choice of rows is kept (`subset`); `fingerprint` identifies the pictures and their
    order for the teacher cache."""

    fingerprint: str
    transform: ImageTransform

    @abstractmethod
    def picture(self, i: int) -> PILImage.Image:
        """Picture `i` decoded, in the transform's mode, at its own size."""

    @abstractmethod
    def subset(self, rows: np.ndarray | slice) -> Pictures:
        """The pictures of `rows`, in that order."""

    @abstractmethod
    def with_transform(self, transform: ImageTransform) -> Pictures:
        """The same pictures under another transform."""

    @abstractmethod
    def __len__(self) -> int: ...

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), self.transform.channels, *self.transform.size)

    def sha256(self) -> str:
        """Identifies these inputs as read: the pictures, their order and the transform."""
        identity = f"{self.fingerprint}\n{len(self)}\n{json.dumps(self.transform.to_dict())}"
        return hashlib.sha256(identity.encode()).hexdigest()

    def __getitem__(self, rows: int | slice | Tensor) -> Tensor | Pictures:
        if isinstance(rows, int | np.integer) or (isinstance(rows, Tensor) and rows.ndim == 0):
            transform = self.transform
            return transform.standardise(transform.pixels(transform.fit(self.picture(int(rows)))))
        return self.subset(rows.numpy() if isinstance(rows, Tensor) else rows)

    def augmented(self, i: int, augment: Augment, key: int) -> Tensor:
        """Training's view `key` of picture `i`: a whole-picture augmentation (`augment.whole`) draws from the
        decoded picture at its own size, before the resize; another one works on the evaluation view."""
        if not augment.whole:
            return augment(self[i], key)
        return self.transform.standardise(augment(self.transform.pixels(self.picture(i)), key))

    def stacked(self) -> Tensor:
        """Every picture as one tensor: for the few a check needs, never a whole data set."""
        return torch.stack([self[i] for i in range(len(self))])

    def standardised(self, train: Tensor, seed: int = 0) -> tuple[Pictures, dict[str, list[float]]]:
        """These pictures standardised per channel with the mean and spread of up to STATS_IMAGES training
        pictures (a seeded choice), and those statistics."""
        chosen = train[torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:STATS_IMAGES]]
        plain = self.with_transform(replace(self.transform, mean=None, std=None))
        pixels = torch.stack([plain[int(row)] for row in chosen]).transpose(0, 1).flatten(1)  # (C, n)
        mean, std = pixels.mean(dim=1), pixels.std(dim=1, correction=0).clamp_min(1e-6)
        stats = {"mean": mean.tolist(), "std": std.tolist()}
        return self.with_transform(replace(self.transform, mean=tuple(stats["mean"]), std=tuple(stats["std"]))), stats


class ImageFiles(Pictures):
    """The pictures of a data set of image files, holding only the file list. The fingerprint covers the
    files' paths, sizes and modification times."""

    def __init__(self, root: Path, files: np.ndarray, transform: ImageTransform, fingerprint: str):
        self.root, self.files, self.transform, self.fingerprint = root, files, transform, fingerprint

    @classmethod
    def scanned(cls, root: Path, files: list[str], transform: ImageTransform) -> ImageFiles:
        """`files` relative to `root`, fingerprinted by their names, sizes and modification times."""
        digest = hashlib.sha256()
        for name in files:
            stat = (root / name).stat()
            digest.update(f"{name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        # fixed-width bytes, not Python strings: DataLoader workers read them without touching refcounts
        return cls(root, np.array([name.encode() for name in files]), transform, digest.hexdigest())

    def __len__(self) -> int:
        return len(self.files)

    def file(self, i: int) -> Path:
        return self.root / self.files[i].decode()

    def picture(self, i: int) -> PILImage.Image:
        return self.transform.open(self.file(i))

    def subset(self, rows: np.ndarray | slice) -> ImageFiles:
        return ImageFiles(self.root, self.files[rows], self.transform, self.fingerprint)

    def with_transform(self, transform: ImageTransform) -> ImageFiles:
        return ImageFiles(self.root, self.files, transform, self.fingerprint)


def workers() -> int:
    """DataLoader workers for data read from files: one per core but the training process's, at most 8."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))
