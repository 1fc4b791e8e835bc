"""What a task tells the shared study (`study.py`): which settings a trial tries, what it trains, and how its
validation score is read. The study, its folder and its resume are written once; a task only answers these.

Both tasks search a soft loss's temperature, the weight of the hard loss (alpha) and the learning rate over
the ranges of their `tune` group (`SearchSpace`), so those suggestions live here, named alike in every study.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from distill.recipes import RECIPES
from distill.tasks import experiment

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from distill.config import Config
    from distill.stages import Stages


@dataclass
class Setting:
    """One trial's choices as the config holds them: the `method` keys it sets, and the learning rate; the
    trial trains with them and best.yaml writes them, so the two cannot disagree."""

    method: dict[str, Any]
    lr: float


class Search:
    """A task's side of `distill tune`. A subclass sets `metric` and `direction` and implements `prepare`,
    `setting`, `module`, `score` and `show`; everything it needs is built in `__init__`, before any file is
    written, so a bad config fails without leaving a folder."""

    metric: ClassVar[str]  # the validation figure trials are judged by, in words
    direction: ClassVar[Literal["maximize", "minimize"]]

    def __init__(self, cfg: Config):
        self.cfg, self.space = cfg, cfg.tune
        self.exp = experiment(cfg)
        self.recipe = RECIPES.get(cfg.method.kind)(self.exp)  # builds and checks every network: nothing written

    def prepare(self, stages: Stages) -> float:
        """Train what every trial shares (the teacher unless given, the student alone) or load it; the student
        alone's score, the reference a setting must beat."""
        raise NotImplementedError

    def setting(self, trial: optuna.Trial) -> Setting:
        raise NotImplementedError

    def module(self, setting: Setting) -> nn.Module:
        """What a trial trains: a fresh student (the same initial weights in every trial) with the setting."""
        raise NotImplementedError

    def score(self, record: dict[str, Any]) -> float:
        """The trial's score in one epoch's record of `fit`."""
        raise NotImplementedError

    def show(self, value: float) -> str:
        """A score in words, for the progress lines and best.yaml's header."""
        raise NotImplementedError

    def better(self, value: float, than: float) -> bool:
        return value > than if self.direction == "maximize" else value < than

    # the suggestions both tasks make, over the ranges of `SearchSpace`
    def temperature(self, trial: optuna.Trial) -> float:
        return trial.suggest_float("temperature", *self.space.temperature, log=True)

    def alpha(self, trial: optuna.Trial) -> float:
        return trial.suggest_float("alpha", *self.space.alpha)

    def lr(self, trial: optuna.Trial) -> float:
        """The learning rate, by default around the config's own: a third of it to three times it."""
        low, high = self.space.lr or (self.cfg.train.lr / 3, self.cfg.train.lr * 3)
        return trial.suggest_float("lr", low, high, log=True)


class Replay:
    """A finished trial's choices, answered again: `setting` run on it gives that trial's `Setting`, which is
    how best.yaml is written without a second copy of each task's suggestions."""

    def __init__(self, params: dict[str, Any]):
        self.params = params

    def suggest_categorical(self, name: str, choices: list[Any]) -> Any:
        return self.params[name]

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        return self.params[name]
