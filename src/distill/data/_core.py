"""The data containers, the data-set registry, `load` and the train/val `split` (fixed or seeded)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from distill.data._augment import augmentation
from distill.errors import ConfigError, DistillError
from distill.registry import Registry

DATASETS: Registry[Callable[..., ArrayData]] = Registry("data set")


@dataclass(frozen=True)
class ArrayData:
    """A whole data set in memory. `description` names its source so caches keyed on it stay honest.

    `val_indices` marks a fixed validation part, such as the official test set that CIFAR benchmarks validate on:
    the rows of `inputs` that split() holds out instead of drawing a random share.
    """

    inputs: Tensor  # (N, *input_shape) float32
    labels: Tensor  # (N,) int64 in [0, num_classes)
    classes: list[str]
    description: str
    standardize: bool = False  # split() standardises each feature with train-split statistics
    val_indices: Tensor | None = None  # (V,) int64 rows of the fixed validation part, or None for a random split

    def __post_init__(self):
        # Checked once here so every loader (and a Python user building one by hand) gets the same guarantees.
        where = self.description
        if self.inputs.dtype != torch.float32 or self.inputs.ndim < 2:
            got = f"{self.inputs.dtype} {tuple(self.inputs.shape)}"
            raise DistillError(f"{where}: inputs must be float32 shaped (N, ...), got {got}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.inputs.shape[:1]:
            got = f"{self.labels.dtype} {tuple(self.labels.shape)}"
            raise DistillError(f"{where}: labels must be int64 shaped ({len(self.inputs)},), got {got}")
        if len(self.labels) == 0:
            raise DistillError(f"{where}: the data set is empty; give it at least two samples")
        if not torch.isfinite(self.inputs.sum()):  # a finite sum proves every value finite, and is cheap on CIFAR
            bad = (~torch.isfinite(self.inputs.flatten(1))).any(dim=1).nonzero()
            if len(bad):
                at = f"first in sample {bad[0].item()}"
                raise DistillError(f"{where}: inputs hold NaN or inf ({at}); fix or drop those")
        outside = ((self.labels < 0) | (self.labels >= len(self.classes))).nonzero()
        if len(outside):
            i = outside[0].item()
            raise DistillError(
                f"{where}: labels must lie in [0, {len(self.classes)}), found {self.labels[i].item()} at sample {i}"
            )
        if self.val_indices is not None:
            self._check_val_indices()

    def _check_val_indices(self):
        where, n, rows = self.description, len(self.labels), self.val_indices
        if rows.dtype != torch.int64 or rows.ndim != 1 or not 0 < len(rows) < n:
            got = f"{rows.dtype} {tuple(rows.shape)}"
            raise DistillError(f"{where}: val_indices must be int64 shaped (V,) with 0 < V < {n}, got {got}")
        low, high = rows.min().item(), rows.max().item()
        if low < 0 or high >= n:
            raise DistillError(f"{where}: val_indices must lie in [0, {n}), found {low}..{high}")
        if len(rows.unique()) != len(rows):
            raise DistillError(f"{where}: val_indices holds repeated rows; list each validation row once")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.inputs.shape[1:])


class IndexedDataset(torch.utils.data.Dataset):
    """Samples as `{"input", "label", "index"}`; `index` is the row in the full ArrayData (cache key).

    `transform`, when given, maps each input as it is read (training augmentation), so every epoch sees new draws.
    """

    def __init__(
        self, inputs: Tensor, labels: Tensor, indices: Tensor, transform: Callable[[Tensor], Tensor] | None = None
    ):
        if not len(inputs) == len(labels) == len(indices):
            raise ValueError(f"inputs, labels, indices differ in length: {len(inputs)}, {len(labels)}, {len(indices)}")
        self.inputs, self.labels, self.indices, self.transform = inputs, labels, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        sample = self.inputs[i] if self.transform is None else self.transform(self.inputs[i])
        return {"input": sample, "label": self.labels[i], "index": self.indices[i]}


@dataclass(frozen=True)
class DataSplits:
    """Train and validation parts of one ArrayData, plus what a model needs to know about them."""

    train: IndexedDataset
    val: IndexedDataset
    classes: list[str]
    input_shape: tuple[int, ...]
    description: str
    stats: dict[str, list[float]] | None = None  # {"mean", "std"} per feature when standardised
    augment: str = "none"  # the training augmentation's name in AUGMENTS; validation is never augmented

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def load(name: str, *, path: str | None = None, label_column: str | None = None) -> ArrayData:
    """Load data set `name` from DATASETS. Options the loader does not take are errors, not silently ignored."""
    try:
        loader = DATASETS.get(name)
    except ConfigError as e:
        raise ConfigError(f"data.name: {e}") from None
    params = inspect.signature(loader).parameters
    given = {key: value for key, value in {"path": path, "label_column": label_column}.items() if value is not None}
    for key in given:
        if key not in params:
            takes = ", ".join(params) or "none"
            raise DistillError(f"data set '{name}' does not take option '{key}' (it takes: {takes}); remove it")
    for key, param in params.items():
        if param.default is inspect.Parameter.empty and key not in given:
            raise DistillError(f"data set '{name}' needs option '{key}'; set it")
    return loader(**given)


def split(data: ArrayData, *, val_fraction: float, seed: int, augment: str = "none") -> DataSplits:
    """Train and validation parts, standardised with train statistics only when the data asks for it.

    The validation part is `data.val_indices` when the data has a fixed one (`val_fraction` and `seed` are then
    unused), else a seeded random `val_fraction` of the rows: the same seed gives the same split. `augment` names a
    transform in AUGMENTS applied to training samples as they are read.
    """
    transform = augmentation(augment, data.input_shape, data.description)
    if data.val_indices is None:
        train_idx, val_idx = _random_split(len(data.labels), val_fraction, seed)
        how = f"val_fraction={val_fraction} seed={seed}"
    else:
        val_idx = data.val_indices.sort().values
        in_train = torch.ones(len(data.labels), dtype=torch.bool)
        in_train[val_idx] = False
        train_idx = in_train.nonzero().squeeze(1)
        how = "fixed validation rows, val_fraction and seed unused"
    inputs, stats = data.inputs, None
    if data.standardize:
        inputs, stats = _standardize(data.inputs, data.inputs[train_idx])
    return DataSplits(
        train=IndexedDataset(inputs[train_idx], data.labels[train_idx], train_idx, transform),
        val=IndexedDataset(inputs[val_idx], data.labels[val_idx], val_idx),
        classes=list(data.classes),
        input_shape=data.input_shape,
        description=f"{data.description}, {how} ({len(train_idx)} train / {len(val_idx)} val), augment={augment}",
        stats=stats,
        augment=augment,
    )


def _random_split(n: int, val_fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """(train rows, val rows), each sorted, from a seeded permutation."""
    if not 0 < val_fraction < 1:
        raise DistillError(f"data.val_fraction must be in (0, 1), got {val_fraction}")
    n_val = round(n * val_fraction)
    if not 0 < n_val < n:
        raise DistillError(f"data.val_fraction={val_fraction} of {n} samples leaves a part empty; change it")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:].sort().values, order[:n_val].sort().values


def _standardize(inputs: Tensor, train_inputs: Tensor) -> tuple[Tensor, dict[str, list[float]]]:
    """Per-feature (x - mean) / std from the train part, so no validation statistics leak into training."""
    mean = train_inputs.mean(dim=0)
    std = train_inputs.std(dim=0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature stays constant, not NaN
    return (inputs - mean) / std, {"mean": mean.flatten().tolist(), "std": std.flatten().tolist()}
