"""The data containers, the data-set registry and `load`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from distill.data._augment import Augment, view_key
from distill.errors import ConfigError, DistillError
from distill.registry import Registry

DATASETS: Registry[Callable[..., ArrayData]] = Registry("data set")
UNLABELLED = -100  # the label of a row or token that counts for no hard loss: the losses' ignore_index


@dataclass(frozen=True)
class ArrayData:
    """A whole data set in memory. `description` names its source so caches keyed on it stay honest.

    `test_indices` and `val_indices` mark fixed parts (CIFAR's official test set; the rows of a user's test or
    validation file): split() holds those rows out instead of drawing random shares. A label of UNLABELLED
    (-100) marks a row without a label: a transfer-set row that only the teacher's soft targets teach from.
    """

    inputs: Tensor  # (N, *input_shape) float32
    labels: Tensor  # (N,) int64 in [0, num_classes), or UNLABELLED
    classes: list[str]
    description: str
    standardize: bool = False  # split() standardises each feature with train-split statistics
    preprocessing: str = "inputs as stored"  # what the loader did to the raw values: an exported model needs it too
    val_indices: Tensor | None = None  # (V,) int64 rows of a fixed validation part, or None for a random one
    test_indices: Tensor | None = None  # (T,) int64 rows of a fixed test part, or None for a random one

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
        labelled = self.labels != UNLABELLED
        outside = (labelled & ((self.labels < 0) | (self.labels >= len(self.classes)))).nonzero()
        if len(outside):
            i = outside[0].item()
            raise DistillError(
                f"{where}: labels must lie in [0, {len(self.classes)}), found {self.labels[i].item()} at sample {i}"
            )
        for name in ("val_indices", "test_indices"):
            if getattr(self, name) is not None:
                self._check_rows(name)
                if (self.labels[getattr(self, name)] == UNLABELLED).any():
                    raise DistillError(f"{where}: {name} holds rows without a label; validation and test need them")
        if (
            self.val_indices is not None
            and self.test_indices is not None
            and torch.isin(self.val_indices, self.test_indices).any()
        ):
            raise DistillError(f"{where}: val_indices and test_indices share rows; a row is in one part only")

    def _check_rows(self, name: str) -> None:
        where, n, rows = self.description, len(self.labels), getattr(self, name)
        if rows.dtype != torch.int64 or rows.ndim != 1 or not 0 < len(rows) < n:
            got = f"{rows.dtype} {tuple(rows.shape)}"
            raise DistillError(f"{where}: {name} must be int64 shaped (V,) with 0 < V < {n}, got {got}")
        low, high = rows.min().item(), rows.max().item()
        if low < 0 or high >= n:
            raise DistillError(f"{where}: {name} must lie in [0, {n}), found {low}..{high}")
        if len(rows.unique()) != len(rows):
            raise DistillError(f"{where}: {name} holds repeated rows; list each row once")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.inputs.shape[1:])


class IndexedDataset(torch.utils.data.Dataset):
    """Samples as `{"input", "label", "index"}`; `index` is the row in the full ArrayData (cache key).

    `augment`, when given, maps each input as it is read (training augmentation), and the sample carries the
    `view` it drew: view `epoch` of the sample under the run's seed, new pixels every epoch, set by the training
    loop through `seed_epoch`. After `replay(views, seed)`, epoch e shows view `e mod views` under `seed`
    instead: the views an augmented teacher cache recorded the teacher's outputs on.
    """

    def __init__(self, inputs: Tensor, labels: Tensor, indices: Tensor, augment: Augment | None = None):
        if not len(inputs) == len(labels) == len(indices):
            raise ValueError(f"inputs, labels, indices differ in length: {len(inputs)}, {len(labels)}, {len(indices)}")
        self.inputs, self.labels, self.indices, self.augment = inputs, labels, indices, augment
        self.view, self.seed = 0, 0
        self.replayed: tuple[int, int] | None = None  # (views, seed) of an augmented cache

    def seed_epoch(self, seed: int, epoch: int) -> None:
        if self.replayed is None:
            self.view, self.seed = epoch, seed
        else:
            views, self.seed = self.replayed
            self.view = epoch % views

    def replay(self, views: int | None, seed: int = 0) -> None:
        """Show view `epoch mod views` under `seed` from now on; with None, new views every epoch again."""
        self.replayed = None if views is None else (views, seed)
        self.seed_epoch(seed, 0)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> dict[str, Tensor | int]:
        if self.augment is None:
            return {"input": self.inputs[i], "label": self.labels[i], "index": self.indices[i]}
        index = int(self.indices[i])
        sample = self.augment(self.inputs[i], view_key(self.seed, self.view, index))
        return {"input": sample, "label": self.labels[i], "index": self.indices[i], "view": self.view}


@dataclass(frozen=True)
class DataSplits:
    """Train, validation and test parts of one ArrayData, plus what a model needs to know about them.

    `train` holds every training row, its label UNLABELLED where a transfer set or a few-label study leaves
    none: what a student learns from. `labelled` holds the training rows that keep their labels: what the
    scratch baseline learns from. `teacher` holds every training row that the data labels, with its label: a
    few-label study hides labels from the student's side only, the teacher standing for one trained elsewhere
    on more labelled data. Validation picks (best epoch, tuning); test is what a run reports.
    """

    train: IndexedDataset
    labelled: IndexedDataset
    teacher: IndexedDataset
    val: IndexedDataset
    test: IndexedDataset
    classes: list[str]
    input_shape: tuple[int, ...]
    description: str
    stats: dict[str, list[float]] | None = None  # {"mean", "std"} per feature when standardised
    augment: str = "none"  # the training augmentation's name in AUGMENTS; validation and test are never augmented

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_samples(self) -> int:
        return len(self.train) + len(self.val) + len(self.test)


def load(
    name: str,
    *,
    path: str | None = None,
    label_column: str | None = None,
    unlabelled_path: str | None = None,
    val_path: str | None = None,
    test_path: str | None = None,
) -> ArrayData:
    """Load data set `name` from DATASETS. Options the loader does not take are errors, not silently ignored.
    `val_path` and `test_path` are files of the same kind as `path` that make the fixed validation and test
    parts."""
    try:
        loader = DATASETS.get(name)
    except ConfigError as e:
        raise ConfigError(f"data.name: {e}") from None
    params = inspect.signature(loader).parameters
    options = {
        "path": path,
        "label_column": label_column,
        "unlabelled_path": unlabelled_path,
        "val_path": val_path,
        "test_path": test_path,
    }
    given = {key: value for key, value in options.items() if value is not None}
    for key in given:
        if key not in params:
            takes = ", ".join(params) or "none"
            raise DistillError(f"data set '{name}' does not take data.{key} (it takes: {takes}); remove it")
    for key, param in params.items():
        if param.default is inspect.Parameter.empty and key not in given:
            raise DistillError(f"data set '{name}' needs option '{key}'; set it")
    return loader(**given)


def stack(parts: dict[str, tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """(inputs, labels, val_indices, test_indices) of the parts of a data set read from separate files, keyed
    "train", "val", "test" and "unlabelled", stacked in that order."""
    order = [key for key in ("train", "val", "test", "unlabelled") if key in parts]
    starts = dict(zip(order, torch.tensor([0] + [len(parts[k][1]) for k in order]).cumsum(0).tolist(), strict=False))

    def rows(key: str) -> Tensor | None:
        return torch.arange(starts[key], starts[key] + len(parts[key][1])) if key in parts else None

    inputs = torch.cat([parts[key][0] for key in order])
    labels = torch.cat([parts[key][1] for key in order])
    return inputs, labels, rows("val"), rows("test")
