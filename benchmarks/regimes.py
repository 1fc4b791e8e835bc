"""Offline, online and self-distillation side by side on the MNIST test split.

    python benchmarks/regimes.py [--data ../shared/data/mnist-test] [--seeds 0 1 2] [--epochs 10]

The same split, teacher and student as benchmarks/methods.py (6,400 training, 1,600 validation and 2,000 test
images; a CNN teacher trained once; a 9,826-parameter CNN student). For each student seed:
  student alone     cross-entropy only
  offline KD        from the trained teacher (T = 4, 0.1 cross-entropy + 0.9 soft loss)
  DML               two students trained together, each also learning from the other (T = 1); peer 0 reported
  born-again        three generations of the student, each learning from the last (T = 1, pure imitation as
                    in the paper); the last generation and the ensemble of all three reported
Accuracy on the test images after the last epoch: mean and standard deviation over seeds. The settings are
the papers', not tuned.
"""

from __future__ import annotations

import argparse
import statistics

from _mnist import DEFAULT_DATA, STUDENT, accuracy, mnist, trained_teacher
from distill import Distiller, Supervised, fit, losses
from distill.models import cnn
from distill.modules.mutual import MutualLearning
from distill.modules.self_distiller import born_again, ensemble_accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    setup = mnist(args.data, args.epochs)
    teacher = trained_teacher(setup, args.seeds)
    train, val = setup.train, setup.val

    rows: dict[str, list[float]] = {}
    for seed in args.seeds:
        seeded = setup.options.model_copy(update={"seed": seed})
        alone = setup.net(seed, STUDENT)
        fit(Supervised(alone), train, val, seeded)
        rows.setdefault("student alone", []).append(accuracy(alone, setup.test))
        student = setup.net(seed, STUDENT)
        fit(Distiller(student, teacher, [losses.KD(temperature=4.0, alpha=0.1)]), train, val, seeded)
        rows.setdefault("offline KD", []).append(accuracy(student, setup.test))
        peers = [setup.net(seed, STUDENT), setup.net(seed + 100, STUDENT)]
        fit(MutualLearning(peers, temperature=1.0), train, val, seeded)
        rows.setdefault("DML (peer 0)", []).append(accuracy(peers[0], setup.test))
        fresh = lambda: cnn(setup.splits.input_shape, setup.splits.num_classes, **STUDENT)  # noqa: E731
        chain = born_again(fresh, train, val, seeded, generations=3, kd=losses.KD(temperature=1.0, alpha=0.0))
        rows.setdefault("born-again, generation 3", []).append(accuracy(chain.models[-1], setup.test))
        rows.setdefault("born-again, ensemble of 3", []).append(ensemble_accuracy(chain.models, setup.test))
        print(f"  seed {seed} done", flush=True)

    print(f"\n| regime | test accuracy (mean ± std over {len(args.seeds)} seeds) | per seed |")
    print("| --- | --- | --- |")
    for name, accs in rows.items():
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        print(f"| {name} | {statistics.mean(accs):.4f} ± {spread:.4f} | {', '.join(f'{a:.4f}' for a in accs)} |")


if __name__ == "__main__":
    main()
