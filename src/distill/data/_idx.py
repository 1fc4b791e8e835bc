"""MNIST-format IDX files (images idx3 + labels idx1, optionally gzipped) from a local path."""

from __future__ import annotations

import gzip
import math
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from distill._io import existing
from distill.data._core import DATASETS, UNLABELLED, ArrayData, stack
from distill.errors import DistillError, first_line

IMAGES_MAGIC = 0x00000803  # uint8, 3 dims (N, H, W)
LABELS_MAGIC = 0x00000801  # uint8, 1 dim (N,)
SIGNED_LABELS_MAGIC = 0x00000901  # int8, 1 dim (N,): -1 marks an image without a label


@DATASETS.register("idx")
def load_idx(
    path: str, unlabelled_path: str | None = None, val_path: str | None = None, test_path: str | None = None
) -> ArrayData:
    """`path` is a folder with one images and one labels file, or the images file itself. Labels stored as
    signed bytes may be -1: an image without a label (a transfer-set row); `unlabelled_path`, an images file
    alone, adds more of those. `val_path` and `test_path`, pairs like `path`, make the fixed validation and
    test parts."""
    parts, described = {}, []
    for part, given in (("train", path), ("val", val_path), ("test", test_path)):
        if given is not None:
            images_file, labels_file = _find_pair(existing(given, "a folder of IDX files or an *images* IDX file"))
            parts[part] = _labelled_images(images_file, labels_file, unlabelled_allowed=part == "train")
            name = "" if part == "train" else f"{part} "
            described.append(f"{name}{images_file.resolve()} + {labels_file.resolve()} ({len(parts[part][1])} samples)")
    if unlabelled_path is not None:
        extra_file = existing(unlabelled_path, "an *images* IDX file")
        extra = torch.from_numpy(_read_idx(extra_file, (IMAGES_MAGIC,)))
        parts["unlabelled"] = (extra, torch.full((len(extra),), -1))
        described.append(f"unlabelled {extra_file.resolve()} ({len(extra)} samples)")
    shapes = {part: tuple(images.shape[1:]) for part, (images, _) in parts.items()}
    if len(set(shapes.values())) > 1:
        raise DistillError(f"the IDX files' images differ in size: {shapes}; every part needs the same size")
    images, labels, val_rows, test_rows = stack(parts)
    return ArrayData(
        inputs=images.unsqueeze(1).float() / 255,  # (N, 1, H, W) in [0, 1]
        labels=torch.where(labels >= 0, labels, UNLABELLED),
        classes=[str(i) for i in range(int(labels.max()) + 1)],
        description="idx:" + " + ".join(described),
        preprocessing="grey pixels of 0..255, divided by 255, shaped (1, H, W)",
        val_indices=val_rows,
        test_indices=test_rows,
    )


def _labelled_images(images_file: Path, labels_file: Path, *, unlabelled_allowed: bool) -> tuple[Tensor, Tensor]:
    """(images (N, H, W) uint8, labels (N,) int64, -1 for none) of one images and labels pair."""
    images = _read_idx(images_file, (IMAGES_MAGIC,))
    labels = _read_idx(labels_file, (LABELS_MAGIC, SIGNED_LABELS_MAGIC)).astype(np.int64)
    if len(images) != len(labels):
        counts = f"{len(images)} images but {labels_file} has {len(labels)} labels"
        raise DistillError(f"{images_file} has {counts}; use a matching pair")
    lowest = -1 if unlabelled_allowed else 0
    if (labels < lowest).any() or not (labels >= 0).any():
        allowed = "(or -1 for no label)" if unlabelled_allowed else "(every validation and test image needs one)"
        raise DistillError(f"{labels_file}: labels must be classes 0..C-1 {allowed}, with some labelled")
    return torch.from_numpy(images), torch.from_numpy(labels)


def _find_pair(path: Path) -> tuple[Path, Path]:
    """(images, labels): the one file of each kind in a folder, or the labels file named like the images file."""
    if path.is_dir():
        return _only(path, "images"), _only(path, "labels")
    if "images" not in path.name:
        raise DistillError(f"{path}: needs 'images' in its name to find its labels file; rename it or pass the folder")
    labels = path.with_name(path.name.replace("images", "labels").replace("idx3", "idx1"))
    if not labels.is_file():
        raise DistillError(f"{path}: its labels file {labels} does not exist; put it beside the images file")
    return path, labels


def _only(folder: Path, kind: str) -> Path:
    found = sorted(p for p in folder.iterdir() if kind in p.name and p.is_file() and not p.name.startswith("."))
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise DistillError(f"{folder}: expected one IDX file with '{kind}' in its name, found {names}; keep one pair")
    return found[0]


def _read_idx(file: Path, magics: tuple[int, ...]) -> np.ndarray:
    """Parse the big-endian header (magic, then one uint32 per dim) and the byte payload that must fill it exactly."""
    raw = _read_bytes(file)
    kind = "images (idx3)" if magics[0] == IMAGES_MAGIC else "labels (idx1)"
    magic = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    header = 4 + 4 * (magic & 0xFF) if magic in magics else 0
    if magic not in magics or len(raw) < header:
        expected = " or ".join(f"0x{m:08x}" for m in magics)
        raise DistillError(f"{file}: not an IDX {kind} file (expected magic {expected}); check the path")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    payload = len(raw) - header
    if payload != math.prod(dims):
        sizes = f"header says {dims} = {math.prod(dims)} bytes, the file holds {payload}"
        raise DistillError(f"{file}: {sizes}; it is truncated or corrupt, download it again")
    dtype = np.int8 if magic == SIGNED_LABELS_MAGIC else np.uint8
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).copy()  # a copy, as torch wants it writable


def _read_bytes(file: Path) -> bytes:
    try:
        if file.suffix == ".gz":
            with gzip.open(file, "rb") as f:
                return f.read()
        return file.read_bytes()
    except (OSError, EOFError, zlib.error) as e:
        raise DistillError(
            f"{file}: cannot read it ({first_line(e, typed=True)}); check it is a whole IDX or IDX.gz file"
        ) from e
