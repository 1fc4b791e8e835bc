"""The config's foundations: a group that refuses unknown keys, the keys every run has, and pydantic's errors
worded as one line naming the key.

Every group forbids unknown keys, so a misspelt key is an error, never a silent default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from distill.registry import did_you_mean
from distill.train import TrainOptions

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class Group(BaseModel):
    model_config = ConfigDict(extra="forbid")

    def given(self) -> list[str]:
        """The keys whose value differs from the default: what a config sets, also once it is resolved (a
        resolved config writes every default out)."""
        return [
            key
            for key, field in type(self).model_fields.items()
            if getattr(self, key) != field.get_default(call_default_factory=True)
        ]


class MethodGroup(Group):
    """The keys of one way of distilling (`method:`); each recipe's model starts with `kind: Literal["NAME"]`."""

    teacher_keys: ClassVar[tuple[str, ...]] = ()  # the keys of the `teacher` group it reads; () for no teacher
    several_seeds: ClassVar[bool] = True  # whether `seeds` may train its scratch and student more than once

    def soft_temperature(self) -> float | None:
        """The temperature of the soft loss the student learns with, for the diagnosis; None without one."""
        return getattr(self, "temperature", None)

    def check(self, cfg: Any) -> None:
        """Checks that need the rest of the config (the train group, the student); raise ValueError naming keys."""


class RunRoot(Group):
    """The keys of every run, whatever its task; each task's root adds its data, models and method."""

    task: str = Field(description="classify (the default) or lm: what the models do, and so the data they read")
    name: str = Field(pattern=NAME, description="run name: results go to out_dir/name")
    out_dir: str = "runs"
    scratch: bool = Field(True, description="also train the student alone, same budget, to show what KD added")
    seeds: list[StrictInt] | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="train the student and the scratch baseline once per seed (one teacher): figures are means",
    )
    train: TrainOptions = Field(default_factory=TrainOptions)

    @model_validator(mode="after")
    def _check_seeds(self) -> RunRoot:
        if self.seeds is None:
            return self
        if len(set(self.seeds)) != len(self.seeds) or min(self.seeds) < 0:
            raise ValueError(f"seeds: give each seed once, each >= 0, got {self.seeds}")
        if len(self.seeds) > 1 and not self.method.several_seeds:
            raise ValueError(f"seeds: method.kind '{self.method.kind}' trains with one seed; give one, or train.seed")
        return self

    @property
    def run_seeds(self) -> list[int]:
        """The seeds the student and scratch train with: `seeds`, else train.seed alone."""
        return self.seeds or [self.train.seed]

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_yaml(self) -> str:
        """The resolved config, every default written out."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def known_keys(root: type[BaseModel], loc: tuple) -> list[str]:
    """Field names of the group at `loc` (the key's parents) under `root`, for 'did you mean' hints."""
    model: Any = root
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        # an optional group (`ModelConfig | None`) is looked up as its model
        model = next((a for a in get_args(field.annotation) if hasattr(a, "model_fields")), field.annotation)
    return list(getattr(model, "model_fields", {}))


def describe_error(error: dict, root: type[BaseModel], prefix: str = "") -> str:
    """One line for one of pydantic's errors under the model `root`, naming the key (after `prefix`)."""
    key = ".".join([prefix, *map(str, error["loc"])] if prefix else map(str, error["loc"]))
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key{did_you_mean(str(error['loc'][-1]), known_keys(root, error['loc'][:-1]))}"
    if error["type"] == "missing":
        return f"{key}: missing; add it to the config"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error":  # a check across fields: its message names the keys it needs
        return message if not key or message.startswith(key) else f"{key}: {message}"
    return f"{key}: {message}, got {error['input']!r}" if key else message
