"""The typed experiment config. YAML files and `--set key=value` overrides are two views of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from distill.errors import ConfigError
from distill.registry import did_you_mean
from distill.train import TrainOptions


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Group):
    name: str = Field("digits", description="digits | idx | csv | tensors")
    path: str | None = Field(None, description="file or folder for idx, csv and tensors")
    label_column: str | None = Field(None, description="csv: the column holding the class")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of samples held out for validation")
    seed: StrictInt = Field(0, ge=0, description="seed of the train/validation split")
    batch_size: StrictInt = Field(64, ge=1, le=1_000_000)
    num_workers: StrictInt = Field(0, ge=0, le=256)


class ModelConfig(_Group):
    model: str = Field(description="a built-in name (mlp, cnn) or 'package.module:factory'")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model's factory")
    weights: str | None = Field(None, description="safetensors or .pt state dict to load")


class TeacherConfig(ModelConfig):
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="precision of the teacher's forward")
    epochs: StrictInt | None = Field(None, ge=1, le=100_000, description="epochs when trained here (no weights)")


class DistillConfig(_Group):
    temperature: float = Field(4.0, gt=0, le=1000, description="T: softens both distributions")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the HARD (label) loss; 1 - alpha weights the soft")
    soft: Literal["kl", "ce"] = "kl"
    t2: bool = Field(True, description="scale the soft loss by T^2")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="on the hard loss, for student and scratch")


class Config(_Group):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", description="run name: results go to out_dir/name")
    out_dir: str = "runs"
    scratch: bool = Field(True, description="also train the student alone, same budget, to show what KD added")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig
    student: ModelConfig
    distill: DistillConfig = Field(default_factory=DistillConfig)
    train: TrainOptions = Field(default_factory=TrainOptions)

    @model_validator(mode="after")
    def _check_teacher_epochs(self) -> Config:
        epochs = self.teacher.epochs
        if epochs is not None and self.teacher.weights is not None:
            raise ValueError("teacher.epochs applies only when the teacher is trained here; drop it or teacher.weights")
        if epochs is not None and any(m >= epochs for m in self.train.milestones):
            raise ValueError(
                f"teacher.epochs={epochs} must exceed every entry of train.milestones {self.train.milestones}"
            )
        return self

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _known_keys(loc: tuple) -> list[str]:
    """Field names of the group at `loc` (the key's parents), for 'did you mean' hints."""
    model: Any = Config
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return list(getattr(model, "model_fields", {}))


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key{did_you_mean(str(error['loc'][-1]), _known_keys(error['loc'][:-1]))}"
    if error["type"] == "missing":
        return f"{key}: missing; add it to the config"
    message = error["msg"].removeprefix("Value error, ")
    return f"{key}: {message}, got {error['input']!r}" if key else message


def validate(raw: dict[str, Any], source: str) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        errors = e.errors()
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_describe(errors[0])}{more}") from None


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `key.sub=value` to the raw mapping; the value is parsed as YAML (5, 0.1, true, [1, 2])."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. --set train.epochs=5")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = text
    *parents, leaf = key.split(".")
    node = raw
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a group of keys")
        node = child
    node[leaf] = value


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
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        raw = yaml.load(path.read_text(), Loader=_UniqueKeyLoader)  # a SafeLoader: never constructs objects
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}: invalid YAML{where}: {problem}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file; a config is YAML") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config is a mapping of groups (data, teacher, student, distill, train)")
    return raw


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read, override and validate a config file; any problem is one ConfigError naming the key."""
    raw = read_yaml(path)
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate(raw, str(path))
