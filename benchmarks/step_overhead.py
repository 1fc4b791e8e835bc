"""What a distillation step costs beside its parts, measured side by side in one run.

    python benchmarks/step_overhead.py [--batch 64] [--repeats 30] [--samples 2048] [--device cpu]

Times, interleaved round-robin so machine noise hits all rows alike (every other round in reverse order):
  student step         forward + backward + SGD step of the student alone (cross-entropy)
  teacher forward      the frozen teacher's forward in inference mode
  distill step         a Distiller step: student step + teacher forward + KD loss
  cached distill step  a Distiller step whose teacher outputs are read from a `distill cache` by index
and checks the promises on medians of ratios taken within two consecutive rounds, one in each order (the
steps run back to back, so a slow spell of the machine hits both sides of a ratio, and what a step inherits
from the one before it cancels): distill step <= 1.10 x (student step + teacher forward), cached distill
step <= 1.05 x student step. Then `write_cache` over `--samples` images
against the bare teacher forward over the same images (promise: within 1.2 x), and the cache's bytes per
sample, full and top-10.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from distill import Distiller, Supervised, losses
from distill.cache.logits import TeacherCache
from distill.cache.write import write_cache
from distill.models import cnn, count_params
from distill.modules.teacher import LiveTeacher

SHAPE, CLASSES = (3, 32, 32), 100  # CIFAR-100-shaped images


def train_step(module: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> Callable[[], None]:
    def step() -> None:
        module(batch)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def sgd(model: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def interleaved(steps: dict[str, Callable[[], object]], repeats: int, device: torch.device) -> dict[str, list[float]]:
    """Seconds of each step over `repeats` rounds (after 3 warm-up rounds), the steps taking turns, in reverse
    order every other round: no step always follows the same one (which may leave the caches warm or cold)."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(repeats + 3):
        for name, step in list(steps.items())[:: -1 if r % 2 else 1]:
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            if r >= 3:
                times[name].append(time.perf_counter() - start)
    return times


def paired_rounds(seconds: list[float]) -> list[float]:
    """Each step's time summed over a round and the next, which ran in the other order: what running after a
    given step does to a time cancels out of a ratio of these sums."""
    return [a + b for a, b in zip(seconds[0::2], seconds[1::2], strict=False)]


def verdict(ratio: float, limit: float) -> str:
    return f"{ratio:.3f}  (promise <= {limit:.2f}: {'met' if ratio <= limit else 'NOT met'})"


def report(
    args: argparse.Namespace,
    params: tuple[int, int],
    times: dict[str, list[float]],
    cache_times: dict[str, list[float]],
    bytes_per: dict[str, float],
    device: torch.device,
) -> None:
    """The table of step times and the ratios each pair's rounds give."""
    median = {name: statistics.median(t) * 1e3 for name, t in {**times, **cache_times}.items()}
    print(
        f"teacher {params[0]:,} params, student {params[1]:,} params, "
        f"batch {args.batch} x {SHAPE}, {CLASSES} classes, {device}, {torch.get_num_threads()} threads, "
        f"{args.repeats} interleaved repeats"
    )
    print(f"{'':22}{'median ms':>11}{'min ms':>9}{'max ms':>9}")
    for name, t in {**times, **cache_times}.items():
        print(f"{name:22}{median[name]:>11.2f}{min(t) * 1e3:>9.2f}{max(t) * 1e3:>9.2f}")
    pairs = {name: paired_rounds(t) for name, t in times.items()}
    live = statistics.median(
        d / (s + f)
        for s, f, d in zip(pairs["student step"], pairs["teacher forward"], pairs["distill step"], strict=True)
    )
    cached = statistics.median(c / s for c, s in zip(pairs["cached distill step"], pairs["student step"], strict=True))
    print("medians over pairs of rounds (one in each order) of each pair's ratio:")
    print(f"distill step / (student step + teacher forward) = {verdict(live, 1.10)}")
    print(f"cached distill step / student step = {verdict(cached, 1.05)}")
    print(
        f"write_cache / bare teacher forward over {args.samples} images = "
        f"{verdict(median['write_cache'] / median['bare forward'], 1.2)}"
    )
    print(
        f"cache bytes per sample ({CLASSES} classes, float16): full {bytes_per['full']:.0f}, "
        f"top-10 {bytes_per['top10']:.0f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--samples", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    shape, classes = SHAPE, CLASSES
    teacher = cnn(shape, classes, channels=(64, 128, 256), hidden=512).to(device)
    student = cnn(shape, classes, channels=(16, 32), hidden=128).to(device)
    images, labels = torch.randn(args.samples, *shape), torch.randint(0, classes, (args.samples,))
    index = torch.randperm(args.samples)[: args.batch]
    batch = {"input": images[index].to(device), "label": labels[index].to(device), "index": index}
    frozen = LiveTeacher(teacher)

    with tempfile.TemporaryDirectory() as tmp:
        # --- writing a cache against the bare teacher forward over the same images ---
        def bare_forward() -> None:
            for i in range(0, args.samples, 256):
                frozen({"input": images[i : i + 256].to(device)})

        def cache_once() -> None:
            shutil.rmtree(Path(tmp) / "full", ignore_errors=True)
            write_cache(Path(tmp) / "full", teacher, images, labels, data="random", device=device, progress=False)

        cache_times = interleaved({"bare forward": bare_forward, "write_cache": cache_once}, 3, device)
        write_cache(Path(tmp) / "top10", teacher, images, labels, data="random", top_k=10, progress=False)
        cache = TeacherCache(Path(tmp) / "full")
        bytes_per = {
            name: sum(f.stat().st_size for f in (Path(tmp) / name).glob("*.npy")) / args.samples
            for name in ("full", "top10")
        }

        # --- training steps ---
        kd = losses.KD(temperature=4.0, alpha=0.5)
        steps: dict[str, Callable[[], object]] = {  # each ratio's sides run next to each other
            "cached distill step": train_step(Distiller(student, cache, [kd]), sgd(student), batch),
            "student step": train_step(Supervised(student), sgd(student), batch),
            "teacher forward": lambda: frozen(batch),
            "distill step": train_step(Distiller(student, teacher, [kd]), sgd(student), batch),
        }
        times = interleaved(steps, args.repeats, device)

    report(args, (count_params(teacher), count_params(student)), times, cache_times, bytes_per, device)


if __name__ == "__main__":
    main()
