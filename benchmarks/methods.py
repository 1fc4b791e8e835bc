"""Distillation methods side by side on real data: the MNIST test split, a CNN teacher, a much smaller student.

    python benchmarks/methods.py [--data ../shared/data/mnist-test] [--seeds 0 1 2] [--epochs 6]

The 10,000 MNIST test images are split once (seed 0) into 8,000 for training and 2,000 held out. One
teacher is trained (seed 0); then, for each student seed, the student is trained alone and with each
method, and its accuracy on the 2,000 held-out images after the last epoch is reported: mean and
standard deviation over seeds. Every method keeps the hyperparameters of its paper or of the CRD/DKD
benchmark code (listed in METHODS); nothing is tuned on the held-out images.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from distill import Distiller, Supervised, TrainOptions, fit, losses
from distill.data import load, split
from distill.models import cnn, count_params

TEACHER = {"channels": (32, 64, 128), "hidden": 256}  # taps: block1 (14x14) .. block3 (3x3), pool (128)
STUDENT = {"channels": (8, 16), "hidden": 32}  # taps: block1 (14x14), block2 (7x7), pool (16)


def ce() -> nn.Module:
    """Plain cross-entropy: KD with the whole weight on the hard loss."""
    return losses.KD(alpha=1.0)


# Each method: CE plus the method's term at the weight of the CRD benchmark code (RepDistiller), or the
# paper's recipe where that code has none (DKD, DIST). CRD keeps a memory row per sample (n) and draws its
# negatives from the training rows.
METHODS: dict[str, Callable[[int, torch.Tensor], list[nn.Module]]] = {
    "KD": lambda n, rows: [losses.KD(temperature=4.0, alpha=0.1)],
    "DKD": lambda n, rows: [ce(), losses.DKD(alpha=1.0, beta=8.0, temperature=4.0)],
    "DIST": lambda n, rows: [ce(), losses.DIST(beta=2.0, gamma=2.0, temperature=4.0)],
    "FitNets": lambda n, rows: [ce(), losses.Hint("block2", "block3", weight=100.0)],
    "AT": lambda n, rows: [ce(), losses.AT("block2", "block2", weight=1000.0)],
    "SP": lambda n, rows: [ce(), losses.SP("block2", "block3", weight=3000.0)],
    "RKD": lambda n, rows: [ce(), losses.RKD("pool", "pool", weight=1.0)],
    "CRD": lambda n, rows: [ce(), losses.CRD("pool", "pool", num_samples=n, train_rows=rows, nce_k=4096, weight=0.8)],
}


def accuracy(history) -> float:
    return history.epochs[-1]["val/accuracy"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/mnist-test"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())

    data = load("idx", path=args.data)
    splits = split(data, val_fraction=0.2, seed=0)
    n = len(data.labels)
    train = DataLoader(splits.train, batch_size=128, shuffle=True)
    val = DataLoader(splits.val, batch_size=512)
    options = TrainOptions(
        epochs=args.epochs,
        optimizer="adamw",
        lr=3e-3,
        weight_decay=1e-4,
        warmup_epochs=0.5,
        progress=False,
        log_every=50,
    )

    torch.manual_seed(0)
    teacher = cnn(splits.input_shape, splits.num_classes, **TEACHER)
    start = time.perf_counter()
    teacher_acc = accuracy(fit(Supervised(teacher), train, val, options))
    print(f"data: {splits.description}")
    print(
        f"teacher cnn{TEACHER}: {count_params(teacher):,} params, accuracy {teacher_acc:.4f} "
        f"({time.perf_counter() - start:.0f} s)"
    )

    def student(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return cnn(splits.input_shape, splits.num_classes, **STUDENT)

    print(f"student cnn{STUDENT}: {count_params(student(0)):,} params; {args.epochs} epochs, seeds {args.seeds}")
    rows: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    for method in ["student alone", *args.methods]:
        start = time.perf_counter()
        for seed in args.seeds:
            seeded = options.model_copy(update={"seed": seed})
            net = student(seed)
            module = (
                Supervised(net)
                if method == "student alone"
                else Distiller(net, teacher, METHODS[method](n, splits.train.indices))
            )
            rows.setdefault(method, []).append(accuracy(fit(module, train, val, seeded)))
        seconds[method] = (time.perf_counter() - start) / len(args.seeds)
        print(f"  {method:14} done", flush=True)

    print(f"\n| method | accuracy (mean ± std over {len(args.seeds)} seeds) | per seed | s / run |")
    print("| --- | --- | --- | --- |")
    for method, accs in rows.items():
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        per_seed = ", ".join(f"{a:.4f}" for a in accs)
        print(f"| {method} | {statistics.mean(accs):.4f} ± {spread:.4f} | {per_seed} | {seconds[method]:.0f} |")


if __name__ == "__main__":
    main()
