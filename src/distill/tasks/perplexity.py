"""What a language-model run reports on each model: validation and test perplexity (seeds averaged, with their
spread), parameters and speed; and the verdict, a paired bootstrap over test sequences of the per-token
cross-entropy of the student alone minus the student's. Perplexity is exp of the mean next-token cross-entropy
over the counted tokens of a part."""

from __future__ import annotations

import math
import statistics
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from distill.data.text import UNLABELLED
from distill.losses.token import shift_for_next_token
from distill.measure import SUMMARY_S, THREADS, rate, where_measured
from distill.models import count_params
from distill.tasks.base import started_from
from distill.train import resolve_device
from distill.verdict import paired_verdict

if TYPE_CHECKING:
    from distill.tasks.base import Task


@torch.no_grad()
def sequence_losses(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per sequence: the summed next-token cross-entropy over its counted tokens, and their count."""
    model.eval().to(device)
    sums, counts = [], []
    for batch in loader:
        ids, labels = batch["input"].to(device), batch["label"].to(device)
        logits, targets = shift_for_next_token(model(ids).float(), labels)
        nll = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=UNLABELLED, reduction="none"
        )
        sums.append(nll.sum(1).cpu())
        counts.append((targets != UNLABELLED).sum(1).cpu())
    return torch.cat(sums), torch.cat(counts)


def tokens_per_second(model: nn.Module, batch: int, context: int, vocab: int, budget_s: float) -> float:
    """Inference throughput on the CPU, one thread, on up to `batch` sequences of random ids a call: quick,
    within about `budget_s` however large the model (`measure.rate`)."""
    model = model.eval().cpu()

    def ids(rows: int) -> Tensor:
        return torch.randint(vocab, (rows, context))

    with torch.inference_mode():
        sequences, _ = rate(model, ids, budget_s, threads=THREADS, most=batch)
    return sequences * context


def summarize(exp: Task, runs: list[dict[str, nn.Module]]) -> dict[str, Any]:
    cfg, device = exp.cfg, resolve_device(exp.cfg.train.device)
    test_losses: dict[str, list[tuple[Tensor, Tensor]]] = {}
    summary: dict[str, Any] = {"data": exp.splits.description, "models": list(runs[0])}
    quick = SUMMARY_S / len(runs[0])  # each model's share of the time the summary's speed figures take
    for name in runs[0]:
        nets = [run[name] for run in runs] if name != "teacher" else [runs[0]["teacher"]]
        val = [sequence_losses(net, exp.val_loader, device) for net in nets]
        test_losses[name] = [sequence_losses(net, exp.test_loader, device) for net in nets]
        val_ppl = [math.exp(s.sum() / c.sum()) for s, c in val]
        test_ppl = [math.exp(s.sum() / c.sum()) for s, c in test_losses[name]]
        spread = (
            {"test_perplexity_std": statistics.stdev(test_ppl), "test_perplexities": test_ppl} if len(nets) > 1 else {}
        )
        summary[name] = {
            "val_perplexity": statistics.fmean(val_ppl),
            "test_perplexity": statistics.fmean(test_ppl),
            "seeds": len(nets),
            **spread,
            "params": count_params(nets[0]),
            **({} if name == "teacher" else {"trainable_params": count_params(nets[0], trainable=True)}),
            "tokens_per_second": tokens_per_second(nets[0], 8, cfg.data.context, exp.tokenizer.vocab_size, quick),
            "started_from": started_from(nets),
        }
    summary["measured_on"] = where_measured()
    summary["test_tokens"] = exp.splits.test.tokens
    if "scratch" in test_losses:
        summary["diagnosis"] = diagnose(test_losses)
    return summary


def diagnose(test_losses: dict[str, list[tuple[Tensor, Tensor]]]) -> dict[str, Any]:
    """Did distillation lower the student's test cross-entropy below the student alone's? Per test sequence,
    the student alone's mean loss minus the student's (seeds averaged), with a paired bootstrap interval over
    sequences; in nats per token, > 0 when distillation helped."""
    counted = test_losses["student"][0][1] > 0  # a sequence without a counted token says nothing

    def per_sequence(runs: list[tuple[Tensor, Tensor]]) -> Tensor:
        return torch.stack([s[counted] / c[counted] for s, c in runs]).mean(0)

    differences = per_sequence(test_losses["scratch"]) - per_sequence(test_losses["student"])
    causes = []
    if per_sequence(test_losses["teacher"]).mean().item() >= per_sequence(test_losses["scratch"]).mean().item():
        causes.append(
            "the teacher is no better than the student alone on test: it has nothing to teach; train it longer or "
            "take a larger one"
        )
    return {
        **paired_verdict(differences),
        "method": f"paired bootstrap over the {len(differences)} test sequences, nats per token, seeds averaged",
        "causes": causes,
    }
