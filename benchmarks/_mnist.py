"""The MNIST set-up that the benchmarks share.

The 10,000 MNIST test images, split once (seed 0) into 6,400 for training, 1,600 for validation (which picks
settings) and 2,000 for test (which the tables report); AdamW at lr 3e-3 with a cosine schedule, batch 128; a
CNN teacher (15 epochs) and a much smaller CNN student, both pooling to a small grid before their heads. The
teacher's outputs are cached once (float32, with the features the methods tap), so a distillation step costs
a student step and a read.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from distill import Supervised, TrainOptions, fit
from distill.cache.logits import TeacherCache
from distill.cache.write import write_cache
from distill.data import ArrayData, DataSplits, load, split
from distill.models import cnn, count_params
from distill.modules.self_distiller import ensemble_accuracy

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-test"
TEACHER = {"channels": (32, 64, 128), "hidden": 256}  # taps: block2 (64, 7x7), block3 (128, 3x3), hidden (256)
TEACHER_EPOCHS = 15
STUDENT = {"channels": (6, 12), "hidden": 24}  # taps: block1 (6, 14x14), block2 (12, 7x7), hidden (24)
FEATURES = ("block2", "block3", "hidden")  # the teacher's taps the methods read


@dataclass
class Mnist:
    data: ArrayData
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
    return Mnist(data, splits, len(data.labels), train, fixed["val"], fixed["test"], options, description)


def accuracy(net: nn.Module, loader: DataLoader) -> float:
    return ensemble_accuracy([net], loader)


def cached(setup: Mnist, teacher: nn.Module, folder: str | Path) -> TeacherCache:
    """The teacher's outputs on every image, with FEATURES, in float32: written once, read by sample index."""
    write_cache(
        folder,
        teacher,
        setup.data.inputs,
        setup.data.labels,
        data="mnist",
        dtype="float32",
        features=FEATURES,
        progress=False,
    )
    return TeacherCache(folder)


def trained_teacher(setup: Mnist, seeds: list[int]) -> nn.Module:
    """The teacher (seed 0), trained once on every training label; prints the set-up."""
    teacher = setup.net(0, TEACHER)
    labelled = DataLoader(setup.splits.teacher, batch_size=128, shuffle=True)
    fit(Supervised(teacher), labelled, setup.val, setup.options.model_copy(update={"epochs": TEACHER_EPOCHS}))
    print(f"data: {setup.description}")
    test = accuracy(teacher, setup.test)
    print(f"teacher cnn{TEACHER}: {count_params(teacher):,} params, {TEACHER_EPOCHS} epochs, test accuracy {test:.4f}")
    print(
        f"student cnn{STUDENT}: {count_params(setup.net(0, STUDENT)):,} params; "
        f"{setup.options.epochs} epochs, seeds {seeds}"
    )
    return teacher
