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
def load_csv(
    path: str,
    label_column: str,
    unlabelled_path: str | None = None,
    val_path: str | None = None,
    test_path: str | None = None,
) -> ArrayData:
    """Features are standardised later by split(), with train-split statistics, so none leak from validation.

    An empty label cell marks a row without a label (a transfer-set row); `unlabelled_path`, a CSV with the
    same feature columns (its label column absent or empty), adds more of those. `val_path` and `test_path`,
    CSVs with the same columns, make the fixed validation and test parts. Columns are matched by name."""
    file = existing(path, "a CSV file with a header row")
    header, rows, lines = _read(file)
    if label_column not in header:
        close = did_you_mean(label_column, header)
        raise DistillError(f"{file}: no label column '{label_column}'{close}; columns are: {', '.join(header)}")
    places = [(file, line) for line in lines]
    described, sizes = [f"{file.resolve()} ({len(rows)} samples)"], {}
    for part, given in (("val", val_path), ("test", test_path), ("unlabelled", unlabelled_path)):
        if given is None:
            continue
        other = existing(given, "a CSV file with the same columns")
        more, more_lines = _rows_like(other, header, label_column, labelled=part != "unlabelled")
        rows, places, sizes[part] = rows + more, places + [(other, line) for line in more_lines], len(more)
        described.append(f"{part} {other.resolve()} ({len(more)} samples)")
    columns = {name: [row[j] for row in rows] for j, name in enumerate(header)}
    for name, values in columns.items():
        if name != label_column and "" in values:
            raise DistillError(f"{_where(values.index(''), places)}: column '{name}' is empty; fill or drop that row")
    features = [_encode(name, values, places) for name, values in columns.items() if name != label_column]
    if not features:
        raise DistillError(f"{file}: no feature columns besides the label '{label_column}'; add some")
    if all(value == "" for value in columns[label_column]):
        raise DistillError(f"{file}: column '{label_column}' is empty in every row; label some rows")
    labels, classes = _encode_labels(columns[label_column])
    start = len(lines)
    fixed = {}
    for part in ("val", "test"):
        if part in sizes:
            fixed[part] = torch.arange(start, start + sizes[part])
            start += sizes[part]
    return ArrayData(
        inputs=torch.from_numpy(np.concatenate(features, axis=1).astype(np.float32)),  # (N, F)
        labels=torch.from_numpy(labels),
        classes=classes,
        description=f"csv:{' + '.join(described)} label={label_column}",
        standardize=True,
        preprocessing="the feature columns in file order, a text column one-hot over its sorted categories",
        val_indices=fixed.get("val"),
        test_indices=fixed.get("test"),
    )


def _rows_like(
    file: Path, header: list[str], label_column: str, *, labelled: bool
) -> tuple[list[list[str]], list[int]]:
    """The rows of another CSV in `header`'s column order, and their lines. Validation and test rows need a label;
    unlabelled rows have none (a label column is optional there, and must be empty)."""
    other_header, rows, lines = _read(file)
    needed = header if labelled else [name for name in header if name != label_column]
    missing = [name for name in needed if name not in other_header]
    if missing:
        raise DistillError(f"{file}: has no column '{missing[0]}'; it needs the same columns as data.path")
    at = {name: j for j, name in enumerate(other_header)}
    if label_column in at:
        cells = [row[at[label_column]] for row in rows]
        if labelled and "" in cells:
            line = lines[cells.index("")]
            raise DistillError(f"{file}: line {line} has no label; every validation and test row needs one")
        if not labelled and any(cells):
            raise DistillError(f"{file}: column '{label_column}' holds labels; unlabelled rows leave it empty or out")
    return [[row[at[name]] if name in needed else "" for name in header] for row in rows], lines


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


def _encode(name: str, values: list[str], places: list[tuple[Path, int]]) -> np.ndarray:
    """(N, 1) floats for a numeric column, else (N, K) one-hot over the sorted categories."""
    try:
        numbers = np.array([float(v) for v in values])
    except ValueError:
        not_numbers = [i for i, v in enumerate(values) if not _is_number(v)]
        if len(not_numbers) < len(values) / 2:  # a numeric column with markers such as NA or ? for missing values
            first = not_numbers[0]
            raise DistillError(
                f"{_where(first, places)}: column '{name}' is numeric but has '{values[first]}'; "
                "fill or drop those rows"
            ) from None
        position = {category: i for i, category in enumerate(sorted(set(values)))}
        onehot = np.zeros((len(values), len(position)))
        onehot[np.arange(len(values)), [position[v] for v in values]] = 1
        return onehot
    bad = np.flatnonzero(~np.isfinite(numbers))
    if len(bad):
        raise DistillError(f"{_where(bad[0], places)}: column '{name}' has '{values[bad[0]]}'; fill or drop that row")
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


def _where(row: int, places: list[tuple[Path, int]]) -> str:
    """Where a row came from: 'FILE, row R (line L)'."""
    file, line = places[row]
    first = next(i for i, (f, _) in enumerate(places) if f == file)
    return f"{file}, row {row - first + 1} (line {line})"
