"""`distill export`: the distilled student alone, out of PyTorch, checked against it on real test inputs.

runs/NAME/export/student.onnx              --format onnx (the default); student.torchscript.pt, student.pt2
runs/NAME/export/student.int8.onnx         --int8 (classifiers): weights int8, activations quantised at run time
runs/NAME/export/student.int8-static.onnx  --int8 on a conv net: also static, calibrated on training inputs
runs/NAME/export/student/                  a Hugging Face language model: its save_pretrained folder
runs/NAME/export/FILE.failed               an export whose logits strayed past --atol, kept for a look
runs/NAME/export/export.json               what each export scored: parity, test accuracy or perplexity, size,
                                           CPU speed

Every export holds the run's metadata (its name, its config and that config's sha256; a classifier's classes,
input shape and preprocessing, and for image files the evaluation transform that `distill predict` applies; a
language model's tokenizer and context), so `distill eval PATH` re-reads the test split it was made for.

formats.py   writing and reading ONNX, TorchScript and torch.export, with dynamic axes
images.py    classifiers (`task: classify`): parity on the test inputs, accuracy, int8
lm.py        our GPT (`task: lm`): token ids in, logits out; parity on test sequences, perplexity
hf.py        a Hugging Face student: the folder `AutoModelForCausalLM.from_pretrained` loads
command.py   `export` and `evaluate_exported`: which of those a run or a path gets
"""

from __future__ import annotations

from distill.export._shared import SHIP_BUDGET_S
from distill.export.command import evaluate_exported, export
from distill.export.formats import FILES, format_of, load_exported, onnx_available, write_onnx
from distill.export.images import Deployable, accuracy_of, image_metadata, loader_outputs, outputs
from distill.export.lm import lm_metadata
from distill.pipeline import SavedRun


def metadata(run: SavedRun) -> dict[str, str]:
    """What a user of the run's exported student needs besides the weights, as strings (ONNX metadata is
    strings): a classifier's classes and preprocessing, or a language model's tokenizer and context."""
    return lm_metadata(run) if run.cfg.task == "lm" else image_metadata(run)


__all__ = [
    "FILES",
    "SHIP_BUDGET_S",
    "Deployable",
    "accuracy_of",
    "evaluate_exported",
    "export",
    "format_of",
    "load_exported",
    "loader_outputs",
    "metadata",
    "onnx_available",
    "outputs",
    "write_onnx",
]
