"""Where teacher outputs come from: a live, frozen teacher run in inference mode, or a disk cache.

Both are called with the batch and return the teacher's (B, C) logits and its tapped features, as float32
tensors on the batch's device that autograd may save. `teacher_source` picks one for what it is given.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from distill.cache import TeacherCache, topk_logits
from distill.errors import DistillError
from distill.taps import check_paths, run_tapped


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
    state dict and DDP wrapper. It follows the inputs to their device on first use.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32, taps: Sequence[str] = ()):
        if dtype != torch.float32:
            model = copy.deepcopy(model).to(dtype=dtype)  # leave the caller's float32 teacher as it was
        check_paths(model, taps, "teacher")
        self.model = model.eval().requires_grad_(False)
        self.dtype = dtype
        self.taps = tuple(taps)
        self._device: torch.device | None = None

    top_k = None  # a live teacher gives the full distribution

    def __call__(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        inputs = batch["input"]
        if inputs.device != self._device:
            self.model.to(inputs.device)
            self._device = inputs.device
        with torch.inference_mode():
            inputs = inputs.to(self.dtype) if inputs.is_floating_point() else inputs  # token ids stay integers
            logits, features = run_tapped(self.model, inputs, self.taps)
        # Inference tensors cannot be saved for backward: a float32 copy of what the losses read.
        return _copy(logits), {path: _copy(value) for path, value in features.items()}


def _copy(tensor: Tensor) -> Tensor:
    return tensor.to(torch.float32, copy=True)


class CachedTeacher:
    """Teacher outputs read from a `TeacherCache` by the batch's sample indices: no teacher forward at all."""

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

    def __call__(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        if "index" not in batch:
            raise DistillError("a cached teacher reads by sample index: the batches need an 'index' entry")
        rows = self.cache.read(batch["index"])
        if self.top_k is None:
            logits = rows["logits"]
        else:
            logits = topk_logits(rows["topk_values"], rows["topk_indices"], rows["logsumexp"], self.cache.num_classes)
        device = batch["input"].device
        features = {path: rows[f"feature.{path}"].to(device, non_blocking=True) for path in self.taps}
        return logits.to(device, non_blocking=True), features
