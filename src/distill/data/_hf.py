"""A classifier's data from a Hugging Face dataset (the `datasets` package): a folder `save_to_disk` wrote, data
files (Parquet, Arrow, CSV, JSON), or a hub dataset the local cache holds. Images stay in the memory-mapped Arrow
table and are decoded as batches need them (`HFImages`); numeric columns become a tensor in memory. A
DatasetDict's own train/validation/test splits make the fixed parts."""

from __future__ import annotations

import io
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from distill.data._core import DATASETS, UNLABELLED, ArrayData
from distill.data._folder import ImageOptions
from distill.data._hf_source import dataset_splits, datasets_package, joined, open_dataset, split_names
from distill.data._images import ImageTransform, Pictures, _pillow
from distill.errors import DistillError, first_line
from distill.registry import did_you_mean

if TYPE_CHECKING:
    from PIL import Image as PILImage

IMAGE_VALUES = ("string", "large_string", "binary", "large_binary")  # a named input column of image paths or bytes
DEFAULT_IMAGES = ImageOptions()  # every image key at its default


@DATASETS.register("hf")
def load_hf(
    path: str,
    input_column: str | None = None,
    label_column: str = "label",
    images: ImageOptions = DEFAULT_IMAGES,
) -> ArrayData:
    """`path` is a folder `Dataset.save_to_disk` or `DatasetDict.save_to_disk` wrote, a data file or a folder of
    them (Parquet, Arrow, CSV, JSON), or a hub dataset's name (read from the local cache when offline).

    `input_column` defaults to the one Image column; without one, every numeric column but the label is a
    feature (standardised later by split()). Classes are a ClassLabel's names, "0".."max" of integers, or the
    sorted names of strings; a missing label (None, "", a ClassLabel's -1) leaves a training row unlabelled. A
    DatasetDict's train, validation (val, valid, dev) and test splits make the parts, in that order."""
    hf = datasets_package()
    loaded, source, root = open_dataset(hf, path)
    splits = dataset_splits(hf, loaded, source)  # {part: (split name or None, Dataset)}
    if input_column == label_column:
        raise DistillError(f"data.input_column and data.label_column are both '{label_column}'; name two columns")
    features = splits["train"][1].features
    column = input_column or _image_column(hf, features, label_column, source)
    columns = [column] if column is not None else _numeric_columns(hf, features, label_column, source)
    _check_columns(splits, columns, label_column, source)
    dataset = joined(hf, [split.select_columns([*columns, label_column]) for _, split in splits.values()], source)
    labels, classes = _labels(hf, dataset, label_column, source)
    starts = dict(zip(splits, np.cumsum([0] + [len(split) for _, split in splits.values()]).tolist(), strict=False))
    fixed = _fixed_parts(splits, starts, labels, label_column, source)
    if column is not None and _is_image(hf, dataset.features[column], named=column == input_column):
        origin = _Origin(source, root, tuple((name, starts[part]) for part, (name, _) in splits.items()))
        inputs: Tensor | HFImages = HFImages.read(hf, dataset, column, images, origin)
        standardize, preprocessing = images.standardize, inputs.transform.describe()
    else:
        if replace(images, pretrained=None) != DEFAULT_IMAGES:
            raise DistillError(
                f"{source}: the inputs are the numeric columns {', '.join(columns)}, and data.image_size, "
                "crop_fraction, channels, normalize and skip_bad apply to images; remove them"
            )
        inputs, standardize = _features(hf, dataset, columns, source), True
        preprocessing = f"the column{'s' * (len(columns) > 1)} {', '.join(columns)} as float32"
    named = split_names(hf, loaded, splits)
    return ArrayData(
        inputs=inputs,
        labels=labels,
        classes=classes,
        description=f"{source} ({len(labels)} rows, {len(classes)} classes{named}, "
        f"fingerprint {dataset._fingerprint[:12]})",
        standardize=standardize,
        preprocessing=preprocessing,
        val_indices=fixed.get("val"),
        test_indices=fixed.get("test"),
    )


def _check_columns(splits: dict[str, tuple[str | None, Any]], columns: list[str], label_column: str, source: str):
    """Every split has the input and label columns."""
    for name, split in splits.values():
        for wanted, key in [(label_column, "label_column"), *((c, "input_column") for c in columns)]:
            if wanted not in split.column_names:
                has, close = ", ".join(split.column_names), did_you_mean(wanted, split.column_names)
                raise DistillError(f"{_at(source, name)}: no column '{wanted}'{close} (it has {has}); set data.{key}")


def _fixed_parts(
    splits: dict[str, tuple[str | None, Any]], starts: dict[str, int], labels: Tensor, label_column: str, source: str
) -> dict[str, Tensor]:
    """{"val": rows, "test": rows} of the splits that are there, each row labelled."""
    fixed = {part: torch.arange(start, start + len(splits[part][1])) for part, start in starts.items()}
    for part, rows in fixed.items():
        missing = (labels[rows] == UNLABELLED).nonzero()
        if part != "train" and len(missing):
            raise DistillError(
                f"{_at(source, splits[part][0])}: row {missing[0].item()} has no '{label_column}'; validation and "
                "test rows need labels: label them, or save the dataset without that split"
            )
    return {part: rows for part, rows in fixed.items() if part != "train"}


def _at(source: str, split: str | None) -> str:
    return f"{source} split '{split}'" if split else source


def _image_column(hf: Any, features: Any, label_column: str, source: str) -> str | None:
    """The one Image column; None when there is none (numeric features then)."""
    found = [name for name, feature in features.items() if isinstance(feature, hf.Image) and name != label_column]
    if len(found) > 1:
        raise DistillError(f"{source}: several Image columns ({', '.join(found)}); set data.input_column to one")
    return found[0] if found else None


def _numeric_columns(hf: Any, features: Any, label_column: str, source: str) -> list[str]:
    found = [name for name, feature in features.items() if name != label_column and _kind(hf, feature)]
    if not found:
        raise DistillError(
            f"{source}: no Image column and no numeric column besides '{label_column}' (it has "
            f"{', '.join(features)}); set data.input_column"
        )
    return found


def _kind(hf: Any, feature: Any) -> str | None:
    """'bool', 'int' or 'float' for a numeric scalar feature, else None."""
    dtype = feature.dtype if isinstance(feature, hf.Value) else ""
    return next((kind for kind in ("bool", "int", "float") if dtype.startswith((kind, f"u{kind}"))), None)


def _is_image(hf: Any, feature: Any, named: bool) -> bool:
    """Whether an input column holds images: an Image feature, or (named by data.input_column) paths or bytes."""
    return isinstance(feature, hf.Image) or (named and getattr(feature, "dtype", None) in IMAGE_VALUES)


def _labels(hf: Any, dataset: Any, column: str, source: str) -> tuple[Tensor, list[str]]:
    """(labels, classes): a ClassLabel's names, "0".."max" of integers, or the sorted names of strings; a missing
    label (None, "", a ClassLabel's -1) is UNLABELLED."""
    feature = dataset.features[column]
    values = dataset.select_columns([column]).with_format("arrow")[:].column(column)  # a pyarrow ChunkedArray
    if isinstance(feature, hf.ClassLabel):
        known = values.fill_null(-1).to_numpy()
        return _indexed(known, known >= 0, list(feature.names), source, column)
    if _kind(hf, feature) in ("bool", "int"):
        known = values.cast("int64").fill_null(-1).to_numpy()
        labelled = values.is_valid().to_numpy(zero_copy_only=False)
        if (known[labelled] < 0).any():
            row = int(np.flatnonzero(labelled & (known < 0))[0])
            raise DistillError(f"{source}: '{column}' is {known[row]} in row {row}; integer labels count from 0")
        return _indexed(known, labelled, [str(c) for c in range(known.max() + 1)], source, column)
    if isinstance(feature, hf.Value) and feature.dtype in ("string", "large_string"):
        names = values.to_pylist()
        classes = sorted({name for name in names if name})
        index = {name: i for i, name in enumerate(classes)}
        known = np.array([index[name] if name else -1 for name in names], dtype=np.int64)
        return _indexed(known, known >= 0, classes, source, column)
    raise DistillError(
        f"{source}: label column '{column}' holds {feature}; it needs classes: a ClassLabel, integers or strings"
    )


def _indexed(known: np.ndarray, labelled: np.ndarray, classes: list[str], source: str, column: str):
    """(labels, classes) with the rows not `labelled` UNLABELLED."""
    if len(classes) < 2:
        raise DistillError(
            f"{source}: '{column}' has {len(classes)} class ({', '.join(classes) or 'none'}); distilling needs two "
            "or more"
        )
    return torch.from_numpy(np.where(labelled, known, UNLABELLED).astype(np.int64)), classes


def _features(hf: Any, dataset: Any, columns: list[str], source: str) -> Tensor:
    """(N, F) float32 of numeric columns, or (N, *shape) of one column of equal-length lists (or arrays)."""
    table = dataset.select_columns(columns).with_format("arrow")[:]
    for name in columns:
        nulls = table.column(name).is_null().to_numpy(zero_copy_only=False)
        if nulls.any():
            raise DistillError(f"{source}: '{name}' has no value in row {np.flatnonzero(nulls)[0]}; fill or drop it")
    if all(_kind(hf, dataset.features[name]) for name in columns):
        return torch.from_numpy(
            np.stack([table.column(name).to_numpy() for name in columns], axis=1).astype(np.float32)
        )
    array = dataset.select_columns(columns).with_format("numpy")[:][columns[0]]  # (N, *shape), or (N,) of objects
    if array.dtype.kind not in "biuf":
        raise DistillError(
            f"{source}: input column '{columns[0]}' holds {dataset.features[columns[0]]}; hf takes an Image column, "
            "image paths or bytes, numbers, or lists of numbers of one length"
        )
    return torch.from_numpy(array.astype(np.float32))


@dataclass(frozen=True)
class _Origin:
    """Where pictures came from, for messages: the data set, the folder of relative paths, each split's start."""

    source: str
    root: Path
    splits: tuple[tuple[str | None, int], ...]  # (split name, its first row in the whole data set)

    def place(self, row: int) -> str:
        split, start = next((name, start) for name, start in reversed(self.splits) if start <= row)
        return f"{_at(self.source, split)} row {row - start}"


class HFImages(Pictures):
    """The pictures of an image column of a Hugging Face dataset, kept in its memory-mapped Arrow table with
    decoding off: a row gives encoded bytes (or a path) that `picture` decodes. Only the row index is held in
    memory. The fingerprint is the dataset's own (which covers its files and each step that made it) with the
    column's name."""

    def __init__(
        self, dataset: Any, column: str, transform: ImageTransform, fingerprint: str, rows: np.ndarray, origin: _Origin
    ):
        self.dataset, self.column, self.transform, self.fingerprint = dataset, column, transform, fingerprint
        self.rows, self.origin = rows, origin  # rows: (N,) each picture's row in the whole data set, for messages

    @classmethod
    def read(cls, hf: Any, dataset: Any, column: str, images: ImageOptions, origin: _Origin) -> HFImages:
        """The pictures of `column` under the evaluation transform `images` gives (sized as the first picture
        when no size is given)."""
        if images.skip_bad:
            raise DistillError(
                f"{origin.source}: data.skip_bad does not apply to hf, which decodes images as batches need them; "
                "drop bad rows with Dataset.filter and remove data.skip_bad"
            )
        plain = dataset.select_columns([column]).cast_column(column, hf.Image(decode=False))
        fingerprint = f"{dataset._fingerprint}:{column}"
        pictures = cls(plain, column, ImageTransform((1, 1)), fingerprint, np.arange(len(plain)), origin)
        try:
            transform = images.transform(pictures._file(0))  # reads the file (or bytes) only when it needs the size
        except (OSError, SyntaxError, ValueError) as e:
            raise pictures._undecodable(0, e) from None
        return pictures.with_transform(transform)

    def __len__(self) -> int:
        return len(self.rows)

    def picture(self, i: int) -> PILImage.Image:
        try:
            with _pillow().open(self._file(i)) as image:
                image.seek(0)  # an animation's first frame
                return self.transform.convert(image)
        except (OSError, SyntaxError, ValueError) as e:
            raise self._undecodable(i, e) from None

    def _file(self, i: int) -> io.BytesIO | Path:
        """Picture `i`'s encoded bytes as a file, or its file."""
        cell = self.dataset[int(i)][self.column]
        if cell is None or not (cell["bytes"] or cell["path"]):
            raise DistillError(
                f"{self.origin.place(int(self.rows[i]))} has no image in '{self.column}'; fill or drop it"
            )
        return io.BytesIO(cell["bytes"]) if cell["bytes"] else self.origin.root / cell["path"]

    def _undecodable(self, i: int, error: Exception) -> DistillError:
        path = self.dataset[int(i)][self.column]["path"]
        column = f"column '{self.column}'" + (f", file {path}" if path else "")
        return DistillError(
            f"{self.origin.place(int(self.rows[i]))} ({column}): cannot decode it as an image ({first_line(error)}); "
            "fix or drop that row"
        )

    def subset(self, rows: np.ndarray | slice) -> HFImages:
        picked = np.arange(len(self.rows))[rows]
        return HFImages(
            self.dataset.select(picked), self.column, self.transform, self.fingerprint, self.rows[rows], self.origin
        )

    def with_transform(self, transform: ImageTransform) -> HFImages:
        return HFImages(self.dataset, self.column, transform, self.fingerprint, self.rows, self.origin)
