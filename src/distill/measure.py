"""What a model costs to run on a CPU: latency at batch 1 (median and 95th percentile), throughput at a large
batch, and peak inference memory.

Timed with `torch.utils.benchmark` on a fixed number of threads after a warm-up, the same way for a PyTorch
module and for any other callable (an ONNX Runtime session), so their figures compare side by side.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.utils.benchmark import Timer

THREADS = 1  # one thread: what a phone or a small server gives one request, and the steadiest to time
BATCH = 256  # the large batch of the throughput figure
BUDGET_S = 0.1  # about how long each figure's timed calls take in a run's summary; export and report take more


def cpu_name() -> str:
    """The CPU's model name as the OS reports it (Linux: /proc/cpuinfo), else what `platform` knows."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def where_measured(threads: int = THREADS) -> str:
    """One line saying on what the timings were taken."""
    return f"{cpu_name()}, {threads} thread{'s' if threads > 1 else ''}, torch {torch.__version__}"


def timing(
    run: Callable[[Tensor], object],
    input_shape: Sequence[int],
    *,
    threads: int = THREADS,
    batch: int = BATCH,
    budget_s: float = BUDGET_S,
) -> dict[str, float]:
    """Median and p95 latency of `run` on one random sample (ms), and its throughput on `batch` (samples/s);
    each figure's calls take about `budget_s` (within bounds on their count).

    Each batch-1 call is timed alone, so the p95 is of single calls, not of averaged blocks."""
    single = _calls(run, torch.randn(1, *input_shape), threads, budget_s, fewest=20, most=1000)
    batched = _calls(run, torch.randn(batch, *input_shape), threads, budget_s, fewest=3, most=50)
    return {
        "latency_ms": statistics.median(single) * 1e3,
        "latency_p95_ms": statistics.quantiles(single, n=20)[-1] * 1e3,
        "throughput": batch / statistics.median(batched),
    }


def _calls(
    run: Callable[[Tensor], object], inputs: Tensor, threads: int, budget_s: float, *, fewest: int, most: int
) -> list[float]:
    """Seconds of single calls of `run(inputs)` after a warm-up: as many as fit the budget, within bounds."""
    timer = Timer("run(x)", globals={"run": run, "x": inputs}, num_threads=threads)
    estimate = timer.timeit(3).median  # the warm-up, and the estimate that sizes the count
    count = int(min(max(budget_s / max(estimate, 1e-9), fewest), most))
    return [timer.timeit(1).median for _ in range(count)]


@torch.inference_mode()
def peak_memory(model: nn.Module, input_shape: Sequence[int], *, batch: int = 1) -> int:
    """Bytes held at the peak of one forward pass at `batch`: weights, input and the most activations alive at
    once, from the profiler's record of every allocation and free."""
    inputs = torch.randn(batch, *input_shape)
    with _stderr_silenced(), torch.autograd.profiler.profile(use_kineto=False, profile_memory=True) as profiled:
        model(inputs)
    live = peak = 0
    for event in sorted(profiled.function_events, key=lambda event: event.time_range.start):
        live += event.self_cpu_memory_usage  # + what an op allocated, - what was freed
        peak = max(peak, live)
    weights = sum(t.numel() * t.element_size() for t in (*model.parameters(), *model.buffers()))
    return weights + inputs.numel() * inputs.element_size() + peak


@contextmanager
def _stderr_silenced() -> Iterator[None]:
    """File descriptor 2 sent to /dev/null: the profiler's C++ side logs every start and stop there."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def costs(
    model: nn.Module, input_shape: Sequence[int], *, threads: int = THREADS, budget_s: float = BUDGET_S
) -> dict[str, float]:
    """`timing` and `peak_memory` (at batch 1) of a PyTorch module, in eval mode on the CPU, as deployed; the
    module is left there."""
    model = model.eval().cpu()

    @torch.inference_mode()
    def run(inputs: Tensor) -> object:
        return model(inputs)

    measured = timing(run, input_shape, threads=threads, budget_s=budget_s)
    return {**measured, "peak_memory_bytes": peak_memory(model, input_shape)}
