"""Data sets: each loader's output, the seeded split, and one-line errors for every bad file."""

import gzip
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, raises_one_line
from distill.data import DATASETS, ArrayData, load, split


def test_registry_has_every_loader():
    assert DATASETS.names() == ["cifar10", "cifar100", "csv", "digits", "folder", "hf", "idx", "manifest", "tensors"]


def test_digits_shape_range_classes():
    data = load("digits")
    assert data.inputs.shape == (1797, 1, 8, 8) and data.input_shape == (1, 8, 8)
    assert data.inputs.dtype == torch.float32 and data.labels.dtype == torch.int64
    assert data.inputs.min() == 0 and data.inputs.max() == 1
    assert data.classes == [str(i) for i in range(10)] and data.num_classes == 10
    assert set(data.labels.tolist()) == set(range(10))


def test_split_is_seeded_disjoint_and_indexes_the_full_data():
    data = load("digits")
    parts = split(data, val_fraction=0.2, test_fraction=0.2, seed=0)
    again = split(data, val_fraction=0.2, test_fraction=0.2, seed=0)
    other = split(data, val_fraction=0.2, test_fraction=0.2, seed=1)
    for part in ("train", "val", "test"):
        assert torch.equal(getattr(parts, part).indices, getattr(again, part).indices)
        assert not torch.equal(getattr(parts, part).indices, getattr(other, part).indices)
    assert len(parts.test) == 359 and len(parts.val) == 288 and len(parts.train) == 1797 - 359 - 288
    rows = parts.train.indices.tolist() + parts.val.indices.tolist() + parts.test.indices.tolist()
    assert sorted(rows) == list(range(1797))  # disjoint, and every row in one part
    assert parts.labelled is not None and len(parts.labelled) == len(parts.teacher) == len(parts.train)
    sample = parts.val[5]
    assert set(sample) == {"input", "label", "index"}
    assert torch.equal(sample["input"], data.inputs[sample["index"]])
    assert sample["label"] == data.labels[sample["index"]]
    assert parts.num_classes == 10 and parts.input_shape == (1, 8, 8) and parts.stats is None
    assert parts.augment == "none" and parts.description.endswith("augment=none") and "seed=0" in parts.description
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


# --- CIFAR ---------------------------------------------------------------------------------------------------------

CIFAR = {
    "cifar100": {
        "folder": "cifar-100-python",
        "archive": "cifar-100-python.tar.gz",
        "parts": {"train": 6, "test": 3},  # rows per file; the last file is the official test set
        "meta": "meta",
        "labels": b"fine_labels",
        "names": b"fine_label_names",
        "classes": ["apple", "bear", "cloud", "dolphin"],
        "mean": (0.5071, 0.4865, 0.4409),
        "std": (0.2673, 0.2564, 0.2762),
    },
    "cifar10": {
        "folder": "cifar-10-batches-py",
        "archive": "cifar-10-python.tar.gz",
        "parts": {**{f"data_batch_{i}": 2 for i in range(1, 6)}, "test_batch": 3},
        "meta": "batches.meta",
        "labels": b"labels",
        "names": b"label_names",
        "classes": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
        "mean": (0.4914, 0.4822, 0.4465),
        "std": (0.2470, 0.2435, 0.2616),
    },
}


def write_pickle(path: Path, obj, style: str = "protocol4") -> None:
    """style 'numpy1': protocol 3 naming numpy.core.multiarray, as the official files (Python 2, numpy 1) do."""
    if style == "numpy1":
        raw = pickle.dumps(obj, protocol=3).replace(b"numpy._core.", b"numpy.core.")
        assert b"numpy._core" not in raw and (b"numpy.core.multiarray\n_reconstruct" in raw or b"numpy" not in raw)
    else:
        raw = pickle.dumps(obj, protocol=int(style.removeprefix("protocol")))
    path.write_bytes(raw)


def fake_cifar(root: Path, name: str, style: str = "protocol4") -> tuple[Path, np.ndarray, np.ndarray]:
    """A tiny CIFAR folder in the official layout; returns it with all images (N, 3072) and labels, test rows last."""
    spec = CIFAR[name]
    folder = root / spec["folder"]
    folder.mkdir()
    n = sum(spec["parts"].values())
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    images[0, 0], images[0, 2048] = 255, 0  # red and blue of pixel (0, 0) in image 0
    images[1, 1024 + 5 * 32 + 7] = 128  # green of pixel (row 5, column 7) in image 1
    labels = rng.integers(0, len(spec["classes"]), size=n)
    start = 0
    for file, rows in spec["parts"].items():
        part = {b"data": images[start : start + rows], spec["labels"]: labels[start : start + rows].tolist()}
        write_pickle(folder / file, {**part, b"filenames": [b"x.png"] * rows}, style)
        start += rows
    write_pickle(folder / spec["meta"], {spec["names"]: [c.encode() for c in spec["classes"]]}, style)
    return folder, images, labels


@pytest.mark.parametrize("name", ["cifar100", "cifar10"])
@pytest.mark.parametrize("style", ["numpy1", "protocol4", "protocol5"])
@pytest.mark.parametrize("point_at", ["folder", "parent"])
def test_cifar_shapes_normalisation_and_classes(tmp_path, name, style, point_at):
    spec = CIFAR[name]
    folder, images, labels = fake_cifar(tmp_path, name, style)
    data = load(name, path=str(folder if point_at == "folder" else tmp_path))
    n, n_test = len(labels), list(spec["parts"].values())[-1]
    assert data.inputs.shape == (n, 3, 32, 32) and data.inputs.dtype == torch.float32
    assert data.labels.tolist() == labels.tolist() and data.classes == spec["classes"]
    assert data.test_indices.tolist() == list(range(n - n_test, n)) and str(folder) in data.description
    mean, std = spec["mean"], spec["std"]
    assert data.inputs[0, 0, 0, 0].item() == pytest.approx((1 - mean[0]) / std[0], abs=1e-6)
    assert data.inputs[0, 2, 0, 0].item() == pytest.approx(-mean[2] / std[2], abs=1e-6)
    assert data.inputs[1, 1, 5, 7].item() == pytest.approx((128 / 255 - mean[1]) / std[1], abs=1e-6)
    expected = (images.reshape(n, 3, 32, 32) / 255 - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert torch.allclose(data.inputs, torch.from_numpy(expected).float(), atol=1e-6)


@pytest.mark.parametrize("name", ["cifar100", "cifar10"])
def test_cifar_tests_on_the_official_test_rows_and_validates_on_training_rows(tmp_path, name):
    folder, _, labels = fake_cifar(tmp_path, name)
    data = load(name, path=str(folder))
    n, n_test = len(labels), list(CIFAR[name]["parts"].values())[-1]
    parts = split(data, val_fraction=0.5, seed=0)
    other = split(data, val_fraction=0.2, seed=1)
    assert parts.test.indices.tolist() == other.test.indices.tolist() == list(range(n - n_test, n))
    assert sorted(parts.train.indices.tolist() + parts.val.indices.tolist()) == list(range(n - n_test))
    assert len(parts.val) == round(0.5 * (n - n_test)) and "fixed test rows, val_fraction=0.5" in parts.description
    for i in range(n_test):
        sample = parts.test[i]
        assert torch.equal(sample["input"], data.inputs[sample["index"]])
        assert sample["label"] == labels[n - n_test + i] and sample["index"] == n - n_test + i


class Planted:
    """Unpickles by calling `call(*args)`: what a malicious pickle does."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("name", ["cifar100", "cifar10"])
@pytest.mark.parametrize("planted", ["os.system", "numpy.load", "builtins.eval"])
def test_cifar_refuses_a_planted_pickle(tmp_path, name, planted):
    spec = CIFAR[name]
    folder, _, _ = fake_cifar(tmp_path, name)
    marker = tmp_path / "ran"
    call = {
        "os.system": Planted(os.system, f"touch {marker}"),
        "numpy.load": Planted(np.load, str(marker)),
        "builtins.eval": Planted(eval, f"open({str(marker)!r}, 'w')"),
    }[planted]
    victim = folder / next(iter(spec["parts"]))
    write_pickle(victim, {b"data": call, spec["labels"]: [0]})
    message = raises_one_line(lambda: load(name, path=str(folder)), str(victim), "refused", planted.split(".")[1])
    assert not marker.exists(), message


@pytest.mark.parametrize("name", ["cifar100", "cifar10"])
def test_cifar_missing_or_truncated_files(tmp_path, name):
    spec = CIFAR[name]
    raises_one_line(lambda: load(name, path=str(tmp_path)), str(tmp_path), "download and extract " + spec["archive"])
    folder, _, _ = fake_cifar(tmp_path, name)
    first, test = next(iter(spec["parts"])), list(spec["parts"])[-1]
    (folder / test).unlink()
    raises_one_line(lambda: load(name, path=str(tmp_path)), str(folder / test), spec["archive"])
    (folder / first).write_bytes((folder / first).read_bytes()[:500])
    raises_one_line(lambda: load(name, path=str(folder)), str(folder / first), "truncated", spec["archive"])
    (folder / spec["meta"]).write_bytes(b"")
    raises_one_line(lambda: load(name, path=str(folder)), str(folder / spec["meta"]), "cannot read")


def test_cifar_labels_beyond_the_class_names(tmp_path):
    folder, images, _ = fake_cifar(tmp_path, "cifar100")
    write_pickle(folder / "test", {b"data": images[:2], b"fine_labels": [0, 4]})
    raises_one_line(lambda: load("cifar100", path=str(folder)), str(folder / "test"), "0..4", "4 classes")


@pytest.mark.parametrize(
    "rows, needle",
    [([0, 9], "[0, 4)"), ([1, 1], "repeated"), ([0, 1, 2, 3], "0 < V < 4"), ([], "0 < V < 4"), ([1.0], "int64")],
)
def test_array_data_checks_val_indices(rows, needle):
    labels, val_indices = torch.tensor([0, 1, 0, 1]), torch.tensor(rows)
    raises_one_line(
        lambda: ArrayData(torch.zeros(4, 2), labels, ["a", "b"], "t", val_indices=val_indices), "val_indices", needle
    )


# --- augmentation ---------------------------------------------------------------------------------------------------


def image_data(n: int = 8, shape: tuple[int, int, int] = (3, 6, 5)) -> ArrayData:
    """Images with no zero pixel (so padding shows) and H != W (so a swapped axis shows)."""
    inputs = torch.arange(1, n * np.prod(shape) + 1, dtype=torch.float32).view(n, *shape)
    return ArrayData(inputs, torch.arange(n) % 2, ["a", "b"], "images")


def crop_flip_outcomes(image: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """All (2 pad + 1)^2 crops of the zero-padded image, then the same flipped left-right: (162, C, H, W)."""
    c, h, w = image.shape
    padded = torch.zeros(c, h + 2 * pad, w + 2 * pad)
    padded[:, pad : pad + h, pad : pad + w] = image
    crops = [padded[:, top : top + h, left : left + w] for top in range(2 * pad + 1) for left in range(2 * pad + 1)]
    return torch.stack(crops + [crop.flip(-1) for crop in crops])


def test_crop_flip_draws_every_standard_crop_and_flip():
    data = image_data()
    parts = split(data, val_fraction=0.25, seed=0, augment="crop_flip")
    assert parts.augment == "crop_flip" and parts.description.endswith("augment=crop_flip")
    sample = parts.train[3]
    outcomes = crop_flip_outcomes(data.inputs[sample["index"]])
    seen = []
    for epoch in range(3000):
        parts.train.seed_epoch(0, epoch)
        sample = parts.train[3]
        assert sample["input"].shape == (3, 6, 5) and sample["label"] == data.labels[sample["index"]]
        assert sample["view"] == epoch
        match = (outcomes == sample["input"]).flatten(1).all(dim=1).nonzero()
        assert len(match) == 1, "not a zero-padded crop, flipped or not, of the image"
        seen.append(match.item())
    assert sorted(set(seen)) == list(range(162))  # every shift, each with and without the flip


def test_crop_flip_is_a_function_of_seed_epoch_and_sample_and_leaves_validation_alone():
    data = image_data()
    parts = split(data, val_fraction=0.25, seed=0, augment="crop_flip")

    calls = iter(range(1000))

    def train_inputs(epoch: int, seed: int) -> torch.Tensor:
        parts.train.seed_epoch(seed, epoch)
        torch.manual_seed(next(calls))  # the global random state plays no part: another at every call
        return torch.stack([parts.train[i]["input"] for i in range(len(parts.train))])

    assert torch.equal(train_inputs(0, 0), train_inputs(0, 0))
    assert not torch.equal(train_inputs(0, 0), train_inputs(1, 0))
    assert not torch.equal(train_inputs(0, 0), train_inputs(0, 1))
    assert not torch.equal(train_inputs(0, 0), data.inputs[parts.train.indices])
    for _ in range(20):
        for i in range(len(parts.val)):
            assert torch.equal(parts.val[i]["input"], data.inputs[parts.val[i]["index"]])


def test_replayed_views_cycle_with_the_epoch():
    parts = split(image_data(n=16), val_fraction=0.25, seed=0, augment="crop_flip")
    parts.train.replay(views=3, seed=7)

    def view(epoch: int, seed: int) -> torch.Tensor:
        parts.train.seed_epoch(seed, epoch)
        return torch.stack([parts.train[i]["input"] for i in range(len(parts.train))])

    assert torch.equal(view(0, 0), view(3, 5)) and torch.equal(view(2, 0), view(8, 1))
    assert not torch.equal(view(0, 0), view(1, 0))
    parts.train.seed_epoch(0, 8)
    assert parts.train[0]["view"] == 2


def test_crop_flip_is_reproducible_across_dataloader_workers():
    parts = split(image_data(n=16), val_fraction=0.25, seed=0, augment="crop_flip")

    def epoch(workers: int) -> torch.Tensor:
        loader = torch.utils.data.DataLoader(parts.train, batch_size=3, num_workers=workers)
        return torch.cat([batch["input"] for batch in loader])

    first = epoch(0)
    assert first.shape == (len(parts.train), 3, 6, 5) and torch.equal(first, epoch(2))


def test_augment_refuses_unknown_names_and_non_images():
    data = image_data()
    raises_one_line(lambda: split(data, val_fraction=0.25, seed=0, augment="crop_flp"), "data.augment", "'crop_flip'")
    tabular = ArrayData(torch.randn(8, 3), torch.arange(8) % 2, ["a", "b"], "table")
    raises_one_line(lambda: split(tabular, val_fraction=0.25, seed=0, augment="crop_flip"), "data.augment", "(3,)")


# --- load ---------------------------------------------------------------------------------------------------------


def test_unknown_data_set_suggests_close_name():
    raises_one_line(lambda: load("digts"), "'digts'", "did you mean 'digits'")


def test_loader_rejects_an_option_it_does_not_take():
    raises_one_line(lambda: load("digits", path="somewhere"), "'digits'", "data.path")
    raises_one_line(lambda: load("idx", path=".", label_column="y"), "'idx'", "data.label_column")


def test_loader_requires_its_options(tmp_path):
    raises_one_line(lambda: load("csv", path=str(tmp_path / "t.csv")), "'csv'", "data.label_column")


def test_array_data_checks_labels_against_classes():
    raises_one_line(lambda: ArrayData(torch.zeros(3, 2), torch.tensor([0, 1, 2]), ["a", "b"], "test"), "[0, 2)")


def test_array_data_finds_the_non_finite_sample_even_when_the_sum_overflows():
    huge = torch.full((3, 2), 3e38)  # finite values whose float32 sum is inf: accepted
    assert ArrayData(huge, torch.tensor([0, 1, 0]), ["a", "b"], "huge").inputs.shape == (3, 2)
    huge[1, 1] = float("-inf")
    raises_one_line(lambda: ArrayData(huge, torch.tensor([0, 1, 0]), ["a", "b"], "huge"), "NaN or inf", "sample 1")
