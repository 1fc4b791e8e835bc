"""Exporting a language model (`task: lm`) whose student is our GPT: a file of token ids (batch, sequence) in,
logits (batch, sequence, vocabulary) out, both axes dynamic; checked on real test sequences and scored by its
test perplexity, measured as the run's summary measures it."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from distill._io import atomic_path
from distill.config import LMConfig
from distill.data.text import CharTokenizer
from distill.errors import first_line
from distill.export._shared import SHIP_BUDGET_S, keep_failed, run_fields
from distill.export.formats import FILES, WRITERS, load_exported
from distill.export.quantise import quantised
from distill.measure import rate, where_measured
from distill.pipeline import SavedRun
from distill.taps import logits_of
from distill.tasks.lm import build_experiment
from distill.tasks.perplexity import sequence_losses

PARITY_SEQUENCES = 256  # test sequences the parity check runs through both models
PARITY_LOGITS = 2**27  # the most logits one parity batch holds (512 MB of float32): fewer rows for a large vocabulary
AXES = {0: "batch", 1: "sequence"}
SPEED_ROWS = 8  # up to 8 full sequences a call, as the run's summary times tokens/s


class Exported(nn.Module):
    """An exported file's function as a module: what `sequence_losses` measures, as it measures the run's."""

    def __init__(self, predict: Callable[[Tensor], Tensor]):
        super().__init__()
        self.predict = predict

    def forward(self, ids: Tensor) -> Tensor:
        return self.predict(ids)


def students(run: SavedRun) -> tuple[nn.Module, nn.Module]:
    """The run's student as it ran (what the export is checked against) and as it ships: with LoRA adapters
    (peft) folded into the weights they adapt, in a second copy, so the export holds one plain model and needs
    no peft to run."""
    reference = run.net("student").eval()
    if not hasattr(reference, "merge_and_unload"):
        return reference, reference
    return reference, run.net("student").merge_and_unload().eval()


def perplexity(model: nn.Module, loader: DataLoader) -> float:
    """exp of the mean next-token cross-entropy over the counted tokens of `loader`: the summary's figure."""
    sums, counts = sequence_losses(model, loader, torch.device("cpu"))
    return math.exp(sums.sum() / counts.sum())


def tokens_per_second(predict: Callable[[Tensor], Tensor], context: int, vocab: int) -> float:
    """Tokens a second on the CPU on up to SPEED_ROWS full sequences of random ids a call, as the summary's."""
    with torch.inference_mode():
        sequences, _ = rate(predict, lambda rows: torch.randint(vocab, (rows, context)), SHIP_BUDGET_S, most=SPEED_ROWS)
    return sequences * context


def parity_batch(ids: Tensor, vocab: int, most: int = PARITY_SEQUENCES) -> int:
    """Rows per parity batch: `most`, or fewer where their logits would pass PARITY_LOGITS."""
    return max(1, min(most, PARITY_LOGITS // (ids.shape[1] * vocab)))


def sequence_parity(
    predict: Callable[[Tensor], Tensor], student: nn.Module, ids: Tensor, batch: int, atol: float
) -> tuple[dict[str, Any], str | None]:
    """The largest logit difference and the next-token agreement of the export with the PyTorch student on the
    test sequences `ids` in batches of `batch`, then one alone (a trace may have baked a batch size in), then
    at half the length (a sequence axis fixed at the context would fail); and what is wrong, if anything."""
    short = max(1, ids.shape[1] // 2)
    checks = [*ids.split(batch), ids[:1], ids[:batch, :short]]
    worst, agreed, positions = 0.0, 0, 0
    for case in checks:
        try:
            got = predict(case).float()
        except RuntimeError as e:  # a shape the export fixed
            return {}, f"it fails on a batch or sequence length of another size ({first_line(e)})"
        with torch.inference_mode():
            want = logits_of(student(case)).float()
        if got.shape != want.shape:
            return {}, f"it gives logits of shape {tuple(got.shape)} where the student gives {tuple(want.shape)}"
        worst = max(worst, (want - got).abs().max().item())
        agreed, positions = agreed + (want.argmax(-1) == got.argmax(-1)).sum().item(), positions + case.numel()
    rows = min(batch, len(ids))
    checked = f"{len(ids)} test sequences in batches of {rows}, 1 alone, {rows} cut to {short} tokens"
    parity = {"max_abs_diff": worst, "top1_agreement": agreed / positions, "checked": checked}
    if worst > atol:
        return parity, f"its logits differ from the PyTorch student's by up to {worst:.2e}, above --atol {atol:g}"
    return parity, None


def lm_metadata(run: SavedRun) -> dict[str, str]:
    """What a user of the exported file needs besides the weights, as strings: how text becomes its ids."""
    cfg, tokenizer = run.cfg, run.exp.tokenizer
    alphabet = {"alphabet": tokenizer.alphabet} if isinstance(tokenizer, CharTokenizer) else {}
    return {
        "task": "lm",
        "input": "token ids, int64, (batch, sequence); sequence at most the context",
        "output": "next-token logits, float32, (batch, sequence, vocabulary): position t scores token t + 1",
        "tokenizer": cfg.data.tokenizer,
        **alphabet,
        "vocab_size": json.dumps(tokenizer.vocab_size),
        "context": json.dumps(cfg.data.context),
        **run_fields(run),
    }


def pytorch_row(run: SavedRun, student: nn.Module) -> dict[str, Any]:
    """The PyTorch student's figures, measured here as the exports are: test perplexity, bytes, tokens/s."""
    with torch.inference_mode():
        speed = tokens_per_second(student, run.cfg.data.context, run.exp.tokenizer.vocab_size)
    return {
        "test_perplexity": perplexity(student, run.exp.test_loader),
        "size_bytes": (run.path / "student.safetensors").stat().st_size,
        "tokens_per_second": speed,
    }


def _figures(predict: Callable[[Tensor], Tensor], file: Path, *, run: SavedRun) -> dict[str, Any]:
    """An exported file's test perplexity, bytes on disk and tokens/s."""
    return {
        "test_perplexity": perplexity(Exported(predict), run.exp.test_loader),
        "size_bytes": file.stat().st_size,
        "tokens_per_second": tokens_per_second(predict, run.cfg.data.context, run.exp.tokenizer.vocab_size),
    }


def export_gpt(run: SavedRun, fmt: str, atol: float, int8: bool) -> dict[str, Any]:
    """Our GPT student as `fmt` (and dynamic int8), checked on the test sequences and scored beside the PyTorch
    student."""
    reference, student = students(run)
    ids, vocab = run.exp.splits.test.ids, run.exp.tokenizer.vocab_size
    results = {"measured_on": where_measured(), "task": "lm", "pytorch": pytorch_row(run, reference)}
    meta = {**lm_metadata(run), "test_perplexity": json.dumps(results["pytorch"]["test_perplexity"])}
    path = run.path / "export" / FILES[fmt]
    with atomic_path(path) as tmp:
        WRITERS[fmt](student, ids[:2], tmp, meta, axes=AXES, limits={"sequence": run.cfg.data.context})
        exported, _ = load_exported(tmp, fmt)
        parity, problem = sequence_parity(exported, reference, ids[:PARITY_SEQUENCES], parity_batch(ids, vocab), atol)
        if problem:
            raise keep_failed(tmp, path, problem)
        results[fmt] = {"file": path.name, **_figures(exported, tmp, run=run), **parity}
    if int8:  # dynamic only: static calibration pays on convolutions, and a GPT has none
        results.update(quantised(path, partial(_figures, run=run), "test_perplexity", results["onnx"]))
    return results


def evaluate_lm(model: nn.Module, cfg: LMConfig) -> dict[str, Any]:
    """The test perplexity of an exported language model on the test split `cfg` rebuilds."""
    exp = build_experiment(cfg)
    return {
        "data": exp.splits.description,
        "test_tokens": exp.splits.test.tokens,
        "test_perplexity": perplexity(model, exp.test_loader),
    }
