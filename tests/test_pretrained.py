"""Pretrained teachers and students: Hugging Face image classifiers (`hf:FOLDER`, tiny ones saved here, no
downloads), weights whose head has another class count, a pretrained teacher fine-tuned before it teaches, and
where each model started in the summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TINY_RUN, write_config
from distill._io import relative_paths
from distill.cli import main
from distill.config import load_config
from distill.errors import ConfigError, DistillError
from distill.models import build_model
from distill.models.hf_image import preprocessing
from distill.pipeline import evaluate_run
from distill.taps import Taps, run_tapped
from distill.weights import load_fitting, start_of

transformers = pytest.importorskip("transformers")

SHAPE = (3, 16, 16)


def save_resnet(folder: Path, num_labels: int) -> Path:
    config = transformers.ResNetConfig(
        num_channels=3, embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], num_labels=num_labels
    )
    torch.manual_seed(0)
    transformers.ResNetForImageClassification(config).save_pretrained(folder)
    return folder


def save_vit(folder: Path, num_labels: int) -> Path:
    config = transformers.ViTConfig(
        image_size=16,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=num_labels,
    )
    torch.manual_seed(0)
    transformers.ViTForImageClassification(config).save_pretrained(folder)
    processor = transformers.ViTImageProcessor(
        size={"height": 16, "width": 16}, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3]
    )
    processor.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def hf_models(tmp_path_factory) -> dict[str, Path]:
    """A ResNet with 5 labels, one with 3 (the data's count), and a ViT with 7 and an image processor."""
    root = tmp_path_factory.mktemp("hf")
    return {
        "resnet5": save_resnet(root / "resnet5", 5),
        "resnet3": save_resnet(root / "resnet3", 3),
        "vit7": save_vit(root / "vit7", 7),
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> Path:
    """120 images (3, 16, 16) of 3 classes, each class a brighter shade: a tiny model learns them."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 120)
    inputs = rng.normal(size=(120, *SHAPE)) + labels[:, None, None, None]
    path = tmp_path_factory.mktemp("images") / "images.npz"
    np.savez(path, inputs=inputs.astype("float32"), labels=labels)
    return path


HF_RUN = """\
name: hf
out_dir: {out}
data: {{name: tensors, path: {data}, val_fraction: 0.25, test_fraction: 0.25, batch_size: 32}}
teacher: {{model: "hf:{teacher}", epochs: 1}}
student: {{model: mlp, args: {{hidden: [16]}}}}
method: {{kind: offline, terms: [{{loss: kd, temperature: 2.0, alpha: 0.5}}]}}
train: {{epochs: 1, optimizer: adamw, lr: 0.01, progress: false}}
"""


def hf_config(tmp_path: Path, images: Path, teacher: Path) -> Path:
    return write_config(tmp_path / "hf.yaml", HF_RUN.format(out=tmp_path / "runs", data=images, teacher=teacher))


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# --- Hugging Face image classifiers ---------------------------------------------------------------------------


def test_an_hf_classifier_gets_a_new_head_for_the_data_and_keeps_its_tap_paths(hf_models):
    folder = hf_models["vit7"]
    model = build_model(f"hf:{folder}", input_shape=SHAPE, num_classes=3, field="teacher")
    saved = transformers.ViTForImageClassification.from_pretrained(folder)
    assert model.classifier.out_features == 3 and model.config.num_labels == 3
    torch.testing.assert_close(
        model.vit.embeddings.patch_embeddings.projection.weight, saved.vit.embeddings.patch_embeddings.projection.weight
    )
    start = start_of(model)
    assert start.pretrained and start.new_head == 3
    assert str(start) == f"hf:{folder} (pretrained; new head for 3 classes)"
    x = torch.randn(2, *SHAPE)
    with Taps(model, {"block": "vit.layers.0"}) as taps:
        logits = model(x).logits
    assert logits.shape == (2, 3) and taps["block"].shape == (2, 5, 16)  # 4 patches and the class token
    logits, features = run_tapped(model, x, ["hidden_states.1"])
    assert logits.shape == (2, 3) and features["hidden_states.1"].shape == (2, 5, 16)


def test_an_hf_classifier_whose_head_fits_is_loaded_whole(hf_models):
    folder = hf_models["resnet3"]
    model = build_model(f"hf:{folder}", input_shape=SHAPE, num_classes=3)
    saved = transformers.ResNetForImageClassification.from_pretrained(folder)
    torch.testing.assert_close(model.classifier[1].weight, saved.classifier[1].weight)
    assert str(start_of(model)) == f"hf:{folder} (pretrained)" and start_of(model).new_head is None


def test_preprocessing_reads_the_image_processor(hf_models, tmp_path):
    assert preprocessing(f"hf:{hf_models['vit7']}") == {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.25, 0.3], "size": 16}
    assert preprocessing(f"hf:{hf_models['resnet5']}") is None  # saved without an image processor
    assert preprocessing("mlp") is None
    convnext = tmp_path / "convnext"
    convnext.mkdir()
    stats = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225], "crop_pct": 0.875}
    (convnext / "preprocessor_config.json").write_text(json.dumps({**stats, "size": {"shortest_edge": 224}}))
    expected = {"mean": stats["image_mean"], "std": stats["image_std"], "size": 224, "crop_pct": 0.875}
    assert preprocessing(f"hf:{convnext}") == expected


def test_an_hf_name_that_cannot_be_loaded_is_one_line(hf_models, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as e:
        build_model("hf:nobody-here/no-such-model", input_shape=SHAPE, num_classes=3, field="teacher")
    assert str(e.value).startswith("teacher.model: hf:nobody-here/no-such-model is not in the local Hugging Face cache")
    assert "downloads are off" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="student.model: hf:/no/such/folder: no such folder"):
        build_model("hf:/no/such/folder", input_shape=SHAPE, num_classes=3, field="student")
    monkeypatch.setitem(sys.modules, "transformers", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"needs the transformers package: pip install 'distill\[hf\]'"):
        build_model(f"hf:{hf_models['vit7']}", input_shape=SHAPE, num_classes=3, field="teacher")


# --- weights with another class count -------------------------------------------------------------------------


def mlp(num_classes: int, hidden: list[int]) -> torch.nn.Module:
    return build_model("mlp", input_shape=(1, 8, 8), num_classes=num_classes, args={"hidden": hidden})


def test_weights_for_another_class_count_load_all_but_the_head(tmp_path):
    torch.manual_seed(1)
    five = mlp(5, [32])
    save_file(five.state_dict(), tmp_path / "five.safetensors")
    torch.manual_seed(2)
    three = mlp(3, [32])
    head = three.fc.weight.clone()
    assert load_fitting(three, tmp_path / "five.safetensors") == ["fc.weight", "fc.bias"]
    torch.testing.assert_close(three.hidden1[0].weight, five.hidden1[0].weight)
    torch.testing.assert_close(three.fc.weight, head)  # left as the model made it
    assert load_fitting(mlp(5, [32]), tmp_path / "five.safetensors") == []  # everything fits


def test_weights_that_differ_before_the_head_are_refused(tmp_path):
    save_file(mlp(5, [32]).state_dict(), tmp_path / "five.safetensors")
    with pytest.raises(DistillError) as e:
        load_fitting(mlp(3, [16]), tmp_path / "five.safetensors")
    assert "hidden1.0.weight is (32, 64) in the file, (16, 64) in the model" in str(e.value)
    assert "only the final classifier, fc, may differ" in str(e.value) and "\n" not in str(e.value)


# --- runs ------------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_an_hf_teacher_is_fine_tuned_for_the_data_then_distilled(tmp_path, images, hf_models, capsys):
    folder = hf_models["resnet5"]
    code, out, err = run_cli(capsys, "train", hf_config(tmp_path, images, folder))
    assert code == 0, err
    run_dir = tmp_path / "runs" / "hf"
    summary = json.loads((run_dir / "summary.json").read_text())
    fine_tuned = f"fine-tuned from hf:{folder} (pretrained; new head for 3 classes) for 1 epochs"
    assert summary["teacher"]["started_from"] == fine_tuned
    assert summary["student"]["started_from"] == summary["scratch"]["started_from"] == "random (train.seed=0)"
    assert (run_dir / "teacher" / "metrics.jsonl").exists()  # a teacher stage trained here
    teacher = load_file(run_dir / "teacher.safetensors")
    pretrained = load_file(folder / "model.safetensors")
    assert teacher["classifier.1.weight"].shape == (3, 16)
    assert not torch.equal(
        teacher["resnet.embedder.embedder.convolution.weight"],
        pretrained["resnet.embedder.embedder.convolution.weight"],
    )
    assert "made a new one for the data's 3" in out and f"teacher: {relative_paths(fine_tuned)}" in out
    assert evaluate_run(run_dir)["teacher"]["started_from"] == fine_tuned  # the run's record, not a rebuild's


@pytest.mark.e2e
def test_an_hf_teacher_with_a_new_head_and_no_epochs_is_refused(tmp_path, images, hf_models, capsys):
    config = hf_config(tmp_path, images, hf_models["resnet5"])
    code, _, err = run_cli(capsys, "train", config, "--set", "teacher.epochs=null")
    assert code == 2
    assert err == (
        "distill: error: teacher.epochs: the teacher's head is new for the data's 3 classes; set teacher.epochs "
        "to fine-tune it\n"
    )
    assert not (tmp_path / "runs").exists()


@pytest.mark.e2e
def test_an_hf_teacher_whose_head_fits_teaches_an_hf_student_as_given(tmp_path, images, hf_models, capsys):
    config = hf_config(tmp_path, images, hf_models["resnet3"])
    student = f"student={{model: 'hf:{hf_models['vit7']}'}}"
    code, _, err = run_cli(capsys, "train", config, "--set", "teacher.epochs=null", "--set", student)
    assert code == 0, err
    run_dir = tmp_path / "runs" / "hf"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["teacher"]["started_from"] == f"hf:{hf_models['resnet3']} (pretrained)"
    assert summary["student"]["started_from"] == f"hf:{hf_models['vit7']} (pretrained; new head for 3 classes)"
    assert not (run_dir / "teacher").exists()  # used as it came, not trained
    saved = transformers.ResNetForImageClassification.from_pretrained(hf_models["resnet3"]).state_dict()
    teacher = load_file(run_dir / "teacher.safetensors")
    torch.testing.assert_close(teacher["classifier.1.weight"], saved["classifier.1.weight"])


@pytest.fixture
def digits_weights(tmp_path) -> dict[str, Path]:
    """State dicts of TINY_RUN's teacher and student architectures with a head for 5 classes (digits has 10)."""
    paths = {"teacher": tmp_path / "teacher5.safetensors", "student": tmp_path / "student5.pt"}
    save_file(mlp(5, [32]).state_dict(), paths["teacher"])
    torch.save(mlp(5, [8]).state_dict(), paths["student"])
    return paths


@pytest.mark.e2e
def test_teacher_weights_for_another_class_count_are_fine_tuned(tmp_path, digits_weights, capsys):
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    teacher, student = digits_weights["teacher"], digits_weights["student"]
    code, _, err = run_cli(capsys, "train", config, "--set", f"teacher.weights={teacher}")
    assert code == 2 and "teacher.epochs: the teacher's head is new for the data's 10 classes" in err
    sets = ["--set", f"teacher.weights={teacher}", "--set", "teacher.epochs=1", "--set", f"student.weights={student}"]
    code, out, err = run_cli(capsys, "train", config, *sets)
    assert code == 0, err
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["teacher"]["started_from"].startswith(f"fine-tuned from {teacher} sha256 ")
    assert summary["teacher"]["started_from"].endswith(" (new head for 10 classes) for 1 epochs")
    assert summary["student"]["started_from"].startswith(f"{student} sha256 ")
    assert summary["student"]["started_from"].endswith(" (new head for 10 classes)")
    assert "teacher: fc.weight, fc.bias made new for the data's 10 classes" in out


def test_teacher_epochs_with_weights_fine_tunes_a_classifier_but_not_a_language_model(tmp_path, tiny_config):
    cfg = load_config(tiny_config, ["teacher.weights=t.safetensors", "teacher.epochs=2"])
    assert cfg.teacher.epochs == 2
    with pytest.raises(ConfigError, match="teacher.cache holds the outputs of teacher.weights as they are"):
        load_config(tiny_config, ["teacher.weights=t.safetensors", "teacher.epochs=2", "teacher.cache=c"])
    lm = write_config(
        tmp_path / "lm.yaml",
        "task: lm\nname: lm\ndata: {path: t.txt}\nteacher: {model: gpt, weights: t.safetensors, epochs: 2}\n"
        "student: {model: gpt}\n",
    )
    with pytest.raises(ConfigError, match="teacher.epochs applies only when the teacher is trained here"):
        load_config(lm)
