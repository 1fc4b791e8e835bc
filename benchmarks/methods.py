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

import torch
from torch import nn

from _mnist import DEFAULT_DATA, STUDENT, mnist, trained_teacher
from distill import Distiller, Supervised, fit, losses


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    args = parser.parse_args()
    setup = mnist(args.data, args.epochs)
    teacher = trained_teacher(setup, args.seeds)

    rows: dict[str, list[float]] = {}
    seconds: dict[str, float] = {}
    for method in ["student alone", *args.methods]:
        start = time.perf_counter()
        for seed in args.seeds:
            net = setup.net(seed, STUDENT)
            if method == "student alone":
                module = Supervised(net)
            else:
                module = Distiller(net, teacher, METHODS[method](setup.num_samples, setup.splits.train.indices))
            history = fit(module, setup.train, setup.val, setup.options.model_copy(update={"seed": seed}))
            rows.setdefault(method, []).append(history.epochs[-1]["val/accuracy"])
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
