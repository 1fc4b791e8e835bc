"""A user's image files: a folder with one subfolder per class (or `train/`, `val/`, `test/` subfolders laid
out so), or a CSV / JSONL manifest of `path,label` rows. Only the file list is held; images are decoded as
batches need them (`ImageFiles`)."""

from __future__ import annotations

import csv
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import torch
from tqdm.auto import tqdm

from distill._io import existing
from distill.data._core import DATASETS, UNLABELLED, ArrayData
from distill.data._images import SUFFIXES, ImageFiles, ImageTransform, _pillow
from distill.errors import DistillError, first_line

PARTS = ("train", "val", "test")
SHOWN_FROM = 10_000  # images from which the check shows its progress
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageOptions:
    """The `data` keys of image files, and the teacher's pretrained preprocessing when it has one."""

    image_size: int | None = None  # None: the teacher's pretrained size, else the first training image's
    crop_fraction: float | None = None  # the centre crop's share of the resized shorter side; None: the teacher's, or 1
    channels: Literal[1, 3] = 3
    normalize: Literal["auto", "train", "none"] = "auto"  # auto: the teacher's pretrained statistics, else train's
    skip_bad: bool = False
    pretrained: dict[str, Any] | None = None  # {"mean", "std", "size", "crop_pct"}, each optional

    @property
    def standardize(self) -> bool:
        """Whether split() standardises with training statistics."""
        return self.normalize == "train" or (self.normalize == "auto" and self._pretrained("mean") is None)

    def transform(self, first: Path | IO[bytes]) -> ImageTransform:
        """The evaluation transform: sizes from the options, else the teacher's, else the `first` image's own
        (a file, or its bytes)."""
        size = self.image_size or self._pretrained("size")
        mean, std = (self._pretrained("mean"), self._pretrained("std")) if self.normalize == "auto" else (None, None)
        stats = {"mean": None if mean is None else tuple(mean), "std": None if std is None else tuple(std)}
        if size is None:
            with _pillow().open(first) as image:
                width, height = image.size
            log.info(
                "images sized %dx%d, as the first is (any of another size is resized to it); data.image_size "
                "sets a square side instead",
                height,
                width,
            )
            return ImageTransform((height, width), self.channels, **stats)
        crop = self.crop_fraction or self._pretrained("crop_pct") or 1.0
        return ImageTransform((size, size), self.channels, resize=round(size / crop), **stats)

    def _pretrained(self, key: str) -> Any:
        return (self.pretrained or {}).get(key)


@dataclass
class Listing:
    """Image files and their class names, part by part, with what was left out."""

    files: dict[str, list[Path]] = field(default_factory=dict)  # part -> files
    names: dict[str, list[str | None]] = field(default_factory=dict)  # part -> class name per file, None: unlabelled
    ignored: int = 0  # files whose suffix is not an image's
    skipped: list[Path] = field(default_factory=list)  # unreadable images left out (data.skip_bad)

    def add(self, part: str, file: Path, name: str | None) -> None:
        self.files.setdefault(part, []).append(file)
        self.names.setdefault(part, []).append(name)


@DATASETS.register("folder")
def load_folder(
    path: str,
    val_path: str | None = None,
    test_path: str | None = None,
    unlabelled_path: str | None = None,
    images: ImageOptions = ImageOptions(),
) -> ArrayData:
    """One subfolder per class, named by it (classes in sorted order), images found at any depth below; or
    `train/`, `val/` and `test/` subfolders each laid out so, taken as the parts. `val_path` and `test_path`
    are folders laid out like `path` for fixed parts; `unlabelled_path`, a folder of images without labels."""
    root = existing(path, "a folder with one subfolder per class, or train/, val/ and test/ subfolders")
    if not root.is_dir():
        raise DistillError(f"{root}: data.name folder needs a folder; for a CSV or JSONL of path,label use manifest")
    listing = Listing()
    split_layout = (root / "train").is_dir() and {p.name for p in _subfolders(root)} <= set(PARTS)
    given = {"train": root / "train" if split_layout else root}
    if split_layout:
        given |= {part: root / part for part in PARTS[1:] if (root / part).is_dir()}
    for part, other in (("val", val_path), ("test", test_path)):
        if other is not None:
            given[part] = existing(other, "a folder with one subfolder per class")
    for part, folder in given.items():
        for class_folder in _subfolders(folder):
            files = _images(class_folder, listing)
            if not files and part == "train":
                raise DistillError(
                    f"{class_folder}: class folder holds no images ({', '.join(SUFFIXES)}); fill or remove it"
                )
            for file in files:
                listing.add(part, file, class_folder.name)
    if unlabelled_path is not None:
        for file in _images(existing(unlabelled_path, "a folder of images"), listing):
            listing.add("unlabelled", file, None)
    return _data(root, listing, images, f"folder:{root.resolve()}")


@DATASETS.register("manifest")
def load_manifest(
    path: str,
    label_column: str = "label",
    val_path: str | None = None,
    test_path: str | None = None,
    unlabelled_path: str | None = None,
    images: ImageOptions = ImageOptions(),
) -> ArrayData:
    """A CSV (with a header) or JSONL file of rows with `path` (relative to the manifest) and `label_column`
    (a class name; empty for an unlabelled row); classes in sorted order. `val_path` and `test_path` are
    manifests for fixed parts; `unlabelled_path`, a manifest whose labels are not read."""
    listing = Listing()
    for part, given in (("train", path), ("val", val_path), ("test", test_path), ("unlabelled", unlabelled_path)):
        if given is not None:
            _read_manifest(existing(given, "a CSV or JSONL manifest of path,label rows"), part, label_column, listing)
    root = existing(path, "a manifest").parent
    return _data(root, listing, images, f"manifest:{Path(path).resolve()}")


def _read_manifest(file: Path, part: str, label_column: str, listing: Listing) -> None:
    rows = _manifest_rows(file)
    if not rows:
        raise DistillError(f"{file}: the manifest has no rows; add path,{label_column} rows")
    needed = ("path",) if part == "unlabelled" else ("path", label_column)
    for column in needed:
        if column not in rows[0]:
            raise DistillError(
                f"{file}: no '{column}' column (it has {', '.join(rows[0])}); add it or set data.label_column"
            )
    for line, row in enumerate(rows, start=2):
        image = file.parent / str(row["path"])
        if not image.is_file():
            raise DistillError(
                f"{file}:{line}: {row['path']} does not exist (paths are relative to the manifest); fix the row"
            )
        label = None if part == "unlabelled" else str(row.get(label_column) or "") or None
        if label is None and part in ("val", "test"):
            raise DistillError(f"{file}:{line}: a {part} row needs a label; fill it or move the row to training")
        listing.add(part, image, label)


def _manifest_rows(file: Path) -> list[dict[str, Any]]:
    try:
        text = file.read_text()
        if file.suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return list(csv.DictReader(text.splitlines()))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DistillError(
            f"{file}: cannot read it as a manifest ({first_line(e, typed=True)}); write CSV or JSONL"
        ) from e


def _subfolders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _images(folder: Path, listing: Listing) -> list[Path]:
    """The image files at any depth below `folder`, sorted; other files counted in `listing.ignored`."""
    found = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images = [p for p in found if p.suffix.lower() in SUFFIXES]
    listing.ignored += len(found) - len(images)
    return images


def _data(root: Path, listing: Listing, images: ImageOptions, source: str) -> ArrayData:
    """The ArrayData of a listing: unreadable files refused (or skipped), classes named, parts stacked."""
    _check_readable(listing, images.skip_bad)
    classes = sorted({name for name in listing.names.get("train", []) if name is not None})
    if len(classes) < 2:
        raise DistillError(
            f"{root}: found {len(classes)} class ({', '.join(classes) or 'none'}); distilling needs two or more"
        )
    for part in ("val", "test"):
        extra = sorted({name for name in listing.names.get(part, [])} - set(classes))
        if extra:
            raise DistillError(
                f"{root}: {part} has classes that training lacks: {', '.join(extra)}; add them to train or remove them"
            )
    order = [part for part in (*PARTS, "unlabelled") if listing.files.get(part)]
    files = [file for part in order for file in listing.files[part]]
    index = {name: i for i, name in enumerate(classes)}
    labels = torch.tensor([UNLABELLED if n is None else index[n] for part in order for n in listing.names[part]])
    starts = dict(
        zip(order, torch.tensor([0] + [len(listing.files[p]) for p in order]).cumsum(0).tolist(), strict=False)
    )

    def rows(part: str) -> torch.Tensor | None:
        return torch.arange(starts[part], starts[part] + len(listing.files[part])) if part in starts else None

    base = Path(os.path.commonpath([file.absolute().parent for file in files]))  # holds every part's files
    inputs = ImageFiles.scanned(base, [str(f.absolute().relative_to(base)) for f in files], images.transform(files[0]))
    left = [f"{len(listing.skipped)} unreadable skipped"] if listing.skipped else []
    left += [f"{listing.ignored} non-image files ignored"] if listing.ignored else []
    counts = ", ".join(
        [f"{len(files)} images", f"{len(classes)} classes", *left, f"files sha256 {inputs.fingerprint[:12]}"]
    )
    return ArrayData(
        inputs=inputs,
        labels=labels.long(),
        classes=classes,
        description=f"{source} ({counts})",
        standardize=images.standardize,
        preprocessing=inputs.transform.describe(),
        val_indices=rows("val"),
        test_indices=rows("test"),
    )


def _check_readable(listing: Listing, skip_bad: bool) -> None:
    """Every listed image opens and is whole (its header read, its end marker present): a bad one is refused,
    naming it, or with `skip_bad` left out and counted. Checked in threads: most of the time is the disk's."""
    every = [file for files in listing.files.values() for file in files]
    with ThreadPoolExecutor(max_workers=16) as pool:
        shown = None if len(every) >= SHOWN_FROM else True  # None: a bar on a terminal
        checked = tqdm(pool.map(_problem, every), total=len(every), desc="checking images", unit="image", disable=shown)
        problems = dict(zip(every, checked, strict=True))
    bad = [file for file in every if problems[file] is not None]
    if bad and not skip_bad:
        raise DistillError(
            f"{bad[0]}: not a readable image ({problems[bad[0]]}); replace or remove it, or set data.skip_bad: true"
            + (f" ({len(bad)} such files)" if len(bad) > 1 else "")
        )
    listing.skipped = bad
    for part, files in listing.files.items():
        keep = [i for i, file in enumerate(files) if problems[file] is None]
        listing.files[part] = [files[i] for i in keep]
        listing.names[part] = [listing.names[part][i] for i in keep]


def _problem(file: Path) -> str | None:
    """What is wrong with an image file, or None: it must open, and a PNG or JPEG must end as one ends (a
    truncated download does not)."""
    try:
        with _pillow().open(file) as image:
            kind = image.format
        with file.open("rb") as f:
            f.seek(max(0, file.stat().st_size - 1024))
            tail = f.read()
    except (OSError, SyntaxError, ValueError) as e:
        return first_line(e)
    if (kind == "PNG" and b"IEND" not in tail) or (kind == "JPEG" and b"\xff\xd9" not in tail):
        return f"a truncated {kind} file"
    return None
