"""Where distillation pays: few labels and a transfer set, on the MNIST test split.

    python benchmarks/transfer.py [--data ../shared/data/mnist-test] [--seeds 0 1 2] [--epochs 8]

The split of benchmarks/methods.py (6,400 training, 1,600 validation, 2,000 test images). A teacher learns
from every training label (seed 0), as one trained elsewhere on more data would have; its outputs are
cached. For each share of the training images that keep their labels (a fixed, seeded choice), the student
is trained on those labels alone (as many steps as the distilled student takes, drawing the labelled images
again), and distilled: the hard loss on the kept labels, KD's soft loss (T 4, alpha 0.5) on all 6,400
images. Test accuracy after the last epoch, mean and standard deviation over seeds, and the diagnosis's
verdict with its 95% interval (a paired bootstrap over the test images, seeds averaged per image). The
settings are not tuned.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

import torch
from torch.utils.data import DataLoader, RandomSampler

from _mnist import DEFAULT_DATA, STUDENT, cached, mnist, trained_teacher
from distill import Distiller, Supervised, fit, losses
from distill.verdict import paired_interval


def correct(net: torch.nn.Module, loader: DataLoader) -> torch.Tensor:
    """1.0 where `net` is right on a sample of `loader`, in order."""
    net.eval()
    with torch.no_grad():
        return torch.cat([(net(b["input"]).argmax(-1) == b["label"]).float() for b in loader])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--labelled", type=float, nargs="+", default=[0.01, 0.05, 0.1, 1.0])
    args = parser.parse_args()
    full = mnist(args.data, args.epochs)
    folder = tempfile.TemporaryDirectory()
    teacher = cached(full, trained_teacher(full, args.seeds), folder.name)

    header = (
        "labelled | student alone (test) | distilled, with the transfer set (test) | margin [95% interval] | verdict"
    )
    print(f"\n| {header} |")
    print("| --- | --- | --- | --- | --- |")
    for share in args.labelled:
        setup = mnist(args.data, args.epochs, labelled_fraction=share)
        sampler = RandomSampler(setup.splits.labelled, num_samples=len(setup.splits.train))
        labelled = DataLoader(setup.splits.labelled, batch_size=128, sampler=sampler)
        alone, distilled = [], []
        for seed in args.seeds:
            options = setup.options.model_copy(update={"seed": seed})
            scratch, student = setup.net(seed, STUDENT), setup.net(seed, STUDENT)
            fit(Supervised(scratch), labelled, setup.val, options)
            fit(Distiller(student, teacher, [losses.KD(temperature=4.0, alpha=0.5)]), setup.train, setup.val, options)
            alone.append(correct(scratch, setup.test))
            distilled.append(correct(student, setup.test))
        differences = (torch.stack(distilled) - torch.stack(alone)).mean(0)
        low, high = paired_interval(differences)
        verdict = "helped" if low > 0 else "negative transfer" if high < 0 else "no difference"

        def shown(rights: list[torch.Tensor]) -> str:
            means = [r.mean().item() for r in rights]
            return f"{statistics.mean(means):.4f} ± {statistics.stdev(means) if len(means) > 1 else 0:.4f}"

        count = len(setup.splits.labelled)
        print(
            f"| {share:.0%} ({count:,} labels) | {shown(alone)} | {shown(distilled)} | "
            f"{differences.mean().item() * 100:+.2f} [{low * 100:+.2f}, {high * 100:+.2f}] | {verdict} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
