"""Tensor helpers shared by losses, taps, distillers and the loop: math over tensors, nothing else."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

Batch = dict[str, Tensor]  # "input" (B, ...), "label" (B,), and "index" (B,) where a cache reads by sample


def resize_to(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """(B, C, H, W) -> (B, C, *size): adaptive average pooling down, bilinear up."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    if maps.shape[-2] >= size[0] and maps.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(maps, size)
    return F.interpolate(maps, size=size, mode="bilinear", align_corners=False)


def top1_accuracy(logits: Tensor, labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Top-1 accuracy over labelled samples, as a 0-dim tensor (no host sync)."""
    labelled = labels != ignore_index
    correct = (logits.argmax(-1) == labels) & labelled
    return correct.sum() / labelled.sum().clamp(min=1)
