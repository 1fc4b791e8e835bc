"""Optimizers and per-step learning-rate schedules, built from `TrainOptions`."""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

import torch
from torch import nn

from distill.train.options import TrainOptions


def build_optimizer(params: Iterable[nn.Parameter], options: TrainOptions) -> torch.optim.Optimizer:
    if options.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=options.lr,
            momentum=options.momentum,
            nesterov=options.nesterov,
            weight_decay=options.weight_decay,
        )
    return torch.optim.AdamW(params, lr=options.lr, weight_decay=options.weight_decay)


def lr_factor(step: int, options: TrainOptions, steps_per_epoch: int) -> float:
    """Multiplier of the peak lr at optimizer step `step` (0-based): warm-up, then the schedule."""
    epoch = step / steps_per_epoch  # fractional
    warmup = options.warmup_epochs
    if epoch < warmup:
        return 0.01 + 0.99 * epoch / warmup
    if options.schedule == "cosine":
        progress = (epoch - warmup) / max(options.epochs - warmup, 1e-8)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    if options.schedule == "multistep":
        return options.gamma ** bisect.bisect_right(options.milestones, int(epoch))
    return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer, options: TrainOptions, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A per-step schedule whose whole state is the step count, so resume is exact."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, options, steps_per_epoch))
