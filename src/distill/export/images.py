"""Exporting an image or table classifier (`task: classify`): parity on the test inputs, test accuracy, and
with --int8 the quantised files (static too for a conv net, calibrated on training inputs)."""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from distill._io import atomic_path
from distill.config import Config
from distill.data import Inputs, stacked
from distill.errors import first_line
from distill.export._shared import SHIP_BUDGET_S, keep_failed, run_fields
from distill.export.formats import FILES, WRITERS, load_exported
from distill.export.quantise import quantised
from distill.measure import costs, timing, where_measured
from distill.pipeline import SavedRun
from distill.taps import logits_of
from distill.tasks.classify import build_experiment

PARITY_SAMPLES = 1024  # test inputs the parity check runs through both models
CALIBRATION_SAMPLES = 256  # training inputs static quantisation calibrates its activation ranges on


class Deployable(nn.Module):
    """A trained model as it ships: inputs in, logits out (a Hugging Face output reduced to its logits)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, inputs: Tensor) -> Tensor:
        return logits_of(self.net(inputs))


def image_metadata(run: SavedRun) -> dict[str, str]:
    """What a user of the exported file needs besides the weights, as strings (ONNX metadata is strings); for
    image files, `transform`: the evaluation transform as `ImageTransform.to_dict` gives it (`distill predict`
    applies it)."""
    splits = run.exp.splits
    preprocessing = run.exp.data.preprocessing
    if splits.stats is not None:
        preprocessing += "; then each feature standardised as (x - mean) / std, with mean and std below"
    return {
        "classes": json.dumps(splits.classes),
        "input_shape": json.dumps(["batch", *splits.input_shape]),
        "preprocessing": preprocessing,
        **({"standardize": json.dumps(splits.stats)} if splits.stats is not None else {}),
        **({"transform": json.dumps(splits.transform.to_dict())} if splits.transform is not None else {}),
        **run_fields(run),
    }


def outputs(predict: Callable[[Tensor], Tensor], inputs: Inputs, batch: int = 256) -> Tensor:
    """`predict` over `inputs` (a tensor, or samples read as they are needed) in batches, as one float32 tensor:
    one batch of inputs in memory at a time."""
    return torch.cat([predict(stacked(inputs[i : i + batch])).float() for i in range(0, len(inputs), batch)])


def loader_outputs(predict: Callable[[Tensor], Tensor], loader: DataLoader) -> Tensor:
    """`predict` over the inputs of every batch of `loader` (a test loader: in order), as one float32 tensor."""
    return torch.cat([predict(batch["input"]).float() for batch in loader])


def accuracy_of(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of (N, C) logits against (N,) labels."""
    return (logits.argmax(-1) == labels).float().mean().item()


def _parity(
    predict: Callable[[Tensor], Tensor], student: nn.Module, inputs: Inputs, reference: Tensor, atol: float
) -> tuple[dict[str, float], str | None]:
    """The largest logit difference and the top-1 agreement of the export with the PyTorch student, on
    `inputs` in batches of 256 and alone (batch 1: a trace may have baked a batch size in); and what is wrong,
    if anything."""
    first = stacked(inputs[:1])
    try:
        got = outputs(predict, inputs)
        alone = predict(first).float()
    except RuntimeError as e:  # a shape the export fixed, met at another batch size
        return {}, f"it fails on a batch of another size ({first_line(e)})"
    with torch.inference_mode():
        reference_alone = student(first).float()
    diff = max((reference - got).abs().max().item(), (reference_alone - alone).abs().max().item())
    parity = {"max_abs_diff": diff, "top1_agreement": (reference.argmax(-1) == got.argmax(-1)).float().mean().item()}
    if diff > atol:
        return parity, f"its logits differ from the PyTorch student's by up to {diff:.2e}, above --atol {atol:g}"
    return parity, None


def _scored(predict: Callable[[Tensor], Tensor], path: Path, *, run: SavedRun) -> dict:
    """Test accuracy, bytes on disk and CPU speed of an exported file."""
    accuracy = accuracy_of(loader_outputs(predict, run.exp.test_loader), run.exp.splits.test.labels)
    shape = run.exp.splits.input_shape
    return {"accuracy": accuracy, "size_bytes": path.stat().st_size, **timing(predict, shape, budget_s=SHIP_BUDGET_S)}


def export_images(run: SavedRun, fmt: str, atol: float, int8: bool) -> dict[str, Any]:
    """The classifier of `run` as `fmt` (and int8), each file checked and scored beside the PyTorch student."""
    student = Deployable(run.net("student")).eval()
    test, shape = run.exp.splits.test, run.exp.splits.input_shape
    with torch.inference_mode():
        reference = loader_outputs(student, run.exp.test_loader)
    results = {
        "measured_on": where_measured(),
        "pytorch": {
            "accuracy": accuracy_of(reference, test.labels),
            "size_bytes": (run.path / "student.safetensors").stat().st_size,
            **costs(student, shape, budget_s=SHIP_BUDGET_S),
        },
    }
    path = run.path / "export" / FILES[fmt]
    with atomic_path(path) as tmp:
        WRITERS[fmt](student, stacked(test.inputs[:2]), tmp, image_metadata(run))
        exported, _ = load_exported(tmp, fmt)
        parity, problem = _parity(exported, student, test.inputs[:PARITY_SAMPLES], reference[:PARITY_SAMPLES], atol)
        if problem:
            raise keep_failed(tmp, path, problem)
        results[fmt] = {**_scored(exported, tmp, run=run), "file": path.name, **parity}
    if int8:
        convolutional = any(isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) for m in student.modules())
        calibration = stacked(run.exp.splits.train.inputs[:CALIBRATION_SAMPLES]) if convolutional else None
        score = partial(_scored, run=run)
        results.update(quantised(path, score, "accuracy", results["onnx"], calibration))
    return results


def evaluate_images(predict: Callable[[Tensor], Tensor], cfg: Config) -> dict[str, Any]:
    """The test accuracy of an exported classifier on the test split `cfg` rebuilds."""
    exp = build_experiment(cfg)
    return {
        "data": exp.splits.description,
        "test_samples": len(exp.splits.test),
        "accuracy": accuracy_of(loader_outputs(predict, exp.test_loader), exp.splits.test.labels),
    }
