"""Data sets: each loader's output, the seeded split, and one-line errors for every bad file."""

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from distill.data import DATASETS, ArrayData, load, split
from distill.errors import DistillError

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def raises_one_line(call, *needles: str) -> str:
    """Run `call`, expect a one-line DistillError containing every needle."""
    with pytest.raises(DistillError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


def test_registry_has_every_loader():
    assert DATASETS.names() == ["csv", "digits", "idx", "tensors"]


def test_digits_shape_range_classes():
    data = load("digits")
    assert data.inputs.shape == (1797, 1, 8, 8) and data.input_shape == (1, 8, 8)
    assert data.inputs.dtype == torch.float32 and data.labels.dtype == torch.int64
    assert data.inputs.min() == 0 and data.inputs.max() == 1
    assert data.classes == [str(i) for i in range(10)] and data.num_classes == 10
    assert set(data.labels.tolist()) == set(range(10))


def test_split_is_seeded_disjoint_and_indexes_the_full_data():
    data = load("digits")
    parts = split(data, val_fraction=0.2, seed=0)
    again = split(data, val_fraction=0.2, seed=0)
    other = split(data, val_fraction=0.2, seed=1)
    assert torch.equal(parts.val.indices, again.val.indices)
    assert not torch.equal(parts.val.indices, other.val.indices)
    assert len(parts.val) == 359 and len(parts.train) == 1797 - 359
    assert sorted(parts.train.indices.tolist() + parts.val.indices.tolist()) == list(range(1797))
    sample = parts.val[5]
    assert set(sample) == {"input", "label", "index"}
    assert torch.equal(sample["input"], data.inputs[sample["index"]])
    assert sample["label"] == data.labels[sample["index"]]
    assert parts.num_classes == 10 and parts.input_shape == (1, 8, 8) and parts.stats is None
    batch = next(iter(torch.utils.data.DataLoader(parts.train, batch_size=4)))
    assert batch["input"].shape == (4, 1, 8, 8) and batch["index"].shape == (4,)


@pytest.mark.parametrize("fraction", [0.0, 1.0, 1e-6])
def test_split_rejects_a_fraction_that_leaves_a_part_empty(fraction):
    raises_one_line(lambda: split(load("digits"), val_fraction=fraction, seed=0), "val_fraction")


# --- IDX ---------------------------------------------------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, *, gz: bool) -> Path:
    """An IDX file as MNIST ships it: magic 0x0000080<ndim>, big-endian uint32 dims, uint8 payload."""
    raw = struct.pack(f">I{array.ndim}I", 0x800 + array.ndim, *array.shape) + array.astype(np.uint8).tobytes()
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def small_idx(folder: Path, *, gz: bool, n_labels: int = 5) -> tuple[Path, np.ndarray, np.ndarray]:
    images = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    labels = np.array([3, 0, 1, 3, 2][:n_labels], dtype=np.uint8)
    images_file = write_idx(folder / "train-images-idx3-ubyte", images, gz=gz)
    write_idx(folder / "train-labels-idx1-ubyte", labels, gz=gz)
    return images_file, images, labels


@pytest.mark.parametrize("gz", [True, False])
@pytest.mark.parametrize("point_at", ["folder", "images file"])
def test_idx_round_trip(tmp_path, gz, point_at):
    images_file, images, labels = small_idx(tmp_path, gz=gz)
    data = load("idx", path=str(tmp_path if point_at == "folder" else images_file))
    assert data.inputs.shape == (5, 1, 4, 3)
    assert torch.allclose(data.inputs[:, 0], torch.from_numpy(images).float() / 255)
    assert data.labels.tolist() == labels.tolist() and data.classes == ["0", "1", "2", "3"]
    assert str(images_file) in data.description


def test_idx_truncated_file_names_it(tmp_path):
    images_file, _, _ = small_idx(tmp_path, gz=False)
    images_file.write_bytes(images_file.read_bytes()[:-7])
    raises_one_line(lambda: load("idx", path=str(tmp_path)), str(images_file), "truncated")


def test_idx_bad_gzip_is_a_distill_error(tmp_path):
    images_file, _, _ = small_idx(tmp_path, gz=True)
    images_file.write_bytes(images_file.read_bytes()[:20])  # gzip stream cut short
    raises_one_line(lambda: load("idx", path=str(tmp_path)), str(images_file))


def test_idx_count_mismatch(tmp_path):
    small_idx(tmp_path, gz=True, n_labels=4)
    raises_one_line(lambda: load("idx", path=str(tmp_path)), "5 images", "4 labels")


def test_idx_missing_path(tmp_path):
    raises_one_line(lambda: load("idx", path=str(tmp_path / "nope")), str(tmp_path / "nope"))


def test_real_mnist_test_split():
    folder = SHARED_DATA / "mnist-test"
    if not folder.is_dir():
        pytest.skip(f"MNIST test files not found at {folder} (the repo's sibling shared/data)")
    data = load("idx", path=str(folder))
    assert data.inputs.shape == (10_000, 1, 28, 28) and data.num_classes == 10
    assert data.labels[:3].tolist() == [7, 2, 1]  # the well-known first three MNIST test digits
    assert data.inputs.min() == 0 and data.inputs.max() == 1


# --- CSV ----------------------------------------------------------------------------------------------------------


def write_csv(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_csv_numeric_and_categorical_columns(tmp_path):
    colors = ["red", "green", "blue", "green"] * 10
    rows = [f"{i * i},{colors[i]},{'dog' if i % 3 else 'cat'}" for i in range(40)]
    path = write_csv(tmp_path / "pets.csv", "size,color,label\n" + "\n".join(rows) + "\n")
    data = load("csv", path=path, label_column="label")
    assert data.input_shape == (4,) and data.standardize  # size + one-hot (blue, green, red)
    assert data.inputs[0].tolist() == [0, 0, 0, 1] and data.inputs[2].tolist() == [4, 1, 0, 0]
    assert data.classes == ["cat", "dog"] and data.labels[:3].tolist() == [0, 1, 1]

    parts = split(data, val_fraction=0.25, seed=0)
    train, raw_train = parts.train.inputs, data.inputs[parts.train.indices]
    assert torch.allclose(train.mean(dim=0), torch.zeros(4), atol=1e-5)
    assert torch.allclose(train.std(dim=0, correction=0), torch.ones(4), atol=1e-5)
    assert torch.allclose(torch.tensor(parts.stats["mean"]), raw_train.mean(dim=0))  # train rows only
    assert not torch.allclose(torch.tensor(parts.stats["mean"]), data.inputs.mean(dim=0))
    val, raw_val = parts.val.inputs, data.inputs[parts.val.indices]
    assert torch.allclose(val, (raw_val - raw_train.mean(dim=0)) / raw_train.std(dim=0, correction=0))


def test_csv_integer_labels_sort_as_numbers(tmp_path):
    path = write_csv(tmp_path / "t.csv", "x,y\n1,10\n2,9\n3,2\n4,9\n")
    data = load("csv", path=path, label_column="y")
    assert data.classes == ["2", "9", "10"] and data.labels.tolist() == [2, 1, 0, 1]


def test_csv_missing_label_column_suggests_close_name(tmp_path):
    path = write_csv(tmp_path / "t.csv", "x,label\n1,a\n2,b\n")
    raises_one_line(
        lambda: load("csv", path=path, label_column="lable"), path, "'lable'", "did you mean 'label'", "x, label"
    )


@pytest.mark.parametrize("bad", ["nan", "inf", ""])
def test_csv_bad_number_names_column_and_row(tmp_path, bad):
    path = write_csv(tmp_path / "t.csv", f"x,w,y\n1,5,a\n2,{bad},b\n3,7,a\n")
    raises_one_line(lambda: load("csv", path=path, label_column="y"), path, "'w'", "row 2", "fill or drop")


@pytest.mark.parametrize("text", ["", "x,y\n"])
def test_csv_empty_or_header_only(tmp_path, text):
    path = write_csv(tmp_path / "t.csv", text)
    raises_one_line(lambda: load("csv", path=path, label_column="y"), path)


def test_csv_ragged_row_names_line(tmp_path):
    path = write_csv(tmp_path / "t.csv", "x,y\n1,a\n2,b,extra\n")
    raises_one_line(lambda: load("csv", path=path, label_column="y"), path, "line 3")


# --- tensors ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
@pytest.mark.parametrize("keys", [("inputs", "labels"), ("x", "y")])
def test_tensors_round_trip(tmp_path, suffix, keys):
    inputs = np.arange(24, dtype=np.float64).reshape(6, 2, 2)
    labels = np.array([0, 2, 1, 2, 0, 1])
    path = tmp_path / f"d{suffix}"
    if suffix == ".npz":
        np.savez(path, **{keys[0]: inputs, keys[1]: labels})
    else:
        torch.save({keys[0]: torch.from_numpy(inputs), keys[1]: torch.from_numpy(labels)}, path)
    data = load("tensors", path=str(path))
    assert data.inputs.dtype == torch.float32 and torch.equal(data.inputs, torch.from_numpy(inputs).float())
    assert data.labels.tolist() == labels.tolist() and data.classes == ["0", "1", "2"]


def test_tensors_missing_keys_lists_what_the_file_has(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, features=np.zeros((3, 2)), target=np.zeros(3, dtype=int))
    raises_one_line(lambda: load("tensors", path=str(path)), str(path), "'features'", "'target'", "'inputs'")


def test_tensors_float_labels_and_nan_inputs_are_errors(tmp_path):
    floats = tmp_path / "floats.npz"
    np.savez(floats, inputs=np.zeros((3, 2)), labels=np.array([0.0, 1.0, 0.5]))
    raises_one_line(lambda: load("tensors", path=str(floats)), str(floats), "'labels'", "integer")
    nans = tmp_path / "nans.npz"
    np.savez(nans, inputs=np.array([[0.0], [np.nan]]), labels=np.array([0, 1]))
    raises_one_line(lambda: load("tensors", path=str(nans)), str(nans), "NaN")


@pytest.mark.parametrize("suffix", [".npz", ".pt"])
def test_tensors_garbage_file_is_a_distill_error(tmp_path, suffix):
    path = tmp_path / f"junk{suffix}"
    path.write_bytes(b"not an archive at all")
    raises_one_line(lambda: load("tensors", path=str(path)), str(path), "cannot read")


# --- load ---------------------------------------------------------------------------------------------------------


def test_unknown_data_set_suggests_close_name():
    raises_one_line(lambda: load("digts"), "'digts'", "did you mean 'digits'")


def test_loader_rejects_an_option_it_does_not_take():
    raises_one_line(lambda: load("digits", path="somewhere"), "'digits'", "'path'")
    raises_one_line(lambda: load("idx", path=".", label_column="y"), "'idx'", "'label_column'")


def test_loader_requires_its_options(tmp_path):
    raises_one_line(lambda: load("csv", path=str(tmp_path / "t.csv")), "'csv'", "'label_column'")


def test_array_data_checks_labels_against_classes():
    raises_one_line(lambda: ArrayData(torch.zeros(3, 2), torch.tensor([0, 1, 2]), ["a", "b"], "test"), "[0, 2)")
