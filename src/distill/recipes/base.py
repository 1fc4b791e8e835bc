"""The shape every recipe has, and the registry that finds one by its `method.kind`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from torch import nn

from distill.registry import Registry

if TYPE_CHECKING:
    from distill.config import Config, MethodGroup
    from distill.stages import Stages
    from distill.tasks.base import Task


@dataclass
class Trained:
    """What a recipe's run produced: the models to report on by row name, in table order; the stages that
    distilled the student, by name; and any figure of the recipe's own for the summary."""

    models: dict[str, nn.Module]
    stages: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


class Recipe(Protocol):
    Method: ClassVar[type[MethodGroup]]

    def __init__(self, exp: Task) -> None: ...

    def train(self, stages: Stages) -> Trained: ...

    @staticmethod
    def fields(cfg: Config) -> dict[str, str]: ...


RECIPES: Registry[type[Recipe]] = Registry("method kind")
