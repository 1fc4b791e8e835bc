"""Image folders and manifests: real MNIST digits written as PNG and JPEG files, read as batches need them."""

from __future__ import annotations

import gzip
import json
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import SHARED_DATA, stopped_after_an_epoch, write_config
from distill import data
from distill.cli import main
from distill.errors import DistillError

PIL = pytest.importorskip("PIL.Image")
MNIST = SHARED_DATA / "mnist-test"
needs_mnist = pytest.mark.skipif(not MNIST.is_dir(), reason="../shared/data/mnist-test is absent")


def mnist(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The first `n` MNIST test digits (n, 28, 28) uint8 and their labels, sorted by label (stably)."""
    with gzip.open(MNIST / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)[:n]
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)[:n]
    order = np.argsort(labels, kind="stable")
    return images[order], labels[order]


def write_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """One subfolder per class, even files PNG and odd ones JPEG, named so the folder's order is the given
    one; the pixels as decoded back (JPEG is lossy), in that order."""
    decoded = []
    for i, (image, label) in enumerate(zip(images, labels, strict=True)):
        file = root / str(label) / f"{i:05d}.{'png' if i % 2 == 0 else 'jpg'}"
        file.parent.mkdir(parents=True, exist_ok=True)
        PIL.fromarray(image).save(file)
        decoded.append(np.asarray(PIL.open(file)))
    return np.stack(decoded)


def write_idx(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    folder.mkdir(parents=True)
    header = struct.pack(">IIII", 0x803, len(images), 28, 28)
    (folder / "images-idx3-ubyte").write_bytes(header + images.tobytes())
    (folder / "labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, len(labels)) + labels.tobytes())


RUN = """
name: {name}
out_dir: {out}
data: {data}
teacher: {{model: cnn, args: {{channels: [8, 16], hidden: 32}}, epochs: 4}}
student: {{model: mlp, args: {{hidden: [32]}}}}
train: {{epochs: 2}}
"""


QUICK = ["--set", "teacher.epochs=1", "--set", "scratch=false"]  # for runs whose accuracy is not the point


def spec(name: str, path: Path, **keys: object) -> str:
    """A `data` group for RUN (YAML reads JSON)."""
    return json.dumps({"name": name, "path": str(path), **keys})


def accuracies(run: Path) -> dict[str, float]:
    summary = json.loads((run / "summary.json").read_text())
    return {name: summary[name]["accuracy"] for name in summary["models"]}


@needs_mnist
@pytest.mark.e2e
def test_the_same_pixels_as_a_folder_and_as_an_idx_file_train_alike(tmp_path: Path):
    images, labels = mnist(600)
    pixels = write_folder(tmp_path / "folder", images, labels)
    write_idx(tmp_path / "idx", pixels, labels)
    folder = spec("folder", tmp_path / "folder", channels=1, normalize="none", num_workers=1, batch_size=32)
    idx = spec("idx", tmp_path / "idx", batch_size=32)
    for name, given in (("folder", folder), ("idx", idx)):
        config = write_config(tmp_path / f"{name}.yaml", RUN.format(name=name, out=tmp_path / "runs", data=given))
        assert main(["-q", "train", str(config)]) == 0
    from_folder, from_idx = accuracies(tmp_path / "runs/folder"), accuracies(tmp_path / "runs/idx")
    assert from_folder == from_idx
    assert from_folder["teacher"] > 0.5  # it learned: the comparison is of something


@needs_mnist
@pytest.mark.e2e
def test_a_corrupt_image_is_one_line_or_skipped_and_counted(tmp_path: Path, capsys):
    images, labels = mnist(200)
    write_folder(tmp_path / "folder", images, labels)
    bad = tmp_path / "folder/3/00070.png"
    bad.write_bytes(bad.read_bytes()[:60])  # a download cut short
    (tmp_path / "folder/3/notes.txt").write_text("not an image")
    given = spec("folder", tmp_path / "folder", channels=1)
    config = write_config(tmp_path / "run.yaml", RUN.format(name="bad", out=tmp_path / "runs", data=given))
    assert main(["-q", "train", str(config)]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "00070.png" in error and "data.skip_bad" in error
    assert not (tmp_path / "runs/bad").exists()  # nothing was started
    assert main(["-q", "train", str(config), *QUICK, "--set", "data.skip_bad=true", "--set", "train.epochs=1"]) == 0
    said = json.loads((tmp_path / "runs/bad/summary.json").read_text())["data"]
    assert "199 images" in said and "1 unreadable skipped" in said and "1 non-image files ignored" in said


@needs_mnist
@pytest.mark.e2e
def test_augmented_views_are_the_same_with_and_without_workers(tmp_path: Path):
    """Each view is drawn from (seed, epoch, sample) alone: DataLoader workers that live across epochs draw
    the same pixels as the training process."""
    images, labels = mnist(120)
    write_folder(tmp_path / "folder", images, labels)
    for workers in (0, 1):
        given = spec("folder", tmp_path / "folder", channels=1, augment="standard", num_workers=workers)
        config = RUN.format(name=f"w{workers}", out=tmp_path / "runs", data=given)
        assert main(["-q", "train", str(write_config(tmp_path / f"w{workers}.yaml", config)), *QUICK]) == 0
    logs = [(tmp_path / f"runs/w{w}/student/metrics.jsonl").read_text() for w in (0, 1)]
    assert [json.loads(line)["train/loss"] for line in logs[0].splitlines() if "train/loss" in line] == [
        json.loads(line)["train/loss"] for line in logs[1].splitlines() if "train/loss" in line
    ]


def picture(file: Path, mode: str, size: tuple[int, int] = (10, 8)) -> None:
    file.parent.mkdir(parents=True, exist_ok=True)
    colours = {"L": 90, "RGB": (200, 30, 10), "RGBA": (200, 30, 10, 128), "P": 5}
    PIL.new(mode, size, colours[mode]).save(file)


def test_mixed_modes_are_converted_and_sized_like_the_first(tmp_path: Path):
    picture(tmp_path / "cats/a.png", "RGB")
    picture(tmp_path / "cats/b.png", "RGBA")
    picture(tmp_path / "dogs/c.gif", "P")
    picture(tmp_path / "dogs/d.bmp", "L", size=(20, 16))
    loaded = data.load("folder", path=str(tmp_path), images=data.ImageOptions())
    assert loaded.classes == ["cats", "dogs"] and loaded.labels.tolist() == [0, 0, 1, 1]
    assert loaded.input_shape == (3, 8, 10)
    grey = loaded.inputs[3]
    assert grey.shape == (3, 8, 10) and torch.allclose(grey, torch.full_like(grey, 90 / 255))
    half = loaded.inputs[1]  # alpha 128 over black
    assert torch.allclose(half[:, 0, 0], torch.tensor([100, 15, 5]) / 255, atol=1.5 / 255)


def test_a_split_layout_gives_the_fixed_parts_and_a_manifest_reads_rows(tmp_path: Path):
    for part, count in (("train", 3), ("val", 1), ("test", 2)):
        for name in ("ant", "bee"):
            for i in range(count):
                picture(tmp_path / part / name / f"{i}.png", "RGB")
    loaded = data.load("folder", path=str(tmp_path), images=data.ImageOptions(image_size=6))
    assert loaded.val_indices.tolist() == [6, 7] and loaded.test_indices.tolist() == [8, 9, 10, 11]
    assert loaded.input_shape == (3, 6, 6)
    manifest = tmp_path / "rows.csv"
    manifest.write_text("path,label\ntrain/ant/0.png,ant\ntrain/bee/0.png,bee\ntrain/bee/1.png,bee\n")
    rows = data.load("manifest", path=str(manifest), images=data.ImageOptions())
    assert rows.classes == ["ant", "bee"] and rows.labels.tolist() == [0, 1, 1]


@pytest.mark.parametrize(
    ("layout", "message"),
    [
        ({"a/x.png": "RGB", "b/": None}, "b: class folder holds no images"),
        ({"a/x.png": "RGB", "a/y.png": "RGB"}, "found 1 class (a)"),
        (
            {"train/a/x.png": "RGB", "train/b/x.png": "RGB", "val/c/x.png": "RGB"},
            "val has classes that training lacks: c",
        ),
    ],
)
def test_folder_mistakes_are_one_line(tmp_path: Path, layout: dict[str, str | None], message: str):
    for name, mode in layout.items():
        if mode is None:
            (tmp_path / name).mkdir(parents=True)
        else:
            picture(tmp_path / name, mode)
    with pytest.raises(DistillError, match=message.replace("(", r"\(").replace(")", r"\)")):
        data.load("folder", path=str(tmp_path), images=data.ImageOptions())


def test_manifest_mistakes_are_one_line(tmp_path: Path):
    picture(tmp_path / "a.png", "RGB")
    missing = tmp_path / "missing.csv"
    missing.write_text("path,label\na.png,x\nb.png,y\n")
    with pytest.raises(DistillError, match=r"missing.csv:3: b.png does not exist"):
        data.load("manifest", path=str(missing), images=data.ImageOptions())
    unnamed = tmp_path / "unnamed.jsonl"
    unnamed.write_text('{"path": "a.png", "kind": "x"}\n')
    with pytest.raises(DistillError, match=r"no 'label' column \(it has path, kind\)"):
        data.load("manifest", path=str(unnamed), images=data.ImageOptions())


@needs_mnist
@pytest.mark.e2e
def test_a_pretrained_hf_teacher_is_fine_tuned_on_the_folder_then_distilled(tmp_path: Path):
    """A Hugging Face ViT saved for 7 classes gets a new head for the folder's 10, is fine-tuned, then teaches;
    the images are sized and standardised as its image processor says."""
    transformers = pytest.importorskip("transformers")
    vit = transformers.ViTConfig(
        image_size=16, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
    )
    transformers.ViTForImageClassification(vit.__class__(**{**vit.to_dict(), "num_labels": 7})).save_pretrained(
        tmp_path / "vit"
    )
    processor = transformers.ViTImageProcessor(
        size={"height": 16, "width": 16}, image_mean=[0.5] * 3, image_std=[0.25] * 3
    )
    processor.save_pretrained(tmp_path / "vit")
    images, labels = mnist(300)
    write_folder(tmp_path / "folder", images, labels)
    config = write_config(
        tmp_path / "run.yaml",
        f"""
name: vit
out_dir: {tmp_path / "runs"}
data: {spec("folder", tmp_path / "folder", augment="standard")}
teacher: {{model: "hf:{tmp_path / "vit"}", epochs: 1}}
student: {{model: mlp, args: {{hidden: [32]}}}}
train: {{epochs: 1}}
""",
    )
    assert main(["-q", "train", str(config)]) == 0
    summary = json.loads((tmp_path / "runs/vit/summary.json").read_text())
    assert summary["teacher"]["started_from"].startswith(f"fine-tuned from hf:{tmp_path / 'vit'} (pretrained; new head")
    assert summary["transform"] == {"size": [16, 16], "channels": 3, "resize": 16, "mean": [0.5] * 3, "std": [0.25] * 3}
    assert summary["classes"] == [str(c) for c in range(10)]


def test_fixed_parts_may_lie_in_other_folders(tmp_path: Path):
    for folder, count in (("photos", 3), ("held/out", 2)):
        for name in ("ant", "bee"):
            for i in range(count):
                picture(tmp_path / folder / name / f"{i}.png", "RGB")
    loaded = data.load(
        "folder", path=str(tmp_path / "photos"), test_path=str(tmp_path / "held/out"), images=data.ImageOptions()
    )
    assert (
        loaded.test_indices.tolist() == [6, 7, 8, 9]
        and loaded.inputs.file(9) == (tmp_path / "held/out/bee/1.png").absolute()
    )


@needs_mnist
@pytest.mark.e2e
def test_an_augmented_run_over_a_folder_resumes_exactly(tmp_path: Path, monkeypatch):
    """Killed after the student's first epoch and resumed, with a worker: the same weights as a straight run."""
    from safetensors.torch import load_file

    from distill import stages

    images, labels = mnist(120)
    write_folder(tmp_path / "folder", images, labels)
    given = spec("folder", tmp_path / "folder", channels=1, augment="standard", num_workers=1)
    configs = {
        name: write_config(tmp_path / f"{name}.yaml", RUN.format(name=name, out=tmp_path / "runs", data=given))
        for name in ("straight", "broken")
    }
    assert main(["-q", "train", str(configs["straight"]), *QUICK]) == 0
    real_fit = stages.fit
    monkeypatch.setattr(stages, "fit", stopped_after_an_epoch(real_fit, "student"))
    assert main(["-q", "train", str(configs["broken"]), *QUICK]) == 130
    monkeypatch.setattr(stages, "fit", real_fit)
    assert main(["-q", "train", str(configs["broken"]), *QUICK, "--resume"]) == 0
    straight, resumed = (load_file(tmp_path / f"runs/{name}/student.safetensors") for name in configs)
    assert all(torch.equal(straight[key], resumed[key]) for key in straight)


@needs_mnist
@pytest.mark.e2e
def test_a_teacher_cache_of_a_folder_is_tied_to_its_files(tmp_path: Path, capsys):
    images, labels = mnist(120)
    write_folder(tmp_path / "folder", images, labels)
    given = spec("folder", tmp_path / "folder", channels=1, augment="standard")
    trained = write_config(tmp_path / "t.yaml", RUN.format(name="teacher", out=tmp_path / "runs", data=given))
    assert main(["-q", "train", str(trained), *QUICK, "--set", "train.epochs=1"]) == 0
    cached = write_config(
        tmp_path / "c.yaml",
        RUN.format(name="cached", out=tmp_path / "runs", data=given).replace(
            "epochs: 4}",
            f'weights: "{tmp_path / "runs/teacher/teacher.safetensors"}", cache: "{tmp_path / "cache"}"}}\n'
            "cache: {views: 2}",
        ),
    )
    assert main(["-q", "cache", str(cached)]) == 0
    assert main(["-q", "train", str(cached), "--set", "scratch=false"]) == 0
    (tmp_path / "folder/0/00000.png").touch()  # the same name, another modification time: maybe new pixels
    assert main(["-q", "train", str(cached), "--set", "scratch=false", "--set", "name=again"]) == 2
    assert "run `distill cache` again" in capsys.readouterr().err


@needs_mnist
@pytest.mark.e2e
def test_two_processes_over_a_folder_train_what_one_trains(tmp_path: Path):
    """Augmented views drawn by (seed, epoch, image) in each process's workers: a data-parallel run over a
    folder trains the weights one process trains (an MLP teacher: batch norm's statistics would differ by the
    share of the batch each process sees)."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    images, labels = mnist(120)
    write_folder(tmp_path / "folder", images, labels)
    given = spec("folder", tmp_path / "folder", channels=1, augment="standard", num_workers=1)
    text = RUN.format(name="one", out=tmp_path / "runs", data=given)
    config = write_config(
        tmp_path / "run.yaml", text.replace("model: cnn, args: {channels: [8, 16], hidden: 32}", "model: mlp")
    )
    assert main(["-q", "train", str(config), *QUICK]) == 0
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "distill"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [*launch, "-q", "train", str(config), *QUICK, "--set", "name=two"], env=env, capture_output=True, timeout=300
    )
    assert done.returncode == 0, done.stderr.decode()
    one, two = (load_file(tmp_path / f"runs/{name}/student.safetensors") for name in ("one", "two"))
    assert all((one[key] - two[key]).abs().max() <= 1e-5 for key in one)
