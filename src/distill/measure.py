"""What a model costs to run on a CPU: latency at batch 1 (median and 95th percentile), throughput at a large
batch, and peak inference memory.

Two ways. `distill export` and `distill report` time each figure carefully: `timing`, with `torch.utils.benchmark`
on a fixed number of threads after a warm-up, the same way for a PyTorch module and for any other callable (an
ONNX Runtime session), so their figures compare side by side. A run's summary takes quick figures instead
(`costs` without a budget): all of a model's within about QUICK_S seconds whatever its size, its throughput at
the largest batch (up to BATCH) whose call fits, recorded with them.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.benchmark import Timer

THREADS = 1  # one thread: what a phone or a small server gives one request, and the steadiest to time
BATCH = 256  # the large batch of the throughput figure
BUDGET_S = 0.1  # about how long each figure's timed calls take by default in `timing`; export and report take more
SUMMARY_S = 3.0  # about how long a run's summary measures all its models together, whatever their size
QUICK_S = 0.75  # about how long one model's quick figures take by default; more only where one memory pass, a
# warm-up and 3 calls at batch 1, the least it takes, take longer
LATENCY_SHARE = 0.3  # of QUICK_S, for the batch-1 calls; the throughput calls take what the rest leaves
GROWTH = 4  # a quick throughput's batch grows 1, 4, 16, 64, 256 while the next call fits
MOST_CALLS = 20  # at most this many calls at the final batch of a quick throughput


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


def quick_timing(
    run: Callable[[Tensor], object],
    input_shape: Sequence[int],
    *,
    threads: int = THREADS,
    budget_s: float = QUICK_S,
    spent_s: float = 0.0,
    most: int = BATCH,
) -> dict[str, Any]:
    """`timing`'s figures within about `budget_s` in all (`spent_s` of it spent already), however slow `run` is:
    a warm-up and at least 3 batch-1 calls (as many as fit LATENCY_SHARE of the budget), then `rate` up to
    batch `most` in what is left. Its "timing" entry says so: the budget, and the batch the throughput was
    taken at (1: no larger call fitted)."""
    start = time.perf_counter() - spent_s
    with _threads(threads):
        single = _fitting(run, torch.randn(1, *input_shape), LATENCY_SHARE * budget_s, fewest=3, most=200)
    latency = statistics.median(single)
    left = budget_s - (time.perf_counter() - start)
    throughput, batch = rate(
        run, lambda rows: torch.randn(rows, *input_shape), left, threads=threads, most=most, per_row=latency
    )
    return {
        "latency_ms": latency * 1e3,
        "latency_p95_ms": statistics.quantiles(single, n=20, method="inclusive")[-1] * 1e3,  # within the calls
        "throughput": throughput,
        "timing": {"budget_s": budget_s, "batch": batch},
    }


def rate(
    run: Callable[[Tensor], object],
    make_input: Callable[[int], Tensor],
    budget_s: float,
    *,
    threads: int = THREADS,
    most: int = BATCH,
    per_row: float | None = None,
) -> tuple[float, int]:
    """Rows a second of `run(make_input(batch))` on `threads` within about `budget_s`, and the batch it was
    taken at.

    From batch 1 (its seconds per row `per_row` when known, else one call at batch 1 finds them), the batch
    grows GROWTH-fold up to `most` while the next call, predicted at the last call's seconds per row, fits
    what is left; then that batch is called again while a call fits (MOST_CALLS at most). The first call at
    a batch warms it up: the rate is the median of the later ones, or that one call when no other fitted."""
    start, batch, times = time.perf_counter(), 1, []

    def fits(rows: int) -> bool:
        return rows * per_row <= budget_s - (time.perf_counter() - start)

    with _threads(threads):
        if per_row is None:
            times = [_seconds(run, make_input(1))]
            per_row = times[0]
        while batch < most and fits(grown := min(GROWTH * batch, most)):
            batch = grown
            times = [_seconds(run, make_input(batch))]
            per_row = times[0] / batch
        if not times:  # no call larger than batch 1 fitted: its rate is known already
            return 1 / per_row, 1
        inputs = make_input(batch)
        while len(times) < MOST_CALLS and fits(batch):
            times.append(_seconds(run, inputs))
    return batch / statistics.median(times[1:] or times), batch


def _fitting(
    run: Callable[[Tensor], object], inputs: Tensor, budget_s: float, *, fewest: int, most: int
) -> list[float]:
    """Seconds of single calls of `run(inputs)` after a warm-up call: at least `fewest`, then while the next
    (as long as the last) fits `budget_s`, at most `most`."""
    _seconds(run, inputs)
    start, times = time.perf_counter(), []
    while len(times) < fewest or (len(times) < most and time.perf_counter() - start + times[-1] <= budget_s):
        times.append(_seconds(run, inputs))
    return times


def _seconds(run: Callable[[Tensor], object], inputs: Tensor) -> float:
    start = time.perf_counter()
    run(inputs)
    return time.perf_counter() - start


@contextmanager
def _threads(threads: int) -> Iterator[None]:
    """torch on `threads` threads inside, as before outside."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


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
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    threads: int = THREADS,
    budget_s: float | None = None,
    quick_s: float = QUICK_S,
) -> dict[str, Any]:
    """`timing` and `peak_memory` (at batch 1) of a PyTorch module, in eval mode on the CPU, as deployed; the
    module is left there. With `budget_s` (export, report), each timing figure takes about that long. Without
    it (a run's summary), all of them, the memory pass included, take about `quick_s`: `quick_timing`'s
    figures, with its "timing" entry."""
    model = model.eval().cpu()

    @torch.inference_mode()
    def run(inputs: Tensor) -> object:
        return model(inputs)

    if budget_s is not None:
        measured = timing(run, input_shape, threads=threads, budget_s=budget_s)
        return {**measured, "peak_memory_bytes": peak_memory(model, input_shape)}
    start = time.perf_counter()
    with _threads(threads):  # the same peak as on every thread, and far quicker on a busy machine
        memory = peak_memory(model, input_shape)
    spent = time.perf_counter() - start
    return {
        **quick_timing(run, input_shape, threads=threads, budget_s=quick_s, spent_s=spent),
        "peak_memory_bytes": memory,
    }
