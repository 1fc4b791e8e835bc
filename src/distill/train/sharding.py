"""Sharded runs (`train.shard: true` under torchrun): PyTorch's FSDP2 for a model whose training state does not
fit one device.

Each of N processes holds 1/N of the trained module's parameters, gradients and optimizer state. `fully_shard`
makes each block (an element of an nn.ModuleList or nn.Sequential that holds parameters: a residual block, a
transformer layer) a unit that is gathered for its forward and backward and freed after; the rest of the
module is one more unit. A frozen teacher the module runs has its blocks sharded too, gathered for its
forward alone; its other weights (embeddings, head) stay whole on every process.

What trains is a copy. The module handed to `fit` waits on the CPU and gets the full weights back at every
epoch's end (for the checkpoint, and as the result), so what follows a sharded `fit` sees an ordinary module.
Checkpoints hold the full state, as an unsharded run's do: a run resumes sharded or not, at any number of
processes.
"""

from __future__ import annotations

import contextlib
import copy
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, fully_shard
from torch.distributed.tensor import DTensor, distribute_tensor

from distill.train import parallel

logger = logging.getLogger(__name__)
_CONTAINERS = (nn.ModuleList, nn.Sequential)


@runtime_checkable
class RunsFrozen(Protocol):
    """A trained module that runs a frozen model held apart from its parameters (a live teacher)."""

    def shard_frozen(self, shard: Callable[[nn.Module], None]) -> None:
        """Shard the frozen models it runs, in place, with `shard`; every process then runs them at every
        batch, since their forward is a collective."""


def blocks(model: nn.Module) -> list[nn.Module]:
    """The outermost elements of `model`'s ModuleLists and Sequentials that hold parameters, in order."""
    found = []
    for child in model.children():
        if isinstance(model, _CONTAINERS) and any(True for _ in child.parameters()):
            found.append(child)
        else:
            found.extend(blocks(child))
    return found


def is_sharded(module: nn.Module) -> bool:
    """Whether `module` is (the root of) a sharded module: its forward is then a collective."""
    return isinstance(module, FSDPModule)


def whole(tensor: Tensor) -> Tensor:
    """A sharded tensor made whole, where its shards are (a collective: every process calls it); others as
    they are."""
    return tensor.detach().full_tensor() if isinstance(tensor, DTensor) else tensor


def full_state(state: Any) -> Any:
    """`state` (dicts and lists of tensors: an optimizer's state dict) as an unsharded run holds it: every
    sharded tensor made whole, one at a time, and kept in the CPU memory of the first process alone, which
    writes it (the others hold None in its place). Every process calls it, in the same order."""
    if isinstance(state, dict):
        return {key: full_state(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(full_state(value) for value in state)
    if isinstance(state, DTensor):
        tensor = whole(state)
        return tensor.cpu() if parallel.is_main() else None
    return state


def shard_optimizer_state(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A saved (whole) optimizer state dict with each tensor shaped like its parameter (momentum, Adam's
    moments) cut as the parameter is: this process's shard, with no communication (every process read the
    same file). Other entries, such as the step count, stay as they are."""
    params = [param for group in optimizer.param_groups for param in group["params"]]
    if not any(isinstance(param, DTensor) for param in params):
        return state
    per_param = {}
    for index, values in state["state"].items():
        param = params[index]
        per_param[index] = {
            key: _cut_like(value, param) if isinstance(value, Tensor) and value.shape == param.shape else value
            for key, value in values.items()
        }
    return {**state, "state": per_param}


def _cut_like(value: Tensor, param: Tensor) -> Tensor:
    if not isinstance(param, DTensor):
        return value
    value = value.to(param.device_mesh.device_type)
    return distribute_tensor(value, param.device_mesh, param.placements, src_data_rank=None)


def all_finite(tensors: list[Tensor]) -> bool:
    """Whether every value of `tensors` is finite, over every process's shard of the sharded ones (one host
    sync, and one reduction when some are sharded)."""
    if not tensors:
        return True
    local = [t.to_local() if isinstance(t, DTensor) else t for t in tensors]
    finite = torch.stack([t.isfinite().all() for t in local]).all()
    if any(isinstance(t, DTensor) for t in tensors):
        return parallel.all_sum(finite.logical_not().int()).item() == 0
    return bool(finite.item())


@contextlib.contextmanager
def without_gradient_sync(module: nn.Module) -> Iterator[None]:
    """FSDP2's counterpart of DistributedDataParallel.no_sync: gradients reduced at a step's last backward only."""
    module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


class Sharded:
    """The sharded `copy` of `module` that trains on `device`; `gather()` brings its weights back to `module`."""

    def __init__(self, module: nn.Module, device: torch.device):
        self.module = module
        mesh = init_device_mesh(device.type, (parallel.world(),))

        def shard_blocks(model: nn.Module) -> None:
            for block in blocks(model):  # freed after its forward, also where no sharded module holds it (a teacher)
                fully_shard(block, mesh=mesh, reshard_after_forward=True)

        self.copy = copy.deepcopy(module)  # the frozen models it runs too: they are sharded in the copy alone
        for part in self.copy.modules():
            if isinstance(part, RunsFrozen):
                part.shard_frozen(shard_blocks)
        shard_blocks(self.copy)
        fully_shard(self.copy, mesh=mesh)
        held = [(p.to_local().numel(), p.numel()) for p in self.copy.parameters() if isinstance(p, DTensor)]
        mine, total = sum(h for h, _ in held), sum(n for _, n in held)
        logger.info(
            "train.shard: %d blocks and the rest of the module sharded over %d processes; each holds about %s of "
            "its %s parameters",
            len(blocks(self.copy)),
            parallel.world(),
            f"{mine:,}",
            f"{total:,}",
        )

    @torch.no_grad()
    def gather(self) -> None:
        """The trained weights, whole, and the buffers into `module` (a collective: every process calls it, after
        `parallel.broadcast_buffers`, so that every process continues with the same module)."""
        params, buffers = dict(self.copy.named_parameters()), dict(self.copy.named_buffers())
        for name, param in self.module.named_parameters():
            param.copy_(whole(params[name]))
        for name, buffer in self.module.named_buffers():
            buffer.copy_(buffers[name])
