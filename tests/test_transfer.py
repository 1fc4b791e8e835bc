"""Transfer sets and honest splits: unlabelled rows teach through the soft loss alone, the scratch baseline never
sees a label a few-label study hid, and test rows are never seen by training or selection."""

import csv
import gzip
import json
import struct

import numpy as np
import pytest
import torch

from conftest import TINY_RUN, write_config
from distill import Distiller, DistillError, losses
from distill import stages as _stages
from distill.cli import main
from distill.data import UNLABELLED, load, split


def test_unlabelled_rows_reach_only_the_soft_loss(teacher, student):
    torch.manual_seed(0)
    batch = {"input": torch.randn(6, 8), "label": torch.tensor([0, 1, 2, UNLABELLED, UNLABELLED, UNLABELLED])}
    distiller = Distiller(student, teacher, [losses.KD(temperature=2.0, alpha=0.5)])
    loss = distiller(batch)["loss"]
    s, t = student(batch["input"]), teacher(batch["input"])
    hard = torch.nn.functional.cross_entropy(s[:3], batch["label"][:3], reduction="sum") / 6
    soft = losses.soft_loss(s, t, temperature=2.0)
    torch.testing.assert_close(loss, 0.5 * hard + 0.5 * soft)
    # an unlabelled row's gradient is its soft loss's alone: changing its (hidden) label changes nothing
    loss.backward()
    first = [p.grad.clone() for p in student.parameters()]
    student.zero_grad()
    batch["label"][4] = UNLABELLED
    distiller(batch)["loss"].backward()
    assert all(torch.equal(a, p.grad) for a, p in zip(first, student.parameters(), strict=True))


def test_a_few_label_split_hides_labels_from_training_only():
    data = load("digits")
    parts = split(data, val_fraction=0.2, seed=0, labelled_per_class=3)
    kept = parts.train.labels != UNLABELLED
    assert int(kept.sum()) == 30 and len(parts.labelled) == 30
    assert sorted(parts.labelled.labels.tolist()) == sorted([c for c in range(10) for _ in range(3)])
    assert (parts.val.labels != UNLABELLED).all() and (parts.test.labels != UNLABELLED).all()
    assert torch.equal(parts.teacher.labels, data.labels[parts.teacher.indices])  # the teacher keeps them all
    again = split(data, val_fraction=0.2, seed=0, labelled_per_class=3)
    assert torch.equal(parts.labelled.indices, again.labelled.indices)  # a fixed, seeded choice
    share = split(data, val_fraction=0.2, seed=0, labelled_fraction=0.1)
    assert len(share.labelled) == round(0.1 * len(share.train))
    assert torch.equal(share.test.indices, parts.test.indices)  # the split does not move with the labels


def run_recording(tmp_path, monkeypatch, capsys, *overrides):
    """Run the tiny config; return the summary and, per stage, the rows it trained on and validated on."""
    seen = {}
    real_fit = _stages.fit

    def recording(module, train_loader, val_loader, options, *, run_dir, resume):
        batches = list(train_loader)
        seen[run_dir.name] = {
            "rows": torch.cat([b["index"] for b in batches]),
            "labels": torch.cat([b["label"] for b in batches]),
            "steps": len(batches),
            "val": torch.cat([b["index"] for b in val_loader]),
        }
        return real_fit(module, train_loader, val_loader, options, run_dir=run_dir, resume=resume)

    monkeypatch.setattr(_stages, "fit", recording)
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    assert main(["-q", "train", str(config), *overrides]) == 0, capsys.readouterr().err
    return json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text()), seen


@pytest.mark.e2e
def test_scratch_never_sees_a_hidden_label_and_takes_the_students_steps(tmp_path, monkeypatch, capsys):
    summary, seen = run_recording(tmp_path, monkeypatch, capsys, "--set", "data.labelled_per_class=2")
    parts = split(load("digits"), val_fraction=0.25, seed=0, labelled_per_class=2)
    kept = set(parts.labelled.indices.tolist())
    scratch, student = seen["scratch"], seen["student"]
    assert set(scratch["rows"].tolist()) == kept and (scratch["labels"] != UNLABELLED).all()
    assert scratch["steps"] == student["steps"]  # the same budget: steps, not passes over its 20 rows
    assert set(student["rows"].tolist()) == set(parts.train.indices.tolist())  # every row, most unlabelled
    hidden = student["labels"] == UNLABELLED
    assert int((~hidden).sum()) == 2 * 10  # an epoch's pass: the 20 kept rows once, the rest unlabelled
    assert "(1078 train (20 labelled)" in summary["data"]


@pytest.mark.e2e
def test_test_rows_are_never_seen_by_training_or_selection(tmp_path, monkeypatch, capsys):
    summary, seen = run_recording(tmp_path, monkeypatch, capsys)
    test = set(split(load("digits"), val_fraction=0.25, seed=0).test.indices.tolist())
    assert len(test) == summary["test_samples"] == 359
    for stage in ("teacher", "scratch", "student"):
        assert not test & set(seen[stage]["rows"].tolist()), stage
        assert not test & set(seen[stage]["val"].tolist()), stage


def test_transfer_rows_from_files_in_each_format(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(40, 3)).astype(np.float32), np.arange(40) % 2
    # tensors: label -1, and a file of inputs alone
    np.savez(tmp_path / "d.npz", inputs=x, labels=np.where(np.arange(40) < 30, y, -1))
    np.savez(tmp_path / "u.npz", inputs=x[:5])
    data = load("tensors", path=str(tmp_path / "d.npz"), unlabelled_path=str(tmp_path / "u.npz"))
    assert len(data.labels) == 45 and int((data.labels == UNLABELLED).sum()) == 15
    # csv: an empty label cell, and a file without the label column
    with open(tmp_path / "t.csv", "w", newline="") as f:
        rows = [[*map(str, x[i]), "" if i >= 30 else f"c{y[i]}"] for i in range(40)]
        csv.writer(f).writerows([["a", "b", "c", "kind"], *rows])
    with open(tmp_path / "u.csv", "w", newline="") as f:
        csv.writer(f).writerows([["c", "b", "a"], *[[*map(str, x[i][::-1])] for i in range(5)]])
    data = load("csv", path=str(tmp_path / "t.csv"), label_column="kind", unlabelled_path=str(tmp_path / "u.csv"))
    assert len(data.labels) == 45 and int((data.labels == UNLABELLED).sum()) == 15 and data.classes == ["c0", "c1"]
    torch.testing.assert_close(data.inputs[40], data.inputs[0])  # columns matched by name, not position
    # idx: signed labels, -1 for none
    images = np.zeros((40, 4, 4), dtype=np.uint8)
    with gzip.open(tmp_path / "images.idx3.gz", "wb") as f:
        f.write(struct.pack(">IIII", 0x803, 40, 4, 4) + images.tobytes())
    with gzip.open(tmp_path / "labels.idx1.gz", "wb") as f:
        f.write(struct.pack(">II", 0x901, 40) + np.where(np.arange(40) < 30, y, -1).astype(np.int8).tobytes())
    data = load("idx", path=str(tmp_path))
    assert int((data.labels == UNLABELLED).sum()) == 10 and data.classes == ["0", "1"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("data.test_fraction=0.0001", "data.test_fraction=0.0001 leaves a part empty"),
        ("data.labelled_fraction=0", "data.labelled_fraction: Input should be greater than 0"),
        ("data={name: digits, labelled_fraction: 0.5, labelled_per_class: 2}", "both set; keep one"),
        ("data.unlabelled_path=x.npz", "data set 'digits' does not take data.unlabelled_path"),
        ("seeds=[0, 0]", "seeds: give each seed once"),
        ("data={name: csv, path: a.csv, train_path: a.csv}", "data.path and data.train_path both set"),
    ],
)
def test_bad_splits_are_one_line(tmp_path, capsys, override, message):
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    code = main(["train", str(config), "--set", override])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.e2e
def test_explicit_train_val_and_test_files_are_the_parts(tmp_path, capsys):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 4)) * 3

    def sample(n):
        labels = np.arange(n) % 3
        return (centers[labels] + rng.normal(size=(n, 4))).astype(np.float32), labels

    for part, n in (("train", 90), ("val", 21), ("test", 30)):
        x, y = sample(n)
        np.savez(tmp_path / f"{part}.npz", inputs=x, labels=y)
    data = load(
        "tensors",
        path=str(tmp_path / "train.npz"),
        val_path=str(tmp_path / "val.npz"),
        test_path=str(tmp_path / "test.npz"),
    )
    parts = split(data, val_fraction=0.5, test_fraction=0.5, seed=0)  # the files decide, not the fractions
    assert (len(parts.train), len(parts.val), len(parts.test)) == (90, 21, 30)
    assert parts.test.indices.tolist() == list(range(111, 141))
    torch.testing.assert_close(parts.test.inputs, torch.from_numpy(np.load(tmp_path / "test.npz")["inputs"]))
    text = TINY_RUN.replace(
        "data: {{name: digits, val_fraction: 0.25, batch_size: 128}}",
        "data: {{name: tensors, train_path: {t}, val_path: {v}, test_path: {s}, batch_size: 32}}",
    )
    files = {key: tmp_path / f"{part}.npz" for key, part in (("t", "train"), ("v", "val"), ("s", "test"))}
    config = write_config(tmp_path / "c.yaml", text.format(out=tmp_path / "runs", **files))
    assert main(["-q", "train", str(config)]) == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["test_samples"] == 30 and summary["val_samples"] == 21 and "test " in summary["data"]
    # a validation or test file must label every row; a data set without files refuses them
    np.savez(tmp_path / "bad.npz", inputs=np.zeros((3, 4), np.float32), labels=np.array([0, -1, 1]))
    with pytest.raises(DistillError, match="every validation and test row needs one"):
        load("tensors", path=str(tmp_path / "train.npz"), test_path=str(tmp_path / "bad.npz"))
    with pytest.raises(DistillError, match="does not take data.test_path"):
        load("digits", test_path=str(tmp_path / "test.npz"))


def test_a_data_set_without_any_label_is_refused(tmp_path):
    np.savez(tmp_path / "d.npz", inputs=np.zeros((8, 3), np.float32), labels=np.full(8, -1))
    with pytest.raises(DistillError, match="every label is -1; a data set needs labelled rows"):
        load("tensors", path=str(tmp_path / "d.npz"))
    with open(tmp_path / "t.csv", "w") as f:
        f.write("a,kind\n" + "".join(f"{i},\n" for i in range(8)))
    with pytest.raises(DistillError, match="column 'kind' is empty in every row"):
        load("csv", path=str(tmp_path / "t.csv"), label_column="kind")
