"""Recipes: one small module per way of distilling, chosen by the config's `method.kind`.

A recipe is a class registered in `RECIPES` under its kind, with one shape:

    Method                      the pydantic model of its `method:` keys (in config/methods.py)
    __init__(exp)               builds every network and loss term from the task's experiment (a `Task`,
                                tasks/base.py) and checks them on copies: a mistake fails here, before any
                                file is written
    train(stages) -> Trained    trains what is not trained yet, stage by stage (`Stages` skips finished
                                stages and resumes checkpoints), and returns the models to report on
    fields(cfg) -> {row: key}   the config group that describes each model it saves, in table order

Adding a way of distilling is its keys in config/methods.py, one new module here and its import below
(docs/architecture.md).
"""

from distill.recipes import born_again, offline, on_policy, online, self_distill, token  # noqa: F401  (registers)
from distill.recipes.base import RECIPES, Recipe, Trained

__all__ = ["RECIPES", "Recipe", "Trained"]
