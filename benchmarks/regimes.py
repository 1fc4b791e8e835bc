"""Offline, online and self-distillation side by side on the MNIST test split.

    python benchmarks/regimes.py [--data ../shared/data/mnist-test] [--seeds 0 1 2] [--epochs 10]

The same split, teacher and student as benchmarks/methods.py (8,000 training and 2,000 held-out images;
a CNN teacher trained once; a 2,146-parameter CNN student). For each student seed:
  student alone     cross-entropy only
  offline KD        from the trained teacher (T = 4, 0.1 cross-entropy + 0.9 soft loss)
  DML               two students trained together, each also learning from the other (T = 1); peer 0 reported
  born-again        three generations of the student, each learning from the last (T = 1, pure imitation as
                    in the paper); the last generation and the ensemble of all three reported
Accuracy on the held-out images after the last epoch: mean and standard deviation over seeds. Nothing is
tuned on the held-out images.
"""

from __future__ import annotations

import argparse
import statistics

from _mnist import DEFAULT_DATA, STUDENT, mnist, trained_teacher
from distill import Distiller, Supervised, fit, losses
from distill.models import cnn
from distill.online import MutualLearning
from distill.selfdistill import born_again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    setup = mnist(args.data, args.epochs)
    teacher = trained_teacher(setup, args.seeds)
    train, val = setup.train, setup.val

    def last(history, key: str = "val/accuracy") -> float:
        return history.epochs[-1][key]

    rows: dict[str, list[float]] = {}
    for seed in args.seeds:
        seeded = setup.options.model_copy(update={"seed": seed})
        alone = Supervised(setup.net(seed, STUDENT))
        rows.setdefault("student alone", []).append(last(fit(alone, train, val, seeded)))
        kd = Distiller(setup.net(seed, STUDENT), teacher, [losses.KD(temperature=4.0, alpha=0.1)])
        rows.setdefault("offline KD", []).append(last(fit(kd, train, val, seeded)))
        dml = MutualLearning([setup.net(seed, STUDENT), setup.net(seed + 100, STUDENT)], temperature=1.0)
        rows.setdefault("DML (peer 0)", []).append(last(fit(dml, train, val, seeded), "val/peer0/accuracy"))
        fresh = lambda: cnn(setup.splits.input_shape, setup.splits.num_classes, **STUDENT)  # noqa: E731
        chain = born_again(fresh, train, val, seeded, generations=3, kd=losses.KD(temperature=1.0, alpha=0.0))
        rows.setdefault("born-again, generation 3", []).append(chain.accuracies[-1])
        rows.setdefault("born-again, ensemble of 3", []).append(chain.ensemble_accuracy)
        print(f"  seed {seed} done", flush=True)

    print(f"\n| regime | accuracy (mean ± std over {len(args.seeds)} seeds) | per seed |")
    print("| --- | --- | --- |")
    for name, accs in rows.items():
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {name} | {statistics.mean(accs):.4f} ± {spread:.4f} | {', '.join(f'{a:.4f}' for a in accs)} |")


if __name__ == "__main__":
    main()
