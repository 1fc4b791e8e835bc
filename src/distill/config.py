"""The typed experiment config. YAML files and `--set key=value` overrides are two views of it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationError, model_validator

from distill.errors import ConfigError
from distill.registry import did_you_mean
from distill.train import TrainOptions


class _Group(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DataConfig(_Group):
    name: str = Field("digits", description="digits | idx | csv | tensors | cifar10 | cifar100")
    path: str | None = Field(None, description="file or folder for idx, csv, tensors and cifar")
    label_column: str | None = Field(None, description="csv: the column holding the class")
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share held out for validation (cifar: its test set)")
    augment: str = Field("none", description="training augmentation: none | crop_flip (pad 4, random crop, flip)")
    seed: StrictInt = Field(0, ge=0, description="seed of the train/validation split")
    batch_size: StrictInt = Field(64, ge=1, le=1_000_000)
    num_workers: StrictInt = Field(0, ge=0, le=256)


class ModelConfig(_Group):
    model: str = Field(description="a built-in name (mlp, cnn) or 'package.module:factory'")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model's factory")
    weights: str | None = Field(None, description="safetensors or .pt state dict to load")


class TeacherConfig(ModelConfig):
    dtype: Literal["float32", "bfloat16"] = Field("float32", description="precision of the teacher's forward")
    cache: str | None = Field(None, description="folder of cached teacher outputs (`distill cache`) to train from")
    epochs: StrictInt | None = Field(None, ge=1, le=100_000, description="epochs when trained here (no weights)")


NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]*$"


class TermConfig(BaseModel):
    """One loss term: `loss` names it in distill.losses.list(); any other key is the loss's own option."""

    model_config = ConfigDict(extra="allow")

    loss: str
    weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="factor of this term in the total loss")
    student: str | None = Field(None, description="feature terms: the student's module path to tap")
    teacher: str | None = Field(None, description="feature terms: the teacher's module path to tap")

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


def _kd() -> list[TermConfig]:
    return [TermConfig(loss="kd", temperature=4.0, alpha=0.5)]


class CacheConfig(_Group):
    """How `distill cache` stores the teacher's outputs (in teacher.cache)."""

    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    top_k: StrictInt | None = Field(None, ge=1, description="keep only the k largest logits (kd only)")
    features: list[str] = Field(default_factory=list, description="teacher module paths to store as well")
    allow_augmented: bool = Field(
        False, description="accept data.augment: the cache then holds clean-input outputs for augmented inputs"
    )
    batch_size: StrictInt = Field(256, ge=1, le=1_000_000)


class DistillConfig(_Group):
    terms: list[TermConfig] = Field(default_factory=_kd, min_length=1, description="the loss terms, summed")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="on every hard loss: scratch, and KD unless set")


class OnlineConfig(_Group):
    """Teacher and student (and any further peers) trained together, with no teacher trained first."""

    mutual: bool = Field(
        True, description="true: each learns from the others (DML); false: the teacher from labels only"
    )
    temperature: float = Field(1.0, gt=0, le=1000)
    weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="factor of the KL term toward the other models")
    peers: list[ModelConfig] = Field(
        default_factory=list, max_length=16, description="more models trained alongside, reported as peer1, peer2, ..."
    )


class BornAgainConfig(_Group):
    """Born-again networks: generations of the teacher's architecture, each learning from the one before."""

    generations: StrictInt = Field(2, ge=1, le=20, description="generations after the teacher (generation 0)")
    temperature: float = Field(1.0, gt=0, le=1000)
    alpha: float = Field(0.0, ge=0, le=1, description="weight of the hard loss (0: pure imitation, as in the paper)")


class SelfDistillConfig(_Group):
    """Deep self-distillation: auxiliary heads on the student's inner blocks learn from its final head while it
    trains; no teacher. The heads are dropped from the saved student."""

    taps: list[str] = Field(min_length=1, description="student module paths that each get an auxiliary head")
    temperature: float = Field(3.0, gt=0, le=1000)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of each head's hard loss (the paper's 1 - alpha)")
    feature_weight: float = Field(0.0, ge=0, allow_inf_nan=False, description="factor of the feature hint (0: off)")
    feature_tap: str | None = Field(None, description="the module whose output is the final feature, for the hint")


class StageConfig(_Group):
    """One stage of a multi-stage student run, e.g. FitNets: a hint stage, then a KD stage."""

    name: str = Field(pattern=NAME)
    epochs: StrictInt = Field(ge=1, le=100_000)
    terms: list[TermConfig] = Field(min_length=1)
    train: dict[str, Any] = Field(default_factory=dict, description="train options that differ in this stage")


class Config(_Group):
    name: str = Field(pattern=NAME, description="run name: results go to out_dir/name")
    out_dir: str = "runs"
    scratch: bool = Field(True, description="also train the student alone, same budget, to show what KD added")
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig | None = Field(None, description="required, except with self_distill")
    student: ModelConfig
    assistant: ModelConfig | None = Field(
        None, description="teacher assistant (TAKD): learns from the teacher, then teaches the student"
    )
    distill: DistillConfig = Field(default_factory=DistillConfig)
    train: TrainOptions = Field(default_factory=TrainOptions)
    cache: CacheConfig = Field(default_factory=CacheConfig)
    online: OnlineConfig | None = Field(None, description="train teacher and student together (online distillation)")
    born_again: BornAgainConfig | None = Field(
        None, description="self-distil the teacher's architecture in generations"
    )
    self_distill: SelfDistillConfig | None = Field(
        None, description="train the student with auxiliary heads on its own blocks, with no teacher"
    )
    stages: list[StageConfig] | None = Field(
        None, min_length=1, description="student stages in order; default: one, of distill.terms"
    )

    @model_validator(mode="after")
    def _check_teacher(self) -> Config:
        if self.self_distill is None:
            if self.teacher is None:
                raise ValueError("teacher: missing; add it to the config (only self_distill trains without one)")
            return self
        groups = ("teacher", "assistant", "online", "born_again", "stages")
        clashes = [key for key in groups if getattr(self, key) is not None] + _distill_keys_set(self)
        if clashes:
            raise ValueError(
                f"self_distill trains the student from its own final head, with no teacher; drop {', '.join(clashes)}"
            )
        return self

    @model_validator(mode="after")
    def _check_stages(self) -> Config:
        if self.stages is None:
            return self
        if "terms" in self.distill.model_fields_set:
            raise ValueError("distill.terms and stages both set: with stages, each stage lists its own terms")
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stages: names must differ, got {names}")
        for i, stage in enumerate(self.stages):
            if "epochs" in stage.train:
                raise ValueError(f"stages.{i}.train.epochs: give a stage's epochs as stages.{i}.epochs")
        for i in range(len(names)):
            self.stage_options(i)  # a bad override fails now, naming its key
        return self

    def student_stages(self) -> list[StageConfig]:
        """The stages that train the student: the listed ones, or one named 'student' from distill and train."""
        return self.stages or [StageConfig(name="student", epochs=self.train.epochs, terms=self.distill.terms)]

    def stage_options(self, i: int) -> TrainOptions:
        stage = self.student_stages()[i]
        try:
            return TrainOptions(**{**self.train.model_dump(), **stage.train, "epochs": stage.epochs})
        except ValidationError as e:
            error = e.errors()[0]
            error["loc"] = ("train", *error["loc"])  # described as the train group's key, then placed in the stage
            raise ValueError(f"stages.{i}.{_describe(error)}") from None

    @model_validator(mode="after")
    def _check_online(self) -> Config:
        if self.online is None or self.teacher is None:  # no teacher: _check_teacher says what is wrong
            return self
        clashes = [
            key
            for key, value in (
                ("stages", self.stages),
                ("assistant", self.assistant),
                ("teacher.cache", self.teacher.cache),
                ("teacher.epochs", self.teacher.epochs),
            )
            if value is not None
        ]
        clashes += _distill_keys_set(self)
        if clashes:
            raise ValueError(
                f"online trains teacher and student together for train.epochs, with its own loss; "
                f"drop {', '.join(clashes)}"
            )
        return self

    @model_validator(mode="after")
    def _check_born_again(self) -> Config:
        if self.born_again is None or self.teacher is None:
            return self
        if (self.student.model, self.student.args) != (self.teacher.model, self.teacher.args):
            raise ValueError(
                "born_again: the student must have the teacher's architecture; give student.model and "
                "student.args as the teacher's"
            )
        others = {
            "stages": self.stages,
            "assistant": self.assistant,
            "online": self.online,
            "teacher.cache": self.teacher.cache,
        }
        clashes = [key for key, value in others.items() if value is not None]
        if "terms" in self.distill.model_fields_set:
            clashes.append("distill.terms")
        if clashes:
            raise ValueError(f"born_again trains its generations with its own loss; drop {', '.join(clashes)}")
        return self

    @model_validator(mode="after")
    def _check_cache(self) -> Config:
        if self.teacher is None:
            return self
        if self.teacher.cache is not None and self.teacher.weights is None:
            raise ValueError("teacher.cache needs teacher.weights: the file the cache was made from (it is checked)")
        if self.data.augment != "none" and self.teacher.cache is not None and not self.cache.allow_augmented:
            raise ValueError(
                f"data.augment is {self.data.augment!r} but a cache holds the teacher's outputs on clean inputs, "
                "which do not match augmented ones; set cache.allow_augmented: true to accept that"
            )
        return self

    @model_validator(mode="after")
    def _check_teacher_epochs(self) -> Config:
        if self.teacher is None:
            return self
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
        """The resolved config, every default written out (distill.terms only where stages, online, born_again or
        self_distill do not replace it)."""
        resolved = self.model_dump(mode="json")
        if self.stages or self.online or self.born_again or self.self_distill:
            del resolved["distill"]["terms"]
        return yaml.safe_dump(resolved, sort_keys=False)


def _distill_keys_set(cfg: Config) -> list[str]:
    """The distill group's settings a config gives: online and self_distill train with losses of their own.
    (A resolved config writes label_smoothing out, at 0 when unused.)"""
    given = ["distill.terms"] if "terms" in cfg.distill.model_fields_set else []
    return given + (["distill.label_smoothing"] if cfg.distill.label_smoothing else [])


def _known_keys(loc: tuple) -> list[str]:
    """Field names of the group at `loc` (the key's parents), for 'did you mean' hints."""
    model: Any = Config
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        # an optional group (`ModelConfig | None`) is looked up as its model
        model = next((a for a in get_args(field.annotation) if hasattr(a, "model_fields")), field.annotation)
    return list(getattr(model, "model_fields", {}))


def _describe(error: dict) -> str:
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        return f"{key}: unknown key{did_you_mean(str(error['loc'][-1]), _known_keys(error['loc'][:-1]))}"
    if error["type"] == "missing":
        return f"{key}: missing; add it to the config"
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "value_error":  # a check across fields: its message names the keys it needs
        return message if not key or message.startswith(key) else f"{key}: {message}"
    return f"{key}: {message}, got {error['input']!r}" if key else message


def validate(raw: dict[str, Any], source: str) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as e:
        # a misspelt key first: it usually explains the "missing" error beside it
        errors = sorted(e.errors(), key=lambda error: error["type"] != "extra_forbidden")
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise ConfigError(f"{source}: {_describe(errors[0])}{more}") from None


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
        return node[int(part)]  # stages.0.epochs, distill.terms.1.weight
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
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"config file {path} is a folder; give the YAML file inside it")
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
    groups = "a config is a mapping of groups (data, teacher, student, distill, train)"
    if raw is None:
        raise ConfigError(f"{path}: the file is empty; {groups}")
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: {groups}")
    return raw


def load_config(path: str | Path, overrides: list[str] = ()) -> Config:
    """Read, override and validate a config file; any problem is one ConfigError naming the key."""
    raw = read_yaml(path)
    for assignment in overrides:
        apply_override(raw, assignment)
    return validate(raw, str(path))
