"""Where teacher outputs come from. Today: a live, frozen teacher run in inference mode."""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn


class LiveTeacher:
    """A frozen teacher: eval mode, no gradients, `torch.inference_mode`, optionally in bfloat16.

    Deliberately not an `nn.Module`: its weights stay out of the student's parameters, optimizer,
    state dict and DDP wrapper. It follows the inputs to their device on first use.
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype = torch.float32):
        if dtype != torch.float32:
            model = copy.deepcopy(model).to(dtype=dtype)  # leave the caller's float32 teacher as it was
        self.model = model.eval().requires_grad_(False)
        self.dtype = dtype
        self._device: torch.device | None = None

    def __call__(self, inputs: Tensor) -> Tensor:
        if inputs.device != self._device:
            self.model.to(inputs.device)
            self._device = inputs.device
        with torch.inference_mode():
            logits = self.model(inputs.to(self.dtype))
        # Inference tensors cannot be saved for backward; a float32 copy of the (B, C) logits costs little.
        return logits.to(torch.float32, copy=True)
