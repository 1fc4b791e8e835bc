"""Where teacher outputs come from: a live, frozen teacher run in inference mode, or a disk cache.

Both are called with the batch and return the teacher's (B, C) logits and its tapped features, as float32
tensors on the batch's device that autograd may save (and must not change in place: a live teacher hands out
what it remembered of the validation batches again). `teacher_source` picks one for what it is given.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from distill.cache.logits import TeacherCache, topk_logits
from distill.errors import DistillError
from distill.taps import check_paths, run_tapped

REMEMBER_BYTES = 2**30  # of a live teacher's outputs on validation batches, kept to serve again


def teacher_source(
    teacher: nn.Module | TeacherCache, *, dtype: torch.dtype = torch.float32, taps: Sequence[str] = ()
) -> LiveTeacher | CachedTeacher:
    """Where a Distiller's teacher outputs come from: the stored outputs of a `TeacherCache`, or a model run
    live (and frozen)."""
    if isinstance(teacher, TeacherCache):
        return CachedTeacher(teacher, taps=taps)
    return LiveTeacher(teacher, dtype=dtype, taps=taps)


class LiveTeacher:
    """A frozen teacher: eval mode, no gradients, `torch.inference_mode`, optionally in bfloat16.

    Deliberately not an `nn.Module`: its weights stay out of the student's parameters, optimizer,
    state dict and DDP wrapper. It follows the inputs to their device on first use. Called with `remember`
    (evaluation), it keeps its outputs on each batch of sample indices, and serves them again for the same
    rows: frozen, it would compute the same numbers every epoch. It keeps up to REMEMBER_BYTES of them (the
    batches past that run every time), and never an augmented batch's; sharded (`shard`), none.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32, taps: Sequence[str] = ()):
        if dtype != torch.float32:
            model = copy.deepcopy(model).to(dtype=dtype)  # leave the caller's float32 teacher as it was
        check_paths(model, taps, "teacher")
        self.model = model.eval().requires_grad_(False)
        self.dtype = dtype
        self.taps = tuple(taps)
        self._placed: tuple[torch.device, bool] | None = None
        self._remembered: dict[tuple, tuple[Tensor, Tensor, dict[str, Tensor]]] = {}
        self._kept_bytes = 0
        self.remembers = True

    top_k = None  # a live teacher gives the full distribution

    def shard(self, shard: Callable[[nn.Module], None]) -> None:
        """Shard the model in place with `shard` (see `distill.train.sharding`). Its forward is then a collective,
        which every process runs at every batch: nothing is remembered."""
        shard(self.model)
        self.remembers = False

    def __call__(self, batch: dict[str, Tensor], *, remember: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        inputs = batch["input"]
        nhwc = not inputs.is_contiguous() and inputs.is_contiguous(memory_format=torch.channels_last)  # NHWC images
        if (inputs.device, nhwc) != self._placed:  # follow the inputs' device and memory order
            self.model.to(inputs.device, memory_format=torch.channels_last if nhwc else torch.contiguous_format)
            self._placed = (inputs.device, nhwc)
        if not (remember and self.remembers) or "index" not in batch or "view" in batch:
            return self._run(inputs)
        # The rows by their indices (under the autocast in force), checked by a position-weighted sum of each
        # row's values: other data under the same indices, even a shifted or flipped image, is run anew.
        key = (inputs.device, torch.is_autocast_enabled(inputs.device.type), batch["index"].cpu().numpy().tobytes())
        with torch.no_grad():
            values = inputs.flatten(1).double()  # (B, D)
            check = values @ torch.linspace(1.0, 2.0, values.shape[1], dtype=values.dtype, device=values.device)
        kept = self._remembered.get(key)
        if kept is not None and torch.equal(kept[0], check):
            return kept[1], kept[2]
        if kept is not None:  # other rows under these indices: forget the old ones
            del self._remembered[key]
            self._kept_bytes -= _nbytes(*kept[1:])
        logits, features = self._run(inputs)
        if self._kept_bytes + _nbytes(logits, features) <= REMEMBER_BYTES:
            self._remembered[key] = (check, logits, features)
            self._kept_bytes += _nbytes(logits, features)
        return logits, features

    def _run(self, inputs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        with torch.inference_mode():
            inputs = inputs.to(self.dtype) if inputs.is_floating_point() else inputs  # token ids stay integers
            logits, features = run_tapped(self.model, inputs, self.taps)
        # Inference tensors cannot be saved for backward: a float32 copy of what the losses read.
        return _copy(logits), {path: _copy(value) for path, value in features.items()}


def _nbytes(logits: Tensor, features: dict[str, Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in (logits, *features.values()))


def _not_compiled(method: Callable) -> Callable:
    """`torch.compiler.disable(method)`, made at the first call: importing the compiler takes seconds that a
    run without train.compile never needs to spend."""
    disabled = None

    @functools.wraps(method)
    def call(*args, **kwargs):
        nonlocal disabled
        if disabled is None:
            disabled = torch.compiler.disable(method)
        return disabled(*args, **kwargs)

    return call


def _copy(tensor: Tensor) -> Tensor:
    return tensor.to(torch.float32, copy=True)


class CachedTeacher:
    """Teacher outputs read from a `TeacherCache` by the batch's sample indices: no teacher forward at all. A
    batch of augmented samples carries the `view` its rows show; a cache of views serves the teacher's outputs
    on that view (one cache of clean outputs, accepted for augmented inputs, serves those)."""

    def __init__(self, cache: TeacherCache, taps: Sequence[str] = ()):
        missing = [path for path in taps if path not in cache.fingerprint["features"]]
        if missing:
            raise DistillError(
                f"teacher.cache {cache.path} holds no teacher feature {missing[0]!r}; add it to "
                "cache.features and run `distill cache` again"
            )
        self.cache = cache
        self.taps = tuple(taps)
        self.top_k = cache.top_k

    @_not_compiled  # a read from memory-mapped NumPy arrays: nothing for train.compile to trace
    def __call__(self, batch: dict[str, Tensor], *, remember: bool = False) -> tuple[Tensor, dict[str, Tensor]]:
        if "index" not in batch:
            raise DistillError("a cached teacher reads by sample index: the batches need an 'index' entry")
        view = None
        if self.cache.views is not None and "view" in batch:
            view = int(batch["view"][0])  # one view of each row a batch: the epoch's (see IndexedDataset.replay)
        rows = self.cache.read(batch["index"], view)
        if self.top_k is None:
            logits = rows["logits"]
        else:
            logits = topk_logits(rows["topk_values"], rows["topk_indices"], rows["logsumexp"], self.cache.num_classes)
        device = batch["input"].device
        features = {path: rows[f"feature.{path}"].to(device, non_blocking=True) for path in self.taps}
        return logits.to(device, non_blocking=True), features
