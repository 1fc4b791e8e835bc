"""What a task is to the rest of the library: the built experiment of a config, which knows its data, its
models, the model trained alone and what a run reports. `classify.py` and `lm.py` are the two tasks.

A recipe, the stage runner and the pipeline talk to an experiment only through `Task`, so each way of
distilling, the seeds loop and the run folder are written once for every task.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from torch import nn
from torch.utils.data import DataLoader

from distill.weights import start_of

if TYPE_CHECKING:
    from distill.config import Config, ModelConfig
    from distill.train import TrainOptions

logger = logging.getLogger("distill")
T = TypeVar("T", bound="Shared")


class Task(Protocol):
    """The built pieces of a config that every stage shares, and what the task means."""

    cfg: Config
    splits: Any  # the task's parts: train, val, test (and, for a classifier, labelled and teacher)
    train_loader: DataLoader  # every training row: what a student learns from
    labelled_loader: DataLoader  # what the model alone learns from, as many batches an epoch
    teacher_loader: DataLoader  # what a teacher trained here learns from, as many batches an epoch
    val_loader: DataLoader  # picks: the best epoch, tuning
    test_loader: DataLoader  # reports: never seen by training or selection

    @property
    def run_dir(self) -> Path: ...

    def log(self, message: str, *args: object) -> None: ...

    def seeded(self: T, seed: int) -> T: ...

    def net(self, field: str, weights: str | Path | None = None) -> nn.Module:
        """The model of the config group `field`, seeded with train.seed, with `weights` loaded when given."""

    def teacher_given(self) -> bool:
        """Whether the teacher comes ready (weights or a pretrained model) rather than trained here."""

    def alone(self, model: nn.Module, *, label_smoothing: float = 0.0) -> nn.Module:
        """What trains `model` on the labels alone: the teacher trained here, and the student alone."""

    def alone_options(self, options: TrainOptions, epochs: int) -> TrainOptions:
        """`options` for `alone` modules, with `epochs`."""

    def summarize(self, runs: list[dict[str, nn.Module]], temperature: float | None) -> dict[str, Any]:
        """Each model's rows (`runs`: one dict of models per seed, in table order) and the verdict."""


class Shared:
    """What every task's experiment does alike; a dataclass with a `cfg`."""

    cfg: Config

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    def log(self, message: str, *args: object) -> None:
        """An info line about this run, prefixed with its name."""
        logger.info("[%s] " + message, self.cfg.name, *args)

    def seeded(self: T, seed: int) -> T:
        """The experiment with train.seed = `seed`: the same data, splits and loaders."""
        train = self.cfg.train.model_copy(update={"seed": seed})
        return dataclasses.replace(self, cfg=self.cfg.model_copy(update={"train": train}))


def started_from(nets: list[nn.Module]) -> str | None:
    """A summary row's `started_from`: where its model's weights came from before the run trained it (each
    seed's, once each, joined by "; "); None when no start was recorded."""
    starts = [str(start) for net in nets if (start := start_of(net)) is not None]
    return "; ".join(dict.fromkeys(starts)) or None


def model_spec(cfg: Config, field: str) -> ModelConfig | None:
    """The model group at a config path ("student", "method.peers.0"); None for an absent optional group."""
    node: Any = cfg
    for part in field.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part, None)
        if node is None:
            return None
    return node
