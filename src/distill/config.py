"""The typed experiment config. YAML files and `--set key=value` overrides are two views of it.

The way of distilling is one explicit choice, `method: {kind: ..., ...}`: a discriminated union of the
registered recipes' keys, so keys of two ways of distilling cannot be written together.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar, Union

import yaml
from pydantic import Field, StrictInt, ValidationError, model_validator

from distill._io import existing
from distill.errors import ConfigError
from distill.recipes import RECIPES, methods
from distill.registry import did_you_mean
from distill.schema import (
    NAME,
    CacheConfig,
    DataConfig,
    Group,
    ModelConfig,
    TeacherConfig,
    TuneConfig,
    describe_error,
)
from distill.train import TrainOptions

G = TypeVar("G", bound=Group)
Method = Annotated[Union[methods()], Field(discriminator="kind")]  # noqa: UP007  (a union built at run time)


class Config(Group):
    name: str = Field(pattern=NAME, description="run name: results go to out_dir/name")
    out_dir: str = "runs"
    scratch: bool = Field(True, description="also train the student alone, same budget, to show what KD added")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig | None = Field(None, description="the teacher; every method.kind but self_distill has one")
    student: ModelConfig
    method: Method = Field(default_factory=RECIPES.get("offline").Method, description="the way of distilling")
    seeds: list[StrictInt] | None = Field(
        None,
        min_length=1,
        max_length=100,
        description="train the student and the scratch baseline once per seed (one teacher): figures are means",
    )
    train: TrainOptions = Field(default_factory=TrainOptions)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig, description="the search space of `distill tune`")

    @model_validator(mode="after")
    def _check_teacher(self) -> Config:
        """The teacher group as the method reads it: required, absent, or without the keys it would ignore."""
        kind, used = self.method.kind, self.method.teacher_keys
        if not used and self.teacher is not None:
            raise ValueError(f"teacher: method.kind '{kind}' trains without a teacher; drop teacher")
        if used and self.teacher is None:
            raise ValueError(f"teacher: missing; method.kind '{kind}' needs one (only self_distill trains without)")
        unused = [key for key in self.teacher.given() if key not in used] if used else []
        if unused:
            raise ValueError(f"teacher.{unused[0]}: method.kind '{kind}' does not use it; drop it")
        self.method.check(self)
        return self

    @model_validator(mode="after")
    def _check_seeds(self) -> Config:
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

    @model_validator(mode="after")
    def _check_cache(self) -> Config:
        cached = self.teacher is not None and self.teacher.cache is not None
        augmented = self.data.augment != "none"
        if self.cache.views is not None and not augmented:
            raise ValueError("cache.views records augmented views of the samples: set data.augment, e.g. crop_flip")
        if cached and augmented and self.cache.views is None and not self.cache.allow_augmented:
            raise ValueError(
                f"data.augment is {self.data.augment!r} but a cache of clean inputs does not match augmented ones; "
                "set cache.views: K to record the teacher on K augmented views of each sample (or "
                "cache.allow_augmented: true to accept clean outputs)"
            )
        return self

    @model_validator(mode="after")
    def _check_teacher_epochs(self) -> Config:
        epochs = self.teacher.epochs if self.teacher is not None else None
        if epochs is not None and any(m >= epochs for m in self.train.milestones):
            raise ValueError(
                f"teacher.epochs={epochs} must exceed every entry of train.milestones {self.train.milestones}"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_yaml(self) -> str:
        """The resolved config, every default written out."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


MOVED = {
    "distill": "terms and label_smoothing are keys",
    "stages": "stages is a key",
    "assistant": "assistant is a key",
}


def _describe(error: dict) -> str:
    """One line for a validation error. Inside `method` pydantic puts the kind into the error's location
    (method.online.stages): it is taken out, and a key the kind does not have is named with the kind."""
    loc = error["loc"]
    if loc[:1] == ("method",) and len(loc) > 1 and loc[1] in RECIPES:
        kind, inner = loc[1], {**error, "loc": loc[2:]}
        method = RECIPES.get(kind).Method
        if error["type"] == "extra_forbidden" and len(loc) == 3:
            keys = ", ".join(method.model_fields)
            close = did_you_mean(str(loc[2]), list(method.model_fields))
            return f"method.{loc[2]}: not a key of method.kind '{kind}'{close}; its keys: {keys}"
        return describe_error(inner, method, prefix="method")
    if error["type"] in ("union_tag_not_found", "union_tag_invalid"):
        given = f"'{error['input'].get('kind')}' is not" if error["type"] == "union_tag_invalid" else "missing; give"
        return f"method.kind: {given} one of {', '.join(RECIPES.names())}"
    if error["type"] == "extra_forbidden" and len(loc) == 1 and (loc[0] in RECIPES or loc[0] in MOVED):
        if loc[0] in RECIPES:
            return f"{loc[0]}: unknown key; the way of distilling is chosen as method: {{kind: {loc[0]}, ...}}"
        return f"{loc[0]}: unknown key; {MOVED[loc[0]]} of method (kind: offline)"
    return describe_error(error, Config)


def validated(model: type[G], raw: dict[str, Any], source: str, describe: Callable[[dict], str]) -> G:
    """`raw` as a `model`, or one ConfigError from `source`: its first problem, as `describe` words it."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        # a misspelt key first: it usually explains the "missing" error beside it
        errors = sorted(e.errors(), key=lambda error: error["type"] != "extra_forbidden")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {describe(errors[0])}{more}") from None


def validate(raw: dict[str, Any], source: str) -> Config:
    return validated(Config, raw, source, _describe)


def read_saved(path: Path) -> Config:
    """The resolved config a run saved: every group written out, so one missing means the file is damaged or
    was not written by distill (a saved config must not fall back on defaults)."""
    raw = read_yaml(path)
    missing = [key for key in Config.model_fields if key not in raw]
    if missing:
        raise ConfigError(f"{path}: no '{missing[0]}' key; the file is damaged or was not written by distill train")
    return validate(raw, str(path))


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `key.sub=value` to the raw mapping; the value is parsed as YAML (5, 0.1, true, [1, 2])."""
    key, sep, text = assignment.partition("=")
    if not sep or not all(key.split(".")):
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. --set train.epochs=5")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    *parents, leaf = key.split(".")
    node: Any = raw
    for depth, part in enumerate(parents):
        node = _step(node, part, ".".join(parents[:depth]), key)
    if isinstance(node, list):
        _check_index(node, leaf, ".".join(parents), key)
        node[int(leaf)] = value
    elif isinstance(node, dict):
        node[leaf] = value
    else:
        raise ConfigError(f"--set {key}: {'.'.join(parents)} is a value, not a group")


def _step(node: Any, part: str, where: str, key: str) -> Any:
    """One level down from `node` (a group or a list) for `--set key`; groups are made as needed."""
    if isinstance(node, list):
        _check_index(node, part, where, key)
        return node[int(part)]  # method.stages.0.epochs, method.terms.1.weight
    if not isinstance(node, dict):
        raise ConfigError(f"--set {key}: {where} is a value, not a group")
    if part.isdigit() and part not in node:
        raise ConfigError(f"--set {key}: {where} is not a list in this config; set the whole list, {where}=[...]")
    return node.setdefault(part, {})


def _check_index(items: list, part: str, where: str, key: str) -> None:
    if not part.isdigit() or int(part) >= len(items):
        raise ConfigError(f"--set {key}: {where} has {len(items)} entries; give an index below {len(items)}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML that refuses a key given twice in one mapping (plain YAML keeps the last, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' appears twice in one group", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = existing(path, "a YAML config file", kind="file")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader: never constructs objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; a config is YAML") from None
    groups = "a config is a mapping of groups (data, teacher, student, distill, train)"
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; {groups}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {groups}")
    return raw


def read_with_overrides(path: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    """A config file's mapping with each `key=value` of `overrides` applied, before validation."""
    raw = read_yaml(path)
    for assignment in overrides:
        apply_override(raw, assignment)
    return raw


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read, override and validate a config file; any problem is one ConfigError naming the key."""
    return validate(read_with_overrides(path, overrides), str(path))
