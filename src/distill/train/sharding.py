"""Sharded runs (`train.shard: true` under torchrun): PyTorch's FSDP2 for a model whose training state does not
fit one device.

Each of N processes holds 1/N of the trained module's parameters, gradients and optimizer state. `fully_shard`
makes each block (an element of an nn.ModuleList or nn.Sequential that holds parameters: a residual block, a
transformer layer) a unit that is gathered for its forward and backward and freed after; the rest of the
module is one more unit. A frozen teacher the module runs has its blocks sharded too, gathered for its
forward alone; its other weights (embeddings, head) stay whole on every process.

What trains is a copy. The module handed to `fit` waits on the CPU and gets the full weights back at every
epoch's end (for the checkpoint) and when training ends, so what follows a sharded `fit` sees an ordinary
module. Checkpoints hold the full state, as an unsharded run's do: a run resumes sharded or not, at any
number of processes.
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
    return isinstance(module, FSDPModule)


def full(tensor: Tensor) -> Tensor:
    """The whole of a sharded tensor, on the CPU (a collective: every process calls it); others as they are."""
    return tensor.detach().full_tensor().cpu() if isinstance(tensor, DTensor) else tensor


def full_state(state: Any) -> Any:
    """`state` (dicts and lists of tensors: an optimizer's state dict) with every sharded tensor made whole, one
    at a time, on the CPU: what an unsharded run would save. Every process calls it, in the same order."""
    if isinstance(state, dict):
        return {key: full_state(value) for key, value in state.items()}
    if isinstance(state, list | tuple):
        return type(state)(full_state(value) for value in state)
    return full(state) if isinstance(state, Tensor) else state


def shard_optimizer_state(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """A saved (whole) optimizer state dict, its per-parameter tensors cut as `optimizer`'s parameters are:
    this process's shard of each, with no communication (every process read the same file)."""
    params = [param for group in optimizer.param_groups for param in group["params"]]
    if not any(isinstance(param, DTensor) for param in params):
        return state
    per_param = {}
    for index, values in state["state"].items():
        param = params[index]
        per_param[index] = {
            key: _like(value, param) if isinstance(value, Tensor) and value.shape == param.shape else value
            for key, value in values.items()
        }
    return {**state, "state": per_param}


def _like(value: Tensor, param: Tensor) -> Tensor:
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
def gradient_sync(module: nn.Module, on: bool) -> Iterator[None]:
    """FSDP2's counterpart of DistributedDataParallel.no_sync: gradients reduced at a step's last backward only."""
    module.set_requires_gradient_sync(on)
    try:
        yield
    finally:
        module.set_requires_gradient_sync(True)


class Sharded:
    """The sharded copy of `module` that trains on `device`; `gather()` brings its weights back to `module`."""

    def __init__(self, module: nn.Module, device: torch.device):
        self.module, self.device = module, device
        mesh = init_device_mesh(device.type, (parallel.world(),))

        def shard_blocks(model: nn.Module) -> None:
            for block in blocks(model):  # freed after its forward, also where no sharded module holds it (a teacher)
                fully_shard(block, mesh=mesh, reshard_after_forward=True)

        self.trained = copy.deepcopy(module)  # the frozen models it runs too: they are sharded in the copy alone
        for part in self.trained.modules():
            if isinstance(part, RunsFrozen):
                part.shard_frozen(shard_blocks)
        shard_blocks(self.trained)
        fully_shard(self.trained, mesh=mesh)
        held = [(p.to_local().numel(), p.numel()) for p in self.trained.parameters() if isinstance(p, DTensor)]
        logger.info(
            "train.shard: %d blocks and the rest of the module sharded over %d processes; each holds about %s of "
            "its %s parameters", len(blocks(self.trained)), parallel.world(), f"{sum(h for h, _ in held):,}",
            f"{sum(n for _, n in held):,}",
        )  # fmt: skip

    @torch.no_grad()
    def gather(self) -> None:
        """The trained weights and buffers, whole, into `module` (a collective: every process calls it)."""
        params, buffers = dict(self.trained.named_parameters()), dict(self.trained.named_buffers())
        for name, param in self.module.named_parameters():
            param.copy_(full(params[name]))
        for name, buffer in self.module.named_buffers():
            buffer.copy_(buffers[name])
