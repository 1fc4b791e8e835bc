"""The MNIST set-up that the benchmarks share.

The 10,000 MNIST test images, split once (seed 0) into 6,400 for training, 1,600 for validation (which picks
settings) and 2,000 for test (which the tables report); AdamW at lr 3e-3 with a cosine schedule, batch 128; a
CNN teacher and a much smaller CNN student, both pooling to a 4x4 grid before their heads.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from distill import Supervised, TrainOptions, fit
from distill.data import DataSplits, load, split
from distill.models import cnn, count_params
from distill.selfdistill import ensemble_accuracy

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-test"
TEACHER = {"channels": (32, 64), "hidden": 128}  # taps: block1 (14x14), block2 (7x7), pool (64 x 4 x 4)
STUDENT = {"channels": (8, 16), "hidden": 32}  # taps: block1 (14x14), block2 (7x7), pool (16 x 4 x 4)


@dataclass
class Mnist:
    splits: DataSplits
    num_samples: int
    train: DataLoader
    val: DataLoader
    test: DataLoader
    options: TrainOptions
    description: str  # the data's, with paths relative to where the script ran

    def net(self, seed: int, spec: dict) -> nn.Module:
        torch.manual_seed(seed)
        return cnn(self.splits.input_shape, self.splits.num_classes, **spec)


def mnist(path: str | Path, epochs: int, **split_options: object) -> Mnist:
    data = load("idx", path=str(path))
    splits = split(data, val_fraction=0.2, test_fraction=0.2, seed=0, **split_options)
    options = TrainOptions(
        epochs=epochs, optimizer="adamw", lr=3e-3, weight_decay=1e-4, warmup_epochs=0.5, progress=False, log_every=50
    )
    train = DataLoader(splits.train, batch_size=128, shuffle=True)
    folder = str(Path(path).resolve())
    description = splits.description.replace(folder, os.path.relpath(folder))
    fixed = {part: DataLoader(getattr(splits, part), batch_size=512) for part in ("val", "test")}
    return Mnist(splits, len(data.labels), train, fixed["val"], fixed["test"], options, description)


def accuracy(net: nn.Module, loader: DataLoader) -> float:
    return ensemble_accuracy([net], loader)


def trained_teacher(setup: Mnist, seeds: list[int]) -> nn.Module:
    """The teacher (seed 0), trained once on every training label; prints the set-up."""
    teacher = setup.net(0, TEACHER)
    labelled = DataLoader(setup.splits.teacher, batch_size=128, shuffle=True)
    fit(Supervised(teacher), labelled, setup.val, setup.options)
    print(f"data: {setup.description}")
    print(
        f"teacher cnn{TEACHER}: {count_params(teacher):,} params, test accuracy {accuracy(teacher, setup.test):.4f}"
    )
    print(
        f"student cnn{STUDENT}: {count_params(setup.net(0, STUDENT)):,} params; "
        f"{setup.options.epochs} epochs, seeds {seeds}"
    )
    return teacher
