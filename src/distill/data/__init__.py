"""Offline data sets as in-memory tensors, split into train/val parts that yield `{"input", "label", "index"}`.

`load(name, ...)` returns an ArrayData; `split(data, val_fraction=..., seed=..., augment=...)` returns DataSplits.
A data set with an official test part (CIFAR) carries it as `ArrayData.test_indices`, and split() tests on it.
Add a data set with `@DATASETS.register("name")` on a function returning ArrayData.
"""

from distill.data import _arrays, _cifar, _csv, _idx  # noqa: F401  (importing them registers the loaders)
from distill.data._augment import Augment, CropFlip, augmentation, view_key
from distill.data._core import DATASETS, UNLABELLED, ArrayData, DataSplits, IndexedDataset, load
from distill.data._split import split

__all__ = [
    "DATASETS",
    "UNLABELLED",
    "ArrayData",
    "Augment",
    "CropFlip",
    "DataSplits",
    "IndexedDataset",
    "augmentation",
    "load",
    "split",
    "view_key",
]
