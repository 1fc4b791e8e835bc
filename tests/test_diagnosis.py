"""The diagnosis: a verdict on the test split with its interval, causes read on validation."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from conftest import TINY_RUN, write_config
from distill.cli import main
from distill.diagnosis import calibration_error, diagnose
from distill.tasks.accuracy import Outputs
from distill.verdict import paired_interval

LABELS = torch.arange(200) % 4


def outputs(right: float, seed: int = 0) -> Outputs:
    """Logits that are right on the first `right` share of the samples, on both splits."""
    logits = torch.nn.functional.one_hot((LABELS + 1) % 4, 4).float() * 3
    n = round(right * len(LABELS))
    logits[:n] = torch.nn.functional.one_hot(LABELS[:n], 4).float() * 3
    return Outputs(val=logits, test=logits)


@pytest.mark.parametrize(
    "student, scratch, verdict",
    [(0.9, 0.6, "helped"), (0.6, 0.9, "negative_transfer"), (0.7, 0.7, "no_difference"), (0.71, 0.7, "no_difference")],
)
def test_the_verdict_follows_the_paired_interval(student, scratch, verdict):
    found = diagnose({"student": [outputs(student)], "scratch": [outputs(scratch)]}, LABELS, LABELS, temperature=None)
    assert found["verdict"] == verdict
    assert found["margin"] == pytest.approx(student - scratch)
    low, high = found["interval"]
    assert low <= found["margin"] <= high


def test_the_interval_narrows_with_more_samples_and_covers_the_mean():
    small = paired_interval(torch.tensor([1.0, 0.0, -1.0, 1.0] * 10))
    large = paired_interval(torch.tensor([1.0, 0.0, -1.0, 1.0] * 1000))
    assert small[0] < 0.25 < small[1] and large[0] < 0.25 < large[1]
    assert large[1] - large[0] < (small[1] - small[0]) / 5


def test_calibration_error_of_a_confident_wrong_model_and_a_calibrated_one():
    labels = torch.zeros(100, dtype=torch.long)
    confident_wrong = torch.tensor([[0.0, 1.0]]).repeat(100, 1)  # always sure of class 1, never right
    assert calibration_error(confident_wrong, labels) == pytest.approx(1.0)
    calibrated = torch.tensor([[0.7, 0.3]]).repeat(100, 1)
    labels[:30] = 1  # right 70% of the time at confidence 0.7
    assert calibration_error(calibrated, labels) == pytest.approx(0.0, abs=1e-6)


def run(tmp_path, capsys, text, *overrides):
    tmp_path.mkdir(parents=True, exist_ok=True)
    config = write_config(tmp_path / "c.yaml", text)
    code = main(["-q", "train", str(config), *overrides])
    out, err = capsys.readouterr()
    assert code == 0, err
    return json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text()), out


@pytest.mark.e2e
def test_a_wrong_teacher_is_diagnosed_as_negative_transfer(tmp_path, capsys):
    # a teacher trained here, then made to name the wrong class: its class c becomes c + 1
    good, _ = run(tmp_path / "good", capsys, TINY_RUN.format(out=tmp_path / "good" / "runs"))
    weights = load_file(tmp_path / "good" / "runs" / "tiny" / "teacher.safetensors")
    for key in ("fc.weight", "fc.bias"):
        weights[key] = weights[key].roll(1, dims=0)
    save_file(weights, tmp_path / "wrong.safetensors")
    wrong = TINY_RUN.replace(
        "teacher: {{model: mlp, args: {{hidden: [32]}}}}",
        "teacher: {{model: mlp, args: {{hidden: [32]}}, weights: {w}}}",
    )
    summary, out = run(
        tmp_path,
        capsys,
        wrong.format(out=tmp_path / "runs", w=tmp_path / "wrong.safetensors"),
        "--set",
        "method.terms=[{loss: kd, temperature: 2.0, alpha: 0.1}]",
        "--set",
        "train.epochs=6",
    )
    diagnosis = summary["diagnosis"]
    assert diagnosis["verdict"] == "negative_transfer" and diagnosis["interval"][1] < 0, out
    assert summary["teacher"]["accuracy"] < 0.2 and good["teacher"]["accuracy"] > 0.7
    assert "teacher_not_better" in [cause["cause"] for cause in diagnosis["causes"]]
    assert any("better teacher" in suggestion for suggestion in diagnosis["suggestions"])
    assert "diagnosis: negative transfer" in out and "why: the teacher's validation accuracy" in out


@pytest.mark.e2e
def test_a_teacher_that_knows_more_labels_is_diagnosed_as_helping(tmp_path, capsys):
    few_labels = [
        "--set",
        "data.labelled_per_class=3",
        "--set",
        "train.epochs=10",
        "--set",
        "seeds=[0, 1]",
    ]
    summary, out = run(tmp_path, capsys, TINY_RUN.format(out=tmp_path / "runs"), *few_labels)
    diagnosis = summary["diagnosis"]
    assert diagnosis["verdict"] == "helped" and diagnosis["interval"][0] > 0
    assert summary["student"]["seeds"] == summary["scratch"]["seeds"] == 2 and summary["teacher"]["seeds"] == 1
    assert len(summary["student"]["accuracies"]) == 2 and summary["seeds"] == [0, 1]
    assert "diagnosis: distillation helped" in out and "mean of 2 seeds" in out
