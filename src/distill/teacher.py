"""Where teacher outputs come from. Today: a live, frozen teacher run in inference mode."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from distill.taps import check_paths, run_tapped


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

    def __call__(self, inputs: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """The teacher's logits and tapped features, as float32 tensors that autograd may save."""
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
