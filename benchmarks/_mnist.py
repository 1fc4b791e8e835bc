"""The MNIST set-up that benchmarks/methods.py and benchmarks/regimes.py share.

The 10,000 MNIST test images, split once (seed 0) into 8,000 for training and 2,000 held out; AdamW at
lr 3e-3 with a cosine schedule, batch 128; a CNN teacher and a much smaller CNN student.
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

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-test"
TEACHER = {"channels": (32, 64, 128), "hidden": 256}  # taps: block1 (14x14) .. block3 (3x3), pool (128)
STUDENT = {"channels": (8, 16), "hidden": 32}  # taps: block1 (14x14), block2 (7x7), pool (16)


@dataclass
class Mnist:
    splits: DataSplits
    num_samples: int
    train: DataLoader
    val: DataLoader
    options: TrainOptions
    description: str  # the data's, with paths relative to where the script ran

    def net(self, seed: int, spec: dict) -> nn.Module:
        torch.manual_seed(seed)
        return cnn(self.splits.input_shape, self.splits.num_classes, **spec)


def mnist(path: str | Path, epochs: int) -> Mnist:
    data = load("idx", path=str(path))
    splits = split(data, val_fraction=0.2, seed=0)
    options = TrainOptions(
        epochs=epochs, optimizer="adamw", lr=3e-3, weight_decay=1e-4, warmup_epochs=0.5, progress=False, log_every=50
    )
    train = DataLoader(splits.train, batch_size=128, shuffle=True)
    folder = str(Path(path).resolve())
    description = splits.description.replace(folder, os.path.relpath(folder))
    return Mnist(splits, len(data.labels), train, DataLoader(splits.val, batch_size=512), options, description)


def trained_teacher(setup: Mnist, seeds: list[int]) -> nn.Module:
    """The teacher (seed 0), trained once; prints the set-up."""
    teacher = setup.net(0, TEACHER)
    accuracy = fit(Supervised(teacher), setup.train, setup.val, setup.options).epochs[-1]["val/accuracy"]
    print(f"data: {setup.description}")
    print(f"teacher cnn{TEACHER}: {count_params(teacher):,} params, accuracy {accuracy:.4f}")
    print(
        f"student cnn{STUDENT}: {count_params(setup.net(0, STUDENT)):,} params; "
        f"{setup.options.epochs} epochs, seeds {seeds}"
    )
    return teacher
