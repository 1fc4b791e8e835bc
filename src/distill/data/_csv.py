"""A user's tabular CSV file: numeric columns as they are, text columns one-hot, one named label column."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch

from distill._io import existing
from distill.data._core import DATASETS, UNLABELLED, ArrayData
from distill.errors import DistillError, first_line
from distill.registry import did_you_mean


@DATASETS.register("csv")
def load_csv(path: str, label_column: str, unlabelled_path: str | None = None) -> ArrayData:
    """Features are standardised later by split(), with train-split statistics, so none leak from validation.

    An empty label cell marks a row without a label (a transfer-set row); `unlabelled_path`, a CSV with the
    same feature columns (its label column absent or empty), adds more of those."""
    file = existing(path, "a CSV file with a header row")
    header, rows, lines = _read(file)
    if label_column not in header:
        close = did_you_mean(label_column, header)
        raise DistillError(f"{file}: no label column '{label_column}'{close}; columns are: {', '.join(header)}")
    described = f"csv:{file.resolve()} label={label_column} ({len(rows)} samples)"
    if unlabelled_path is not None:
        extra_file = existing(unlabelled_path, "a CSV file with the same columns")
        extra = _unlabelled_rows(extra_file, header, label_column)
        rows, lines = rows + extra, lines + [-1] * len(extra)  # their lines are in the other file
        described += f" + unlabelled {extra_file.resolve()} ({len(extra)} samples)"
    columns = {name: [row[j] for row in rows] for j, name in enumerate(header)}
    for name, values in columns.items():
        if name != label_column and "" in values:
            where = _where(values.index(""), lines)
            raise DistillError(f"{file}: column '{name}' is empty at {where}; fill or drop those rows")
    features = [_encode(file, name, values, lines) for name, values in columns.items() if name != label_column]
    if not features:
        raise DistillError(f"{file}: no feature columns besides the label '{label_column}'; add some")
    if all(value == "" for value in columns[label_column]):
        raise DistillError(f"{file}: column '{label_column}' is empty in every row; label some rows")
    labels, classes = _encode_labels(columns[label_column])
    return ArrayData(
        inputs=torch.from_numpy(np.concatenate(features, axis=1).astype(np.float32)),  # (N, F)
        labels=torch.from_numpy(labels),
        classes=classes,
        description=described,
        standardize=True,
    )


def _unlabelled_rows(file: Path, header: list[str], label_column: str) -> list[list[str]]:
    """The rows of a CSV of unlabelled samples, in `header`'s column order with an empty label."""
    extra_header, rows, _ = _read(file)
    features = [name for name in header if name != label_column]
    missing = [name for name in features if name not in extra_header]
    if missing:
        raise DistillError(f"{file}: has no column '{missing[0]}'; it needs the labelled file's feature columns")
    at = {name: j for j, name in enumerate(extra_header)}
    if label_column in at and any(row[at[label_column]] for row in rows):
        raise DistillError(f"{file}: column '{label_column}' holds labels; unlabelled rows leave it empty or out")
    return [[row[at[name]] if name != label_column else "" for name in header] for row in rows]


def _read(file: Path) -> tuple[list[str], list[list[str]], list[int]]:
    """Header, rows of stripped cells, and each row's line in the file (for messages a user can act on)."""
    try:
        with open(file, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f, strict=True)  # strict: a quote left open by a truncated file is an error, not data
            header = [cell.strip() for cell in next(reader, [])]
            rows, lines = [], []
            for row in reader:
                if not row:  # a blank line
                    continue
                if len(row) != len(header):
                    got = f"{len(row)} fields, the header {len(header)}"
                    raise DistillError(f"{file}: line {reader.line_num} has {got}; fix that row")
                rows.append([cell.strip() for cell in row])
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DistillError(
            f"{file}: cannot read it as CSV ({first_line(e, typed=True)}); save it as UTF-8 with a header"
        ) from e
    if not header:
        raise DistillError(f"{file}: the file is empty; it needs a header row and at least two data rows")
    if not rows:
        raise DistillError(f"{file}: only a header row, no data; add at least two data rows")
    if len(set(header)) != len(header):
        twice = sorted({name for name in header if header.count(name) > 1})
        raise DistillError(f"{file}: column names appear more than once: {', '.join(twice)}; rename them")
    return header, rows, lines


def _encode(file: Path, name: str, values: list[str], lines: list[int]) -> np.ndarray:
    """(N, 1) floats for a numeric column, else (N, K) one-hot over the sorted categories."""
    try:
        numbers = np.array([float(v) for v in values])
    except ValueError:
        not_numbers = [i for i, v in enumerate(values) if not _is_number(v)]
        if len(not_numbers) < len(values) / 2:  # a numeric column with markers such as NA or ? for missing values
            first = not_numbers[0]
            raise DistillError(
                f"{file}: column '{name}' is numeric but has '{values[first]}' at {_where(first, lines)}; "
                "fill or drop those rows"
            ) from None
        position = {category: i for i, category in enumerate(sorted(set(values)))}
        onehot = np.zeros((len(values), len(position)))
        onehot[np.arange(len(values)), [position[v] for v in values]] = 1
        return onehot
    bad = np.flatnonzero(~np.isfinite(numbers))
    if len(bad):
        where = _where(bad[0], lines)
        raise DistillError(f"{file}: column '{name}' has '{values[bad[0]]}' at {where}; fill or drop those rows")
    return numbers[:, None]


def _encode_labels(values: list[str]) -> tuple[np.ndarray, list[str]]:
    """Class indices into the sorted distinct values, compared as integers when they all are (so 10 sorts after 9);
    an empty value is UNLABELLED."""
    given = [v for v in values if v != ""]
    try:
        keys: list[int] | list[str] = [int(v) for v in given]
        key_of = int
    except ValueError:
        keys, key_of = given, str
    classes = sorted(set(keys))
    index = {key: i for i, key in enumerate(classes)}
    labels = [UNLABELLED if v == "" else index[key_of(v)] for v in values]
    return np.array(labels, dtype=np.int64), [str(c) for c in classes]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _where(row: int, lines: list[int]) -> str:
    if lines[row] < 0:
        return f"unlabelled row {row + 1 - lines.index(-1)} (data.unlabelled_path)"
    return f"row {row + 1} (line {lines[row]})"
