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
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from distill import Distiller, Supervised, TrainOptions, fit, losses
from distill.data import load, split
from distill.models import cnn, count_params
from distill.online import MutualLearning
from distill.selfdistill import born_again

TEACHER = {"channels": (32, 64, 128), "hidden": 256}
STUDENT = {"channels": (8, 16), "hidden": 32}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared/data/mnist-test"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    splits = split(load("idx", path=args.data), val_fraction=0.2, seed=0)
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

    def net(seed: int, spec: dict) -> nn.Module:
        torch.manual_seed(seed)
        return cnn(splits.input_shape, splits.num_classes, **spec)

    teacher = net(0, TEACHER)
    teacher_acc = fit(Supervised(teacher), train, val, options).epochs[-1]["val/accuracy"]
    print(f"data: {splits.description}")
    print(f"teacher cnn{TEACHER}: {count_params(teacher):,} params, accuracy {teacher_acc:.4f}")
    print(f"student cnn{STUDENT}: {count_params(net(0, STUDENT)):,} params; {args.epochs} epochs, seeds {args.seeds}")

    rows: dict[str, list[float]] = {}
    for seed in args.seeds:
        seeded = options.model_copy(update={"seed": seed})
        last = lambda history, key="val/accuracy": history.epochs[-1][key]  # noqa: E731
        rows.setdefault("student alone", []).append(last(fit(Supervised(net(seed, STUDENT)), train, val, seeded)))
        kd = Distiller(net(seed, STUDENT), teacher, [losses.KD(temperature=4.0, alpha=0.1)])
        rows.setdefault("offline KD", []).append(last(fit(kd, train, val, seeded)))
        dml = MutualLearning([net(seed, STUDENT), net(seed + 100, STUDENT)], temperature=1.0)
        rows.setdefault("DML (peer 0)", []).append(last(fit(dml, train, val, seeded), "val/peer0/accuracy"))
        chain = born_again(
            lambda: cnn(splits.input_shape, splits.num_classes, **STUDENT),
            train,
            val,
            seeded,
            generations=3,
            kd=losses.KD(temperature=1.0, alpha=0.0),
        )
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
