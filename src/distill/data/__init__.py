"""Data sets as in-memory tensors or read from files as batches need them (`Samples`: image folders,
manifests), split into train/val/test parts that yield `{"input", "label", "index"}`.

`load(name, ...)` returns an ArrayData; `split(data, val_fraction=..., seed=..., augment=...)` returns DataSplits.
A data set with an official test part (CIFAR) carries it as `ArrayData.test_indices`, and split() tests on it.
Add a data set with `@DATASETS.register("name")` on a function returning ArrayData.
"""

from distill.data import _arrays, _cifar, _csv, _folder, _hf, _idx  # noqa: F401  (importing them registers the loaders)
from distill.data._augment import Augment, CropFlip, augmentation, view_key
from distill.data._core import (
    DATASETS,
    UNLABELLED,
    ArrayData,
    DataSplits,
    IndexedDataset,
    Inputs,
    Samples,
    augmented,
    load,
    stacked,
    takes,
)
from distill.data._folder import ImageOptions
from distill.data._images import ImageFiles, ImageTransform, workers
from distill.data._split import split

__all__ = [
    "DATASETS",
    "UNLABELLED",
    "ArrayData",
    "Augment",
    "CropFlip",
    "DataSplits",
    "ImageFiles",
    "ImageOptions",
    "ImageTransform",
    "IndexedDataset",
    "Inputs",
    "Samples",
    "augmentation",
    "augmented",
    "load",
    "split",
    "stacked",
    "takes",
    "view_key",
    "workers",
]
