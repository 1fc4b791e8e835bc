"""Optimizers and per-step learning-rate schedules, built from `TrainOptions`: one of each per trained part."""

from __future__ import annotations

import bisect
import math
import warnings
from collections.abc import Iterable
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from distill.errors import DistillError
from distill.train.checkpoint import parts_of
from distill.train.options import TrainOptions
from distill.train.sharding import all_finite, full_state, shard_optimizer_state, whole


class NonfiniteCheck(Protocol):
    def check(self, value: Tensor, step: int) -> None: ...


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


class Optimizers:
    """One optimizer and learning-rate schedule per trained part of a module (see `parts_of`): peers trained
    together each keep their own state, and each one's gradient norm is clipped on its own."""

    def __init__(self, module: nn.Module, options: TrainOptions, steps_per_epoch: int):
        self.params = {
            name: [p for p in part.parameters() if p.requires_grad] for name, part in parts_of(module).items()
        }
        covered = sum(p.numel() for params in self.params.values() for p in params)
        if covered != sum(p.numel() for p in module.parameters() if p.requires_grad):
            raise DistillError(f"{type(module).__name__}.trained_parts() leaves some trained parameters out")
        self.optimizers = {name: build_optimizer(params, options) for name, params in self.params.items()}
        self.schedulers = {
            name: build_scheduler(optimizer, options, steps_per_epoch) for name, optimizer in self.optimizers.items()
        }
        self.clip_grad_norm = options.clip_grad_norm

    def step(self, window: NonfiniteCheck, step: int) -> None:
        for name, optimizer in self.optimizers.items():
            if self.clip_grad_norm is not None:
                window.check(whole(nn.utils.clip_grad_norm_(self.params[name], self.clip_grad_norm)), step)
            optimizer.step()
            self.schedulers[name].step()
            optimizer.zero_grad(set_to_none=True)

    def divide_grads(self, divisor: Tensor) -> None:
        for param in self.all_params():
            if param.grad is not None:
                param.grad.div_(divisor)

    def grads_finite(self) -> bool:
        """Whether every gradient is finite (one host sync)."""
        return all_finite([p.grad for p in self.all_params() if p.grad is not None])

    def skip(self) -> None:
        """Drop this step's gradients: no update, while the schedule moves on as the step count does."""
        for name, optimizer in self.optimizers.items():
            optimizer.zero_grad(set_to_none=True)
            with warnings.catch_warnings():  # torch warns of a schedule step before any optimizer step
                warnings.simplefilter("ignore", UserWarning)
                self.schedulers[name].step()

    @property
    def lr(self) -> float:
        return next(iter(self.schedulers.values())).get_last_lr()[0]  # every part follows the same schedule

    def all_params(self) -> list[nn.Parameter]:
        return [p for params in self.params.values() for p in params]

    def state_dict(self) -> dict[str, Any]:
        """The state to resume from, whole as an unsharded run's. Sharded, every process calls it and the first
        gets it (see `full_state`)."""
        return {
            "optimizer": {name: full_state(optimizer.state_dict()) for name, optimizer in self.optimizers.items()},
            "scheduler": {name: scheduler.state_dict() for name, scheduler in self.schedulers.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state["optimizer"]) != set(self.optimizers):
            raise DistillError(
                f"the checkpoint holds optimizer state for {sorted(state['optimizer'])}, not for this module's "
                f"parts {sorted(self.optimizers)}: another version of distill or another module wrote it; "
                "start the run again without --resume"
            )
        for name, optimizer in self.optimizers.items():
            optimizer.load_state_dict(shard_optimizer_state(state["optimizer"][name], optimizer))
            self.schedulers[name].load_state_dict(state["scheduler"][name])
