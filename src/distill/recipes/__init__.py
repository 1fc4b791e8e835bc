"""Recipes: one small module per way of distilling, chosen by the config's `method.kind`.

A recipe is a class registered in `RECIPES` under its kind, with one shape:

    Method                      the pydantic model of its `method:` keys, `kind: Literal["NAME"]` first;
                                `teacher_keys` lists the keys of the `teacher` group it reads (none: no teacher)
    __init__(exp)               builds every network and loss term and checks them on copies: a mistake fails
                                here, before any file is written
    train(stages) -> Trained    trains what is not trained yet, stage by stage (`Stages` skips finished
                                stages and resumes checkpoints), and returns the models to report on
    fields(cfg) -> {row: key}   the config group that describes each model it saves, in table order

Adding a way of distilling is one new module here and its import below (docs/architecture.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from torch import nn

from distill.registry import Registry

if TYPE_CHECKING:
    from distill.build import Experiment
    from distill.config import Config
    from distill.stages import Stages
    from distill.schema import Group


@dataclass
class Trained:
    """What a recipe's run produced: the models to report on by row name, in table order; the stages that
    distilled the student, by name; and any figure of the recipe's own for the summary."""

    models: dict[str, nn.Module]
    stages: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


class Recipe(Protocol):
    Method: ClassVar[type[Group]]

    def __init__(self, exp: Experiment) -> None: ...

    def train(self, stages: Stages) -> Trained: ...

    @staticmethod
    def fields(cfg: Config) -> dict[str, str]: ...


RECIPES: Registry[type[Recipe]] = Registry("method kind")

from distill.recipes import born_again, offline, online, self_distill  # noqa: E402, F401  (registers each)


def methods() -> tuple[type[Group], ...]:
    """The `method:` schema of every registered recipe, for the config's discriminated union."""
    return tuple(RECIPES.get(kind).Method for kind in RECIPES.names())
