"""Data-parallel runs on PyTorch's own layer: `torchrun --nproc-per-node N -m distill train CONFIG`.

torchrun (or `accelerate launch`, or a cluster scheduler) starts one process per device and sets RANK,
WORLD_SIZE, LOCAL_RANK and the rendezvous address; `session` joins them into one process group (gloo on
CPU, NCCL on CUDA). Every process builds the same run; each trains on its share of every global batch, the
trainable module wrapped in DistributedDataParallel, and the first process alone writes files. Outside
torchrun everything here is a no-op: a world of one.

The batches come from `EpochBatches`, whose order depends on (seed, epoch) alone: a run on N processes
takes the same global batches, in the same order, as a run on one, and a run resumed at another world size
continues with the batches it would have had.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, Sampler

from distill.errors import DistillError

TIMEOUT = timedelta(minutes=10)  # how long a collective waits for a silent peer before the run stops


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    """Whether this process writes the run's files: the first one, or the only one."""
    return rank() == 0


def barrier() -> None:
    """Wait for every process (e.g. until the first has written what the others read next)."""
    if world() > 1:
        dist.barrier()


def all_sum(tensor: Tensor) -> Tensor:
    """The sum of `tensor` over processes (itself in a world of one)."""
    if world() > 1:
        tensor = tensor.clone()
        dist.all_reduce(tensor)
    return tensor


def gathered(value: Any) -> list[Any]:
    """`value` of every process, in process order (a picklable object; [value] in a world of one)."""
    if world() == 1:
        return [value]
    values: list[Any] = [None] * world()
    dist.all_gather_object(values, value)
    return values


def broadcast_buffers(module: nn.Module) -> None:
    """The first process's buffers (batch-norm statistics) to every process, as DistributedDataParallel does
    before each training forward."""
    if world() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, 0)


def check_module(module: nn.Module) -> None:
    """Refuse, with several processes, a module a part of which says it needs one (`one_process_only`: why)."""
    if world() == 1:
        return
    for part in module.modules():
        reason = getattr(part, "one_process_only", None)
        if reason:
            raise DistillError(f"{type(part).__name__}: {reason}; run it without torchrun")


def launched() -> bool:
    """Whether a launcher started this process as one of several."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def first_process() -> bool:
    """Whether this is the process that reports (the launcher's rank 0, or the only one), joined or not."""
    return int(os.environ.get("RANK", "0")) == 0


@contextlib.contextmanager
def session(device: str) -> Iterator[None]:
    """Join the process group a launcher set up, for the length of a command; nothing without a launcher.
    `device` is train.device: NCCL when the processes train on CUDA devices, gloo otherwise."""
    if not launched() or dist.is_initialized():
        yield
        return
    cuda = device != "cpu" and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def local_device(device: torch.device) -> torch.device:
    """This process's device: its own GPU (LOCAL_RANK) when the run trains on CUDA with several processes."""
    if device.type != "cuda" or world() == 1:
        return device
    if device.index is not None:
        raise DistillError(
            f"train.device is {device}, one GPU for every process of a parallel run; set it to cuda or auto "
            "(each process then takes the GPU of its LOCAL_RANK)"
        )
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def check_batch(batch_size: int) -> None:
    """A global batch is split evenly over the processes, so a step means the same at any world size."""
    if batch_size % world():
        raise DistillError(
            f"data.batch_size={batch_size} cannot be split evenly over {world()} processes; set it to a multiple "
            f"of {world()} (it is the global batch: each process takes batch_size / {world()} rows), or launch "
            "a number of processes that divides it"
        )


def _mix(seed: int, epoch: int) -> int:
    """One generator seed from (seed, epoch): distinct pairs give unrelated permutations."""
    return (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + 1) % 2**63


class EpochBatches(Sampler[list[int]]):
    """Batches of positions in a data set: each epoch a permutation seeded by (seed, epoch) alone (or the
    positions in order, without `shuffle`), cut into global batches of `batch_size`, of which this process
    takes its contiguous share. `draws` positions an epoch (default: every position once; more repeats
    whole permutations, so a smaller part takes as many steps as a larger one).

    The training loop calls `seed_epoch(seed, epoch)` before each epoch. With several processes, a last
    partial batch of fewer rows than processes is left out of the epoch (a few of its rows, not the same
    ones each epoch): every process needs at least one row a step. Such a run then takes one step an epoch
    fewer than a single process, and its schedule follows its own step count."""

    def __init__(
        self, size: int, batch_size: int, *, shuffle: bool = True, draws: int | None = None, tagged: bool = False
    ):
        self.size, self.batch_size, self.shuffle, self.tagged = size, batch_size, shuffle, tagged
        self.draws = size if draws is None else draws
        self.epoch, self.seed = 0, 0

    def seed_epoch(self, seed: int, epoch: int) -> None:
        self.seed, self.epoch = seed, epoch

    def _order(self) -> Tensor:
        if not self.shuffle:
            return torch.arange(self.draws) % self.size
        generator = torch.Generator().manual_seed(_mix(self.seed, self.epoch))
        perms = [torch.randperm(self.size, generator=generator) for _ in range(math.ceil(self.draws / self.size))]
        return torch.cat(perms)[: self.draws]

    def rows(self, batch: int) -> int:
        """The rows of the epoch's `batch`-th global batch, over every process."""
        return min(self.batch_size, self.draws - batch * self.batch_size)

    def __len__(self) -> int:
        full, rest = divmod(self.draws, self.batch_size)
        return full + (rest >= world())  # a last batch of fewer rows than processes is left out

    def __iter__(self) -> Iterator[list[int]]:
        order, n, me = self._order(), world(), rank()
        for start in range(0, self.draws, self.batch_size):
            batch = order[start : start + self.batch_size]
            if len(batch) < n:
                return
            mine = torch.tensor_split(batch, n)[me].tolist()
            yield [(i, self.seed, self.epoch) for i in mine] if self.tagged else mine


def shuffled(data: Dataset, batch_size: int, workers: int = 0, draws: int | None = None) -> DataLoader:
    """Training batches of `data`, reshuffled each epoch by (seed, epoch) and split over the processes of a
    data-parallel run (`EpochBatches`); `draws` rows an epoch (default: each row once). A data set with
    `seed_epoch` gets each position as `(position, seed, epoch)`: its workers live across epochs."""
    tagged = callable(getattr(data, "seed_epoch", None))
    batches = EpochBatches(len(data), batch_size, draws=draws, tagged=tagged)
    return DataLoader(data, batch_sampler=batches, **loading(workers))


def loading(workers: int, *, persistent: bool = True) -> dict[str, Any]:
    """A DataLoader's options for `workers` worker processes: prefetching, writing batches to pinned memory
    when a CUDA device takes them, and (`persistent`, for the loaders an epoch goes through) kept across
    epochs; an evaluation loader's workers end with each pass, so idle ones do not hold memory."""
    if workers == 0:
        return {}
    return {"num_workers": workers, "persistent_workers": persistent, "pin_memory": torch.cuda.is_available()}
