"""What a distillation step costs beside its parts, measured side by side in one run.

    python benchmarks/step_overhead.py [--batch 64] [--repeats 30] [--device cpu]

Times, interleaved round-robin so machine noise hits all rows alike:
  student step       forward + backward + SGD step of the student alone (cross-entropy)
  teacher forward    the frozen teacher's forward in inference mode
  distill step       a Distiller step: student step + teacher forward + KD loss
and checks the promise: distill step <= 1.10 x (student step + teacher forward), on medians.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from distill import Distiller, Supervised, losses
from distill.models import cnn, count_params
from distill.teacher import LiveTeacher


def train_step(module: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict) -> Callable[[], None]:
    def step() -> None:
        module(batch)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)

    shape, classes = (3, 32, 32), 100
    teacher = cnn(shape, classes, channels=(64, 128, 256), hidden=512).to(device)
    student = cnn(shape, classes, channels=(16, 32), hidden=128).to(device)
    batch = {
        "input": torch.randn(args.batch, *shape, device=device),
        "label": torch.randint(0, classes, (args.batch,), device=device),
    }

    scratch = Supervised(student)
    distiller = Distiller(student, teacher, [losses.KD(temperature=4.0, alpha=0.5)])
    frozen = LiveTeacher(teacher)
    steps: dict[str, Callable[[], object]] = {
        "student step": train_step(scratch, torch.optim.SGD(student.parameters(), lr=1e-3, momentum=0.9), batch),
        "teacher forward": lambda: frozen(batch["input"]),
        "distill step": train_step(distiller, torch.optim.SGD(student.parameters(), lr=1e-3, momentum=0.9), batch),
    }
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(args.repeats + 3):
        for name, step in steps.items():
            sync(device)
            start = time.perf_counter()
            step()
            sync(device)
            if r >= 3:  # warm-up rounds
                times[name].append(time.perf_counter() - start)

    median = {name: statistics.median(t) * 1e3 for name, t in times.items()}
    budget = median["student step"] + median["teacher forward"]
    print(
        f"teacher {count_params(teacher):,} params, student {count_params(student):,} params, "
        f"batch {args.batch} x {shape}, {classes} classes, {device}, {torch.get_num_threads()} threads, "
        f"{args.repeats} interleaved repeats"
    )
    print(f"{'':18}{'median ms':>11}{'min ms':>9}{'max ms':>9}")
    for name, t in times.items():
        print(f"{name:18}{median[name]:>11.2f}{min(t) * 1e3:>9.2f}{max(t) * 1e3:>9.2f}")
    ratio = median["distill step"] / budget
    print(
        f"distill step / (student step + teacher forward) = {ratio:.3f}  (promise <= 1.10: "
        f"{'met' if ratio <= 1.10 else 'NOT met'})"
    )


if __name__ == "__main__":
    main()
