"""A data set split into training, validation and test parts (fixed files or seeded draws), with the labels a
few-label study hides and inputs standardised on the training part."""

from __future__ import annotations

import torch
from torch import Tensor

from distill.data._augment import Augment, augmentation
from distill.data._core import UNLABELLED, ArrayData, DataSplits, IndexedDataset
from distill.errors import DistillError


def split(
    data: ArrayData,
    *,
    val_fraction: float,
    seed: int,
    test_fraction: float = 0.2,
    augment: str = "none",
    labelled_fraction: float | None = None,
    labelled_per_class: int | None = None,
) -> DataSplits:
    """Train, validation and test parts, standardised with train statistics only when the data asks for it
    (each feature of a tensor; each channel of image files).

    Only labelled rows are drawn into validation and test; unlabelled ones always train. The test part is
    `data.test_indices` when the data has a fixed one, else a seeded `test_fraction` of the labelled rows; the
    validation part is `data.val_indices`, else a seeded `val_fraction` of the labelled rows left. The same
    seed gives the same split. `labelled_fraction` (a share) or `labelled_per_class` (a count per class) keeps
    the labels of a seeded choice of training rows and hides the others', for few-label studies. `augment`
    names a transform in AUGMENTS applied to training samples as they are read.
    """
    transform = augmentation(augment, data.input_shape, data.description)
    train_idx, val_idx, test_idx = _parts(data, val_fraction, test_fraction, seed)
    labels = data.labels.clone()
    hidden = _hidden_labels(labels, train_idx, labelled_fraction, labelled_per_class, seed)
    labels[hidden] = UNLABELLED
    inputs, stats = data.inputs, None
    if data.standardize and isinstance(inputs, Tensor):
        inputs, stats = _standardize(inputs, inputs[train_idx])
    elif data.standardize:
        inputs, stats = inputs.standardised(train_idx, seed)
    kept = train_idx[labels[train_idx] != UNLABELLED]
    known = train_idx[data.labels[train_idx] != UNLABELLED]

    def part(rows: Tensor, augment: Augment | None = None, labels: Tensor = labels) -> IndexedDataset:
        return IndexedDataset(inputs[rows], labels[rows], rows, augment)

    sizes = f"{len(train_idx)} train ({len(kept)} labelled) / {len(val_idx)} val / {len(test_idx)} test"
    return DataSplits(
        inputs=inputs,
        train=part(train_idx, transform),
        labelled=part(kept, transform),
        teacher=part(known, transform, labels=data.labels),
        val=part(val_idx),
        test=part(test_idx),
        classes=list(data.classes),
        input_shape=data.input_shape,
        description=f"{data.description}, {_how(data, val_fraction, test_fraction, seed)} ({sizes}), augment={augment}",
        stats=stats,
        augment=augment,
    )


def _how(data: ArrayData, val_fraction: float, test_fraction: float, seed: int) -> str:
    test = "fixed test rows" if data.test_indices is not None else f"test_fraction={test_fraction}"
    val = "fixed validation rows" if data.val_indices is not None else f"val_fraction={val_fraction}"
    return f"{test}, {val}, seed={seed}"


def _parts(data: ArrayData, val_fraction: float, test_fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """(train, val, test) rows, each sorted: the data's fixed parts, else seeded draws from the labelled rows."""
    n = len(data.labels)
    fixed = torch.zeros(n, dtype=torch.bool)
    for rows in (data.val_indices, data.test_indices):
        if rows is not None:
            fixed[rows] = True
    labelled = data.labels != UNLABELLED
    pool = (labelled & ~fixed).nonzero().squeeze(1)
    order = pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))]
    test, order = _take(
        data.test_indices, order, round(test_fraction * int(labelled.sum())), f"data.test_fraction={test_fraction}"
    )
    val, order = _take(
        data.val_indices,
        order,
        round(val_fraction * (int(labelled.sum()) - len(test))),
        f"data.val_fraction={val_fraction}",
    )
    in_train = torch.ones(n, dtype=torch.bool)
    in_train[test], in_train[val] = False, False
    train = in_train.nonzero().squeeze(1)
    if not (labelled[train]).any():
        raise DistillError(f"{data.description}: the validation and test parts leave no labelled row to train on")
    return train, val.sort().values, test.sort().values


def _take(fixed: Tensor | None, order: Tensor, count: int, key: str) -> tuple[Tensor, Tensor]:
    """The data's fixed rows for a part, or the next `count` rows of `order`; and the rows left."""
    if fixed is not None:
        return fixed, order
    if not 0 < count < len(order):
        raise DistillError(f"{key} leaves a part empty ({count} of {len(order)} labelled rows); change it")
    return order[:count], order[count:]


def _hidden_labels(labels: Tensor, train: Tensor, fraction: float | None, per_class: int | None, seed: int) -> Tensor:
    """The training rows whose labels a few-label study hides: all labelled training rows but a seeded choice
    (`fraction` of them, or `per_class` of each class). Its own generator: the split does not move with it."""
    rows = train[labels[train] != UNLABELLED]
    if fraction is None and per_class is None:
        return rows[:0]
    order = rows[torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed + 1))]
    if fraction is not None:
        keep = order[: max(1, round(fraction * len(order)))]  # at least one: a part always keeps a label
    else:
        keep = torch.cat([order[labels[order] == c][:per_class] for c in labels[order].unique()])
    hide = torch.ones(len(labels), dtype=torch.bool)
    hide[keep] = False
    return rows[hide[rows]]


def _standardize(inputs: Tensor, train_inputs: Tensor) -> tuple[Tensor, dict[str, list[float]]]:
    """Per-feature (x - mean) / std from the train part, so no validation statistics leak into training."""
    mean = train_inputs.mean(dim=0)
    std = train_inputs.std(dim=0, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))  # a constant feature stays constant, not NaN
    return (inputs - mean) / std, {"mean": mean.flatten().tolist(), "std": std.flatten().tolist()}
