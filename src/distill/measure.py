"""What a model costs: parameters, bytes on disk, CPU latency and throughput."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence

import torch
from torch import nn


@torch.inference_mode()
def _median_seconds(model: nn.Module, inputs: torch.Tensor, *, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        model(inputs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model(inputs)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speed(model: nn.Module, input_shape: Sequence[int], *, repeats: int = 50, batch: int = 256) -> dict[str, float]:
    """Median CPU latency at batch 1 (ms) and throughput at `batch` (samples/s), in float32.

    Puts `model` in eval mode on the CPU (as deployment would) and leaves it there.
    """
    model = model.eval().cpu()
    one = torch.randn(1, *input_shape)
    many = torch.randn(batch, *input_shape)
    latency = _median_seconds(model, one, repeats=repeats, warmup=5)
    batch_time = _median_seconds(model, many, repeats=max(repeats // 5, 3), warmup=2)
    return {"latency_ms": latency * 1e3, "throughput": batch / batch_time}
