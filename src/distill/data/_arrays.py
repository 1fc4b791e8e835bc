"""Data already shaped as arrays: scikit-learn's bundled digits, and a user's .npz or .pt tensors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distill._io import existing
from distill.data._core import DATASETS, UNLABELLED, ArrayData, stack
from distill.errors import DistillError, first_line

KEY_PAIRS = (("inputs", "labels"), ("x", "y"))
HOW_TO_SAVE = "save a dict with 'inputs' and 'labels' (or 'x' and 'y') via np.savez or torch.save"


@DATASETS.register("digits")
def load_digits() -> ArrayData:
    """scikit-learn's bundled 8x8 digits: offline, small, and a real image task for quick runs."""
    from sklearn.datasets import load_digits as sklearn_digits  # here: importing scikit-learn takes seconds

    digits = sklearn_digits()
    return ArrayData(
        inputs=torch.from_numpy(digits.images).float().unsqueeze(1) / 16,  # (1797, 1, 8, 8) in [0, 1]
        labels=torch.from_numpy(digits.target).long(),
        classes=[str(i) for i in range(10)],
        description=f"digits:sklearn.datasets.load_digits ({len(digits.target)} samples)",
        preprocessing="8x8 grey pixels of 0..16, divided by 16, shaped (1, 8, 8)",
    )


@DATASETS.register("tensors")
def load_tensors(
    path: str, unlabelled_path: str | None = None, val_path: str | None = None, test_path: str | None = None
) -> ArrayData:
    """Inputs and integer labels from a .npz or .pt file; classes are 0..max label. A label of -1 marks a row
    without one (a transfer-set row); `unlabelled_path`, a file with 'inputs' alone, adds more of those.
    `val_path` and `test_path`, files of the same kind, make the fixed validation and test parts."""
    parts, described = {}, []
    for part, given in (("train", path), ("val", val_path), ("test", test_path), ("unlabelled", unlabelled_path)):
        if given is None:
            continue
        file = existing(given, "a .npz or .pt file" + (" with 'inputs'" if part == "unlabelled" else ""))
        inputs, labels = _arrays(file, labels_needed=part != "unlabelled")
        if part == "unlabelled":  # its inputs alone join training; labels it may hold are not used
            labels = torch.full((len(inputs),), -1)
        else:
            _check_labels(file, labels, unlabelled_allowed=part == "train")
        if parts and inputs.shape[1:] != parts["train"][0].shape[1:]:
            got = f"{tuple(inputs.shape[1:])}, the training file's {tuple(parts['train'][0].shape[1:])}"
            raise DistillError(f"{file}: its inputs are shaped {got}; they must match")
        parts[part] = (inputs.float(), labels)
        described.append(f"{'' if part == 'train' else part + ' '}{file.resolve()} ({len(labels)} samples)")
    inputs, labels, val_rows, test_rows = stack(parts)
    return ArrayData(
        inputs=inputs,
        labels=torch.where(labels >= 0, labels, UNLABELLED).long(),
        classes=[str(i) for i in range(int(labels.max()) + 1)],
        description="tensors:" + " + ".join(described),
        val_indices=val_rows,
        test_indices=test_rows,
    )


def _check_labels(file: Path, labels: Tensor, *, unlabelled_allowed: bool) -> None:
    lowest = -1 if unlabelled_allowed else 0
    if (labels < lowest).any():
        i = (labels < lowest).nonzero()[0].item()
        found = f"found {labels[i].item()} at sample {i}"
        allowed = "(or -1 for no label)" if unlabelled_allowed else "(every validation and test row needs one)"
        raise DistillError(f"{file}: labels must be >= 0 {allowed}, {found}; map classes to 0..C-1")
    if not (labels >= 0).any():
        raise DistillError(f"{file}: every label is -1; a data set needs labelled rows to validate and test on")


def _arrays(file: Path, *, labels_needed: bool) -> tuple[Tensor, Tensor | None]:
    """(inputs, labels) of a .npz or .pt file; labels None when not needed and absent."""
    arrays = _read(file)
    pair = next((pair for pair in KEY_PAIRS if set(pair) <= arrays.keys()), None)
    if pair is None and not labels_needed:
        pair = next(((key, None) for key, _ in KEY_PAIRS if key in arrays), None)
    if pair is None:
        needs = "'inputs' and 'labels'" if labels_needed else "'inputs'"
        raise DistillError(f"{file}: has keys {sorted(arrays)}, needs {needs}; {HOW_TO_SAVE}")
    inputs = _tensor(file, pair[0], arrays[pair[0]])
    if inputs.dtype.is_complex or inputs.ndim < 2:
        got = f"{inputs.dtype} {tuple(inputs.shape)}"
        raise DistillError(f"{file}: '{pair[0]}' must be real numbers shaped (N, ...), got {got}")
    if pair[1] is None:
        return inputs, None
    labels = _tensor(file, pair[1], arrays[pair[1]])
    if labels.dtype.is_floating_point or labels.dtype.is_complex or labels.dtype == torch.bool or labels.ndim != 1:
        got = f"{labels.dtype} {tuple(labels.shape)}"
        raise DistillError(f"{file}: '{pair[1]}' must be integer class indices shaped (N,), got {got}; convert them")
    if len(inputs) != len(labels) or len(labels) == 0:
        raise DistillError(f"{file}: {len(inputs)} inputs but {len(labels)} labels; they must be equal and non-zero")
    return inputs, labels.long()


def _read(file: Path) -> dict[str, Any]:
    """The file's top-level arrays by key. Never unpickles arbitrary objects: both readers are restricted."""
    if file.suffix not in (".npz", ".pt"):
        raise DistillError(f"{file}: expected a .npz or .pt file, got '{file.suffix}'; {HOW_TO_SAVE}")
    try:
        if file.suffix == ".npz":
            with np.load(file, allow_pickle=False) as npz:
                return {key: npz[key] for key in npz.files}
        content = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as e:  # a bad file makes np.load / torch.load raise zipfile, pickle, OS, Value... errors
        raise DistillError(f"{file}: cannot read it ({first_line(e, typed=True)}); {HOW_TO_SAVE}") from e
    if not isinstance(content, dict):
        raise DistillError(f"{file}: holds a {type(content).__name__}, not a dict; {HOW_TO_SAVE}")
    return content


def _tensor(file: Path, key: str, value: Any) -> Tensor:
    try:
        return torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as e:
        raise DistillError(
            f"{file}: '{key}' is not a numeric array ({first_line(e, typed=True)}); {HOW_TO_SAVE}"
        ) from e
