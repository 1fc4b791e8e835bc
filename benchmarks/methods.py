"""Distillation methods side by side on real data: the MNIST test split, a CNN teacher, a much smaller CNN student.

    python benchmarks/methods.py [--data ../shared/data/mnist-test] [--seeds 0 1 2] [--epochs 8]

The 10,000 MNIST test images are split once (seed 0) into 6,400 for training, 1,600 for validation and 2,000
for test. One teacher is trained (seed 0) and its outputs cached. Every method, the student alone included,
gets the same small budget: three settings (SETTINGS), each trained once with seed 0 and judged on the
validation images (the student alone's are learning rates, and the one it picks is every method's); the
best setting is then trained with every seed, and its accuracy on the test images after the last epoch is
reported: mean and standard deviation over seeds. Nothing is chosen on the test images.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable

from torch import nn

from _mnist import DEFAULT_DATA, STUDENT, Mnist, accuracy, cached, mnist, trained_teacher
from distill import Distiller, Supervised, fit, losses
from distill.cache.logits import TeacherCache


def ce() -> nn.Module:
    """Plain cross-entropy: KD with the whole weight on the hard loss."""
    return losses.KD(alpha=1.0)


Terms = Callable[[Mnist], list[nn.Module]]

# Three settings a method; its term beside the cross-entropy (DKD, DIST and the feature methods have none of
# their own), around the paper's or the CRD benchmark code's setting. CRD draws 1,024 negatives per sample
# (the paper 16,384 on CIFAR-100) to keep its runs within minutes on a CPU. RKD and CRD read the embedding
# before the classifier (`hidden`), as their papers do.
SETTINGS: dict[str, dict[str, Terms | float]] = {
    "student alone": {"lr 1e-3": 1e-3, "lr 3e-3": 3e-3, "lr 1e-2": 1e-2},
    "KD": {
        "T 2, alpha 0.5": lambda m: [losses.KD(temperature=2.0, alpha=0.5)],
        "T 4, alpha 0.1": lambda m: [losses.KD(temperature=4.0, alpha=0.1)],
        "T 4, alpha 0.5": lambda m: [losses.KD(temperature=4.0, alpha=0.5)],
    },
    "DKD": {
        f"beta {beta:g}": lambda m, beta=beta: [ce(), losses.DKD(alpha=1.0, beta=beta, temperature=4.0)]
        for beta in (1.0, 2.0, 8.0)
    },
    "DIST": {
        "beta = gamma = 1, T 1": lambda m: [ce(), losses.DIST(beta=1.0, gamma=1.0, temperature=1.0)],
        "beta = gamma = 2, T 4": lambda m: [ce(), losses.DIST(beta=2.0, gamma=2.0, temperature=4.0)],
        "beta = gamma = 1, T 4": lambda m: [ce(), losses.DIST(beta=1.0, gamma=1.0, temperature=4.0)],
    },
    "FitNets": {
        f"weight {w:g}": lambda m, w=w: [ce(), losses.Hint("block2", "block2", weight=w)] for w in (1.0, 10.0, 100.0)
    },
    "AT": {
        f"weight {w:g}": lambda m, w=w: [ce(), losses.AT("block2", "block2", weight=w)] for w in (10.0, 100.0, 1000.0)
    },
    "SP": {
        f"weight {w:g}": lambda m, w=w: [ce(), losses.SP("block2", "block2", weight=w)] for w in (300.0, 1000.0, 3000.0)
    },
    "RKD": {f"weight {w:g}": lambda m, w=w: [ce(), losses.RKD("hidden", "hidden", weight=w)] for w in (0.1, 1.0, 10.0)},
    "CRD": {
        f"weight {w:g}": lambda m, w=w: [
            ce(),
            losses.CRD(
                "hidden", "hidden", num_samples=m.num_samples, train_rows=m.splits.train.indices, nce_k=1024, weight=w
            ),
        ]
        for w in (0.2, 0.8, 2.0)
    },
}


def train(setup: Mnist, teacher: TeacherCache, setting: Terms | float, seed: int) -> nn.Module:
    """The student trained with one setting and seed; the student alone's settings are learning rates."""
    net = setup.net(seed, STUDENT)
    options = setup.options.model_copy(update={"seed": seed})
    if isinstance(setting, float):
        module = Supervised(net)
        options = options.model_copy(update={"lr": setting})
    else:
        module = Distiller(net, teacher, setting(setup))
    fit(module, setup.train, setup.val, options)
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--methods", nargs="+", default=list(SETTINGS), help="'student alone' first: its lr is theirs")
    args = parser.parse_args()
    setup = mnist(args.data, args.epochs)
    folder = tempfile.TemporaryDirectory()
    teacher = cached(setup, trained_teacher(setup, args.seeds), folder.name)

    print(f"\n| method | chosen on validation | val | test (mean ± std over {len(args.seeds)} seeds) | per seed | s |")
    print("| --- | --- | --- | --- | --- | --- |", flush=True)
    for method in args.methods:  # a row as each method ends
        start = time.perf_counter()
        tried = {name: accuracy(train(setup, teacher, s, 0), setup.val) for name, s in SETTINGS[method].items()}
        chosen = max(tried, key=tried.get)
        if method == "student alone":  # the learning rate it picks on validation is every method's
            setup.options = setup.options.model_copy(update={"lr": SETTINGS[method][chosen]})
        tests = [accuracy(train(setup, teacher, SETTINGS[method][chosen], seed), setup.test) for seed in args.seeds]
        spread = statistics.stdev(tests) if len(tests) > 1 else 0.0
        per_seed = ", ".join(f"{t:.4f}" for t in tests)
        seconds = time.perf_counter() - start
        print(
            f"| {method} | {chosen} | {tried[chosen]:.4f} | {statistics.mean(tests):.4f} ± {spread:.4f} | "
            f"{per_seed} | {seconds:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
