"""data.name hf: Hugging Face datasets (save_to_disk folders, data files, the local hub cache) as a
classifier's data: images decoded as needed, numeric columns as a tensor, the dataset's own splits as parts."""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from conftest import raises_one_line

hf = pytest.importorskip("datasets")
Image = pytest.importorskip("PIL.Image")

from distill.cli import main  # noqa: E402
from distill.data import UNLABELLED, ImageOptions, load, split  # noqa: E402
from distill.data._hf import HFImages  # noqa: E402

CLASSES = ["cat", "dog", "eel"]
MODES = ["RGB", "L", "RGBA", "P"]  # RGB with grey, transparent and palette pictures mixed in


def picture(i: int, size: tuple[int, int] = (12, 12)) -> Image.Image:
    """Picture `i`: seeded noise, its mode cycling through MODES."""
    pixels = np.random.default_rng(i).integers(0, 256, (size[1], size[0], 4), dtype=np.uint8)
    rgba = Image.fromarray(pixels, "RGBA")
    mode = MODES[i % len(MODES)]
    return rgba.convert("RGB").convert("P") if mode == "P" else rgba.convert(mode)


def image_dataset(rows: int, start: int = 0, labels: list[int] | None = None):
    features = hf.Features({"image": hf.Image(), "label": hf.ClassLabel(names=CLASSES)})
    labels = [i % len(CLASSES) for i in range(start, start + rows)] if labels is None else labels
    return hf.Dataset.from_dict(
        {"image": [picture(i) for i in range(start, start + rows)], "label": labels}, features=features
    )


def expected_input(i: int, data) -> torch.Tensor:
    """Picture `i` as Pillow and the data's transform make it, without the loader."""
    encoded = io.BytesIO()
    picture(i).save(encoded, format="PNG")
    with Image.open(encoded) as image:
        return data.inputs.transform(image)


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No network, and a Hugging Face cache of the test's own."""
    import huggingface_hub.constants

    monkeypatch.setattr(hf.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")


@pytest.fixture
def saved_splits(tmp_path: Path) -> Path:
    """A DatasetDict of 12 train, 6 validation and 6 test pictures, saved."""
    folder = tmp_path / "pets"
    parts = {"train": image_dataset(12), "validation": image_dataset(6, 12), "test": image_dataset(6, 18)}
    hf.DatasetDict(parts).save_to_disk(str(folder))
    return folder


def test_a_saved_dataset_dict_gives_labels_classes_and_its_splits_as_parts(saved_splits):
    data = load("hf", path=str(saved_splits), images=ImageOptions())
    assert data.classes == CLASSES
    assert data.labels.tolist() == [i % 3 for i in range(24)]
    assert data.val_indices.tolist() == list(range(12, 18)) and data.test_indices.tolist() == list(range(18, 24))
    assert data.input_shape == (3, 12, 12) and isinstance(data.inputs, HFImages)
    for i in (0, 1, 2, 3, 13, 23):  # every mode, in every split
        assert torch.equal(data.inputs[i], expected_input(i, data)), i
    assert data.description.startswith(f"hf:{saved_splits.resolve()} (24 rows, 3 classes, splits train/validation/test")
    assert "fingerprint" in data.description and data.preprocessing == data.inputs.transform.describe()
    again = load("hf", path=str(saved_splits), images=ImageOptions())
    assert again.description == data.description and again.inputs.fingerprint == data.inputs.fingerprint


def test_image_options_resize_grey_and_the_first_pictures_size(tmp_path):
    folder = tmp_path / "wide"
    features = hf.Features({"image": hf.Image(), "label": hf.ClassLabel(names=CLASSES)})
    wide = [picture(i, size=(10, 6)) for i in range(6)]
    hf.Dataset.from_dict({"image": wide, "label": [0, 1, 2] * 2}, features=features).save_to_disk(str(folder))
    assert load("hf", path=str(folder), images=ImageOptions()).input_shape == (3, 6, 10)
    grey = load("hf", path=str(folder), images=ImageOptions(image_size=4, channels=1))
    assert grey.input_shape == (1, 4, 4)
    assert torch.equal(grey.inputs[5], grey.inputs.transform(wide[5]))  # the stored PNG decodes to the same pixels


def test_split_parts_read_through_dataloader_workers(saved_splits):
    data = load("hf", path=str(saved_splits), images=ImageOptions())
    parts = split(data, val_fraction=0.2, seed=0)
    assert parts.val.indices.tolist() == list(range(12, 18)) and parts.stats is not None  # standardised on train
    assert len(pickle.dumps(parts.inputs)) < 10_000  # the Arrow file is memory-mapped, not copied into the pickle
    batches = list(DataLoader(parts.train, batch_size=5, num_workers=1))
    inputs = torch.cat([batch["input"] for batch in batches])
    assert inputs.shape == (12, 3, 12, 12) and torch.cat([b["index"] for b in batches]).tolist() == list(range(12))
    assert torch.equal(inputs[7], parts.inputs[7])
    plain = load("hf", path=str(saved_splits / "train"), images=ImageOptions())  # one Dataset: random parts
    assert plain.val_indices is None and "splits" not in plain.description
    parts = split(plain, val_fraction=0.25, test_fraction=0.25, seed=1)
    batch = next(iter(DataLoader(parts.val, batch_size=8, num_workers=1)))
    assert torch.equal(batch["input"][1], parts.inputs[int(batch["index"][1])])  # rows picked out of order


def test_integer_string_and_missing_labels(tmp_path):
    rows = 8
    images = [picture(i) for i in range(rows)]
    ints = hf.Dataset.from_dict({"image": images, "label": [0, 2, None, 2, 0, 2, 0, 2]})
    ints = ints.cast_column("image", hf.Image())
    ints.save_to_disk(str(tmp_path / "ints"))
    data = load("hf", path=str(tmp_path / "ints"), images=ImageOptions())
    assert data.classes == ["0", "1", "2"] and data.labels.tolist() == [0, 2, UNLABELLED, 2, 0, 2, 0, 2]
    names = ["b", "a", "c", "a", "b", "", "a", "c"]
    hf.Dataset.from_dict({"image": images, "kind": names}).cast_column("image", hf.Image()).save_to_disk(
        str(tmp_path / "strings")
    )
    data = load("hf", path=str(tmp_path / "strings"), label_column="kind", images=ImageOptions())
    assert data.classes == ["a", "b", "c"] and data.labels.tolist() == [1, 0, 2, 0, 1, UNLABELLED, 0, 2]


def test_image_paths_named_by_input_column_resolve_beside_the_data_file(tmp_path):
    (tmp_path / "pics").mkdir()
    for i in range(6):
        picture(i).save(tmp_path / "pics" / f"{i}.png")
    lines = [json.dumps({"file": f"pics/{i}.png", "label": CLASSES[i % 3]}) for i in range(6)]
    (tmp_path / "rows.jsonl").write_text("\n".join(lines))
    data = load("hf", path=str(tmp_path / "rows.jsonl"), input_column="file", images=ImageOptions())
    assert data.classes == CLASSES and data.description.count("splits train") == 1
    assert torch.equal(data.inputs[3], expected_input(3, data))


def test_tabular_parquet_gives_standardised_float_features(tmp_path):
    table = {"a": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "b": [1, 0, 1, 0, 1, 0], "note": list("uvwxyz"), "label": [0, 1] * 3}
    hf.Dataset.from_dict(table).to_parquet(str(tmp_path / "rows.parquet"))
    data = load("hf", path=str(tmp_path / "rows.parquet"), images=ImageOptions())
    assert data.standardize and data.inputs.dtype == torch.float32
    assert torch.equal(data.inputs, torch.tensor([table["a"], table["b"]], dtype=torch.float32).T)  # text left out
    assert data.classes == ["0", "1"] and "a, b" in data.preprocessing
    vectors = {"x": [[float(i), float(-i), 1.0] for i in range(6)], "label": ["p", "q"] * 3}
    hf.Dataset.from_dict(vectors).save_to_disk(str(tmp_path / "vectors"))
    data = load("hf", path=str(tmp_path / "vectors"), input_column="x")
    assert data.input_shape == (3,) and torch.equal(data.inputs[4], torch.tensor([4.0, -4.0, 1.0]))


def test_bad_input_is_one_line_each(tmp_path, saved_splits):
    raises_one_line(lambda: load("hf", path=str(tmp_path / "nothing")), "nothing", "does not exist")
    raises_one_line(lambda: load("hf", path="someone/not-cached"), "data.path someone/not-cached", "cache", "online")
    message = raises_one_line(
        lambda: load("hf", path=str(saved_splits), label_column="lable"), "no column 'lable'", "data.label_column"
    )
    assert "did you mean 'label'" in message and "it has image, label" in message
    raises_one_line(lambda: load("hf", path=str(saved_splits), input_column="img"), "'img'", "data.input_column")
    raises_one_line(lambda: load("hf", path=str(saved_splits), val_path="v"), "does not take data.val_path")
    hf.DatasetDict({"test": image_dataset(3)}).save_to_disk(str(tmp_path / "no-train"))
    raises_one_line(lambda: load("hf", path=str(tmp_path / "no-train")), "no 'train' split", "it has test")
    hf.DatasetDict({"train": image_dataset(6), "test": image_dataset(3, labels=[0, -1, 1])}).save_to_disk(
        str(tmp_path / "unlabelled-test")
    )
    raises_one_line(lambda: load("hf", path=str(tmp_path / "unlabelled-test")), "split 'test'", "row 1", "labels")
    image_dataset(4, labels=[0] * 4).cast_column("label", hf.Value("int64")).save_to_disk(str(tmp_path / "single"))
    raises_one_line(lambda: load("hf", path=str(tmp_path / "single")), "1 class (0)", "two or more")


def test_a_corrupt_image_names_its_split_row_and_column(tmp_path):
    good = io.BytesIO()
    picture(0).save(good, format="PNG")
    cells = [{"bytes": good.getvalue(), "path": None}] * 3 + [{"bytes": good.getvalue()[:60], "path": "torn.png"}]
    features = hf.Features({"image": hf.Image(), "label": hf.ClassLabel(names=CLASSES)})
    hf.DatasetDict(
        {"train": hf.Dataset.from_dict({"image": cells, "label": [0, 1, 2, 0]}, features=features)}
    ).save_to_disk(str(tmp_path / "torn"))
    data = load("hf", path=str(tmp_path / "torn"), images=ImageOptions())
    assert data.inputs[0].shape == (3, 12, 12)
    raises_one_line(lambda: data.inputs[3], "split 'train' row 3", "column 'image'", "torn.png", "cannot decode")


@pytest.mark.e2e
def test_train_through_the_cli(saved_splits, tmp_path, capsys):
    config = tmp_path / "pets.yaml"
    config.write_text(
        f"name: pets\nout_dir: {tmp_path / 'runs'}\n"
        f"data: {{name: hf, path: {saved_splits}, image_size: 12, batch_size: 8, num_workers: 0}}\n"
        "teacher: {model: cnn, epochs: 1}\nstudent: {model: mlp}\ntrain: {epochs: 1, progress: false}\n"
    )
    assert main(["train", str(config)]) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "runs" / "pets" / "summary.json").read_text())
    assert set(summary) >= {"teacher", "student"}
    config.write_text(config.read_text().replace("data: {name: hf,", "data: {name: hf, label_column: kind,"))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no column 'kind'" in err and "it has image, label" in err, err
