"""distill predict: a run's student, or its exported file, on image files and CSV rows, agreeing with the classes
`distill eval --predictions` gives the run's own test rows."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import SHARED_DATA, write_config
from distill.cli import main
from distill.export import load_exported

PIL = pytest.importorskip("PIL.Image")
MNIST = SHARED_DATA / "mnist-test"
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist-test is absent")

RUN = """
name: {name}
out_dir: {out}
data: {data}
teacher: {{model: {teacher}, epochs: 1}}
student: {{model: mlp, args: {{hidden: [16]}}}}
train: {{epochs: 1, progress: false}}
"""


def write_images(root: Path, parts: dict[str, range]) -> None:
    """MNIST test digits as root/PART/CLASS/NNNNN.png (odd rows) or .jpg (even rows)."""
    with gzip.open(MNIST / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    for part, rows in parts.items():
        for i in rows:
            file = root / part / str(labels[i]) / f"{i:05d}.{'png' if i % 2 else 'jpg'}"
            file.parent.mkdir(parents=True, exist_ok=True)
            PIL.fromarray(images[i]).save(file)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> Path:
    """A folder run (train/ and test/ parts) trained through the command, with its test predictions in p.csv."""
    folder = tmp_path_factory.mktemp("predict")
    write_images(folder / "digits", {"train": range(300), "test": range(300, 360)})
    data = json.dumps({"name": "folder", "path": str(folder / "digits"), "channels": 1, "num_workers": 0})
    config = write_config(folder / "run.yaml", RUN.format(name="digits", out=folder / "runs", data=data, teacher="cnn"))
    assert main(["train", str(config), "-q"]) == 0
    run = folder / "runs" / "digits"
    assert main(["eval", str(run), "-q", "--predictions", str(run / "p.csv")]) == 0
    return run


def students(run: Path) -> dict[Path, str]:
    """The student's class of each test image, as `distill eval --predictions` wrote it (its source relative to
    the data's root, digits/), by resolved file."""
    with open(run / "p.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return {(run.parents[1] / "digits" / row["source"]).resolve(): row["student"] for row in rows}


def predicted(capsys, *args: str) -> dict[Path, dict]:
    capsys.readouterr()
    assert main(["predict", *args, "--json"]) == 0
    return {Path(row["input"]).resolve(): row for row in json.loads(capsys.readouterr().out)}


@needs_mnist
@pytest.mark.e2e
def test_predict_on_a_run_gives_the_students_test_classes(image_run, capsys):
    expected = students(image_run)
    test = image_run.parents[1] / "digits" / "test"
    assert len(expected) == 60 and all(file.is_relative_to(test.resolve()) for file in expected)
    got = predicted(capsys, str(image_run), str(test), "--top-k", "3")
    assert got.keys() == expected.keys()
    for file, row in got.items():
        probabilities = [top["probability"] for top in row["top"]]
        assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
        assert row["top"][0]["class"] == expected[file]
    with open(image_run / "p.csv", newline="") as f:
        header = next(csv.reader(f))
    assert header == ["test_row", "source", "label", "teacher", "scratch", "student"]


@needs_mnist
@pytest.mark.e2e
def test_predict_on_the_exported_onnx_file_agrees(image_run, capsys):
    assert main(["export", str(image_run), "--format", "onnx", "-q"]) == 0
    exported = image_run / "export" / "student.onnx"
    _, meta = load_exported(exported)
    summary = json.loads((image_run / "summary.json").read_text())
    assert json.loads(meta["transform"]) == summary["transform"] and json.loads(meta["classes"]) == summary["classes"]
    expected = students(image_run)
    got = predicted(capsys, str(exported), str(image_run.parents[1] / "digits" / "test"), "--top-k", "1")
    assert {file: row["top"][0]["class"] for file, row in got.items()} == expected
    capsys.readouterr()
    one = sorted(expected)[0]
    assert main(["predict", str(exported), str(one)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(str(Path(line.split()[0]))) and line.split()[1] == expected[one]


@needs_mnist
@pytest.mark.e2e
def test_bad_inputs_are_one_line_and_exit_2(image_run, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "broken.png").write_bytes(b"not a png")
    old = tmp_path / "old"
    shutil.copytree(image_run, old, ignore=shutil.ignore_patterns("export"))
    summary = json.loads((old / "summary.json").read_text())
    (old / "summary.json").write_text(json.dumps({**summary, "transform": None}))
    cases = {
        (str(image_run), str(tmp_path / "missing")): "does not exist",
        (str(image_run), str(tmp_path / "notes.txt")): "not an image file",
        (str(image_run), str(tmp_path / "broken.png")): "cannot decode it as an image",
        (str(old), str(tmp_path / "broken.png")): "holds no image transform",
        (str(image_run), str(tmp_path / "broken.png"), "--model", "assistant"): "saved no such model",
    }
    for args, message in cases.items():
        capsys.readouterr()
        assert main(["predict", *args]) == 2, args
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


@pytest.mark.e2e
def test_predict_on_csv_rows_standardises_as_training_did(tmp_path, capsys, monkeypatch):
    """A table run: rows of a test CSV predicted as `distill eval --predictions` classes them, the columns
    matched by name (here given in another order)."""
    monkeypatch.chdir(tmp_path)
    generator = np.random.default_rng(0)
    centres = np.array([[0.0, 50.0, -3.0], [4.0, 10.0, 3.0]])

    def write(file: str, n: int, order: tuple[int, ...] = (0, 1, 2)) -> None:
        labels = generator.integers(0, 2, n)
        features = centres[labels] + generator.normal(0, [2.0, 20.0, 2.0], (n, 3))
        names = ["a", "b", "c"]
        with open(file, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["label", *(names[j] for j in order)])
            writer.writerows([[label, *(row[j] for j in order)] for label, row in zip(labels, features, strict=True)])

    write("train.csv", 200)
    write("test.csv", 40)
    data = json.dumps({"name": "csv", "path": "train.csv", "test_path": "test.csv", "label_column": "label"})
    config = write_config(tmp_path / "run.yaml", RUN.format(name="table", out="runs", data=data, teacher="mlp"))
    assert main(["train", str(config), "-q"]) == 0
    assert main(["eval", "runs/table", "-q", "--predictions", "p.csv"]) == 0
    with open("p.csv", newline="") as f:
        expected = [row["student"] for row in csv.DictReader(f)]
    with open("test.csv", newline="") as f:
        rows = list(csv.reader(f))
    with open("shuffled.csv", "w", newline="") as f:  # the same rows, columns in another order
        csv.writer(f).writerows([[row[2], row[0], row[3], row[1]] for row in rows])
    for given in ("test.csv", "shuffled.csv"):
        got = predicted(capsys, "runs/table", given)
        assert [row["top"][0]["class"] for row in got.values()] == expected
    (tmp_path / "text.csv").write_text("label,a,b,c\n0,1.0,red,2.0\n")
    capsys.readouterr()
    assert main(["predict", "runs/table", "text.csv"]) == 2
    assert "numeric feature columns only" in capsys.readouterr().err
