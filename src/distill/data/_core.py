"""The data containers, the data-set registry and `load`."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor

from distill.data._augment import Augment, view_key
from distill.data._images import ImageTransform
from distill.errors import ConfigError, DistillError
from distill.registry import Registry

DATASETS: Registry[Callable[..., ArrayData]] = Registry("data set")
UNLABELLED = -100  # the label of a row or token that counts for no hard loss: the losses' ignore_index


class Samples(Protocol):
    """Inputs read as they are needed (image files, a dataset on disk), indexed like the tensor of them they
    stand for: an int gives one input, a tensor of rows or a slice gives those rows' samples."""

    fingerprint: str  # identifies the source (files, a dataset)

    @property
    def shape(self) -> tuple[int, ...]: ...  # (N, *input_shape)

    def __len__(self) -> int: ...

    def sha256(self) -> str: ...  # identifies the inputs as read and their order, for the teacher cache

    def __getitem__(self, rows: Any) -> Any: ...

    def augmented(self, i: int, augment: Augment, key: int) -> Tensor: ...

    def stacked(self) -> Tensor: ...  # every input as one tensor: for the few a check needs

    def standardised(self, train: Tensor, seed: int = 0) -> tuple[Samples, dict[str, list[float]]]: ...


Inputs = Tensor | Samples


def augmented(inputs: Inputs, i: int, augment: Augment, key: int) -> Tensor:
    """View `key` of input `i` under `augment`."""
    return augment(inputs[i], key) if isinstance(inputs, Tensor) else inputs.augmented(i, augment, key)


def stacked(inputs: Inputs) -> Tensor:
    """`inputs` as one tensor (a slice of read samples is read now)."""
    return inputs if isinstance(inputs, Tensor) else inputs.stacked()


@dataclass(frozen=True)
class ArrayData:
    """A whole data set: its labels in memory, its inputs too (a tensor) or read as they are needed (`Samples`).
    `description` names its source so caches keyed on it stay honest.

    `test_indices` and `val_indices` mark fixed parts (CIFAR's official test set; the rows of a user's test or
    validation file): split() holds those rows out instead of drawing random shares. A label of UNLABELLED
    (-100) marks a row without a label: a transfer-set row that only the teacher's soft targets teach from.
    """

    inputs: Inputs  # (N, *input_shape) float32
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
        if isinstance(self.inputs, Tensor):
            self._check_inputs()
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.inputs),):
            got = f"{self.labels.dtype} {tuple(self.labels.shape)}"
            raise DistillError(f"{where}: labels must be int64 shaped ({len(self.inputs)},), got {got}")
        if len(self.labels) == 0:
            raise DistillError(f"{where}: the data set is empty; give it at least two samples")
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

    def _check_inputs(self) -> None:
        where, inputs = self.description, self.inputs
        if inputs.dtype != torch.float32 or inputs.ndim < 2:
            raise DistillError(
                f"{where}: inputs must be float32 shaped (N, ...), got {inputs.dtype} {tuple(inputs.shape)}"
            )
        if not torch.isfinite(inputs.sum()):  # a finite sum proves every value finite, and is cheap on CIFAR
            bad = (~torch.isfinite(inputs.flatten(1))).any(dim=1).nonzero()
            if len(bad):
                raise DistillError(
                    f"{where}: inputs hold NaN or inf (first in sample {bad[0].item()}); fix or drop those"
                )

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
    `view` it drew: view `epoch` of the sample under the run's seed, new pixels every epoch. The epoch comes
    with each item a training sampler gives, `(i, seed, epoch)` (so DataLoader workers that outlive an epoch
    draw the right views), or is set by `seed_epoch` for plain positions. After `replay(views, seed)`, epoch e
    shows view `e mod views` under `seed` instead: the views an augmented teacher cache recorded the teacher's
    outputs on.
    """

    def __init__(self, inputs: Inputs, labels: Tensor, indices: Tensor, augment: Augment | None = None):
        if not len(inputs) == len(labels) == len(indices):
            raise ValueError(f"inputs, labels, indices differ in length: {len(inputs)}, {len(labels)}, {len(indices)}")
        self.inputs, self.labels, self.indices, self.augment = inputs, labels, indices, augment
        self._rows = torch.stack([labels, indices], dim=1).numpy()  # (label, index) read per item without torch
        self.view, self.seed = 0, 0
        self.replayed: tuple[int, int] | None = None  # (views, seed) of an augmented cache

    def seed_epoch(self, seed: int, epoch: int) -> None:
        self.seed, self.view = self._view(seed, epoch)

    def _view(self, seed: int, epoch: int) -> tuple[int, int]:
        """(seed, view) an item of `epoch` under `seed` draws."""
        if self.replayed is None:
            return seed, epoch
        views, seed = self.replayed
        return seed, epoch % views

    def replay(self, views: int | None, seed: int = 0) -> None:
        """Show view `epoch mod views` under `seed` from now on; with None, new views every epoch again."""
        self.replayed = None if views is None else (views, seed)
        self.seed_epoch(seed, 0)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item: int | tuple[int, int, int]) -> dict[str, Tensor | int]:
        i, seed, view = (item[0], *self._view(*item[1:])) if isinstance(item, tuple) else (item, self.seed, self.view)
        label, index = (int(value) for value in self._rows[i])  # ints: collated without shared memory
        if self.augment is None:
            return {"input": self.inputs[i], "label": label, "index": index}
        sample = augmented(self.inputs, i, self.augment, view_key(seed, view, index))
        return {"input": sample, "label": label, "index": index, "view": view}


@dataclass(frozen=True)
class DataSplits:
    """Train, validation and test parts of one ArrayData, plus what a model needs to know about them.

    `train` holds every training row, its label UNLABELLED where a transfer set or a few-label study leaves
    none: what a student learns from. `labelled` holds the training rows that keep their labels: what the
    scratch baseline learns from. `teacher` holds every training row that the data labels, with its label: a
    few-label study hides labels from the student's side only, the teacher standing for one trained elsewhere
    on more labelled data. Validation picks (best epoch, tuning); test is what a run reports.
    """

    inputs: Inputs  # every row's input as the parts read it (standardised): what a teacher cache runs on
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

    @property
    def transform(self) -> ImageTransform | None:
        """How an image becomes an input, for image data read as needed: what prediction applies too."""
        return getattr(self.inputs, "transform", None)


def takes(name: str, option: str) -> bool:
    """Whether data set `name` takes `option` (a name it lacks is load's to refuse)."""
    return name in DATASETS and option in inspect.signature(DATASETS.get(name)).parameters


def load(name: str, **options: Any) -> ArrayData:
    """Load data set `name` from DATASETS with the options given (None counts as not given). Options the loader
    does not take are errors, not silently ignored: `data.KEY` names them."""
    try:
        loader = DATASETS.get(name)
    except ConfigError as e:
        raise ConfigError(f"data.name: {e}") from None
    params = inspect.signature(loader).parameters
    given = {key: value for key, value in options.items() if value is not None}
    for key in given:
        if key not in params:
            takes = ", ".join(params) or "none"
            raise DistillError(f"data set '{name}' does not take data.{key} (it takes: {takes}); remove it")
    for key, param in params.items():
        if param.default is inspect.Parameter.empty and key not in given:
            raise DistillError(f"data set '{name}' needs data.{key}; set it")
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
