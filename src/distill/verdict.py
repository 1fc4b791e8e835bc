"""Did distillation pay? One verdict for every task: the mean of per-sample differences between the student
and the student alone (correct or not; a sequence's loss), with a paired bootstrap interval."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

RESAMPLES = 2000
LEVEL = 0.95


def paired_interval(differences: Tensor, *, seed: int = 0) -> tuple[float, float]:
    """The central LEVEL interval of the mean of per-sample `differences` (N,), by paired bootstrap: the same
    resampled samples for both models, RESAMPLES times."""
    generator = torch.Generator().manual_seed(seed)
    means = []
    for _ in range(0, RESAMPLES, 100):  # 100 resamples at a time: bounded memory on large test sets
        rows = torch.randint(len(differences), (100, len(differences)), generator=generator)
        means.append(differences[rows].mean(1))
    tail = (1 - LEVEL) / 2
    low, high = torch.quantile(torch.cat(means), torch.tensor([tail, 1 - tail]))
    return low.item(), high.item()


def paired_verdict(differences: Tensor) -> dict[str, Any]:
    """`helped` when the interval of the mean difference (student better: > 0) lies above zero,
    `negative_transfer` below it, else `no_difference`; with the margin and the interval."""
    low, high = paired_interval(differences)
    verdict = "helped" if low > 0 else "negative_transfer" if high < 0 else "no_difference"
    return {"verdict": verdict, "margin": differences.mean().item(), "interval": [low, high]}
