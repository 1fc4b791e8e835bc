"""What every training step and evaluation share, whatever trains: seeds, the device and its precision, a
batch moved there, the epoch told to the loader, a module's lazy parts sized, and evaluation."""

from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from distill._tensors import Batch
from distill.errors import DistillError
from distill.train import parallel
from distill.train.sharding import is_sharded

TOKENS = "tokens"  # what a module reports when its values are means over tokens, not over samples
SETUP_ROWS = 8  # rows of a batch that size a module's lazy parts: enough for losses that compare rows


class Callback(Protocol):
    def on_epoch_end(self, record: dict[str, Any]) -> None: ...


class EpochSeeded(Protocol):
    """A sampler or data set whose draws (order, augmentation) depend on (seed, epoch) alone: `fit` tells it
    both before each epoch, so a resumed or data-parallel run draws what an uninterrupted one does."""

    def seed_epoch(self, seed: int, epoch: int) -> None: ...


@dataclass
class History:
    """What a run produced: one record per epoch (train/ and val/ metrics) and the best epoch's record."""

    epochs: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise DistillError(f"train.device: '{name}' is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise DistillError(f"train.device is '{name}' but no CUDA device is available; use cpu or auto")
    return device


def to_device(batch: Batch, device: torch.device, channels_last: bool = False) -> Batch:
    moved = {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}
    if channels_last and moved["input"].ndim == 4:
        moved["input"] = moved["input"].contiguous(memory_format=torch.channels_last)
    return moved


def rows_of(batch: Batch) -> int:
    return len(next(v for v in batch.values() if isinstance(v, Tensor)))


def autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def is_better(value: float, best: dict[str, Any] | None, mode: str) -> bool:
    if best is None:
        return True
    return value > best["value"] if mode == "max" else value < best["value"]


def seed_epoch(loader: Iterable[Batch], seed: int, epoch: int) -> None:
    for part in (getattr(loader, "batch_sampler", None), getattr(loader, "dataset", None)):
        if callable(getattr(part, "seed_epoch", None)):
            part.seed_epoch(seed, epoch)


@torch.no_grad()
def evaluate(
    module: nn.Module,
    loader: Iterable[Batch],
    device: torch.device,
    precision: str = "fp32",
    channels_last: bool = False,
) -> dict:
    """Every scalar the module returns, averaged over samples (over tokens, for a module that reports the
    `tokens` its values are means over), under `val/`. One host sync at the end. In a data-parallel run each
    process takes every N-th batch (all of them when there are fewer batches than processes) and the sums
    are added up across processes. A sharded module's forward is a collective: a process with a batch fewer
    than the first runs its last one again, and counts it once."""
    module.eval()
    sums: dict[str, Tensor] = {}
    count, runs = 0, 0
    shards = parallel.world() if len(loader) >= parallel.world() else 1
    for i, batch in enumerate(loader):
        if i % shards != parallel.rank() % shards:
            continue
        batch = to_device(batch, device, channels_last)
        with autocast(device, precision):
            out = module(batch)
        runs += 1
        n = out.pop(TOKENS, None)
        n = rows_of(batch) if n is None else n
        for key, value in out.items():
            sums[key] = sums.get(key, 0.0) + value.detach().float() * n
        count += n
    if is_sharded(module) and runs < math.ceil(len(loader) / shards):
        with autocast(device, precision):
            module(batch)
    totals = torch.stack([t.double() for t in (torch.as_tensor(count, device=device), *sums.values())])
    count, *values = (parallel.all_sum(totals) if shards > 1 else totals).tolist()  # one reduction, one host sync
    if count == 0:
        raise DistillError("the validation data is empty: no batch to evaluate on")
    return {f"val/{key}": value / count for key, value in zip(sums, values, strict=True)}


@torch.no_grad()
def setup(module: nn.Module, batch: Batch) -> list[str]:
    """One forward in eval mode without gradients, before an optimizer exists: parameters a module sizes on its
    first batch (torch's Lazy modules, a Distiller's adapters, auxiliary heads) are then in place to be
    optimized and resumed. Returns the names of what the module reports; its mode is restored. Shapes are
    all it needs: it runs on the batch's first SETUP_ROWS rows."""
    was_training = module.training
    module.eval()
    rows = {key: value[:SETUP_ROWS] if isinstance(value, Tensor) else value for key, value in batch.items()}
    names = [name for name in module(rows) if name != TOKENS]
    module.train(was_training)
    return names
