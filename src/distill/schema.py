"""The config's building blocks: groups shared by the top-level config and by each recipe's `method` keys.

Every group forbids unknown keys, so a misspelt key is an error, never a silent default.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, StrictInt, model_validator

from distill.registry import did_you_mean

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


class DataConfig(Group):
    name: str = Field("digits", description="digits | idx | csv | tensors | cifar10 | cifar100")
    path: str | None = Field(None, description="file or folder for idx, csv, tensors and cifar")
    label_column: str | None = Field(None, description="csv: the column holding the class")
    unlabelled_path: str | None = Field(
        None, description="tensors, idx, csv: a file of inputs without labels, which join training (soft loss only)"
    )
    train_path: str | None = Field(None, description="tensors, idx, csv: the training file (instead of path)")
    val_path: str | None = Field(None, description="tensors, idx, csv: a fixed validation file (no val_fraction)")
    test_path: str | None = Field(None, description="tensors, idx, csv: a fixed test file (no test_fraction)")
    test_fraction: float = Field(
        0.2, gt=0, lt=1, description="share of the labelled rows held out for test (cifar: its official test set)"
    )
    val_fraction: float = Field(0.2, gt=0, lt=1, description="share of the labelled rows left held out for validation")
    labelled_fraction: float | None = Field(
        None, gt=0, le=1, description="keep the labels of this share of the training rows (seeded); hide the rest"
    )
    labelled_per_class: StrictInt | None = Field(
        None, ge=1, description="keep the labels of this many training rows per class (seeded); hide the rest"
    )
    augment: str = Field("none", description="training augmentation: none | crop_flip (pad 4, random crop, flip)")
    seed: StrictInt = Field(0, ge=0, description="seed of the train/validation/test split and the labelled choice")
    batch_size: StrictInt = Field(64, ge=1, le=1_000_000)
    num_workers: StrictInt = Field(0, ge=0, le=256)

    @model_validator(mode="after")
    def _one_training_file(self) -> DataConfig:
        if self.path is not None and self.train_path is not None:
            raise ValueError("data.path and data.train_path both set; give the training file once")
        return self

    @model_validator(mode="after")
    def _one_labelled_choice(self) -> DataConfig:
        if self.labelled_fraction is not None and self.labelled_per_class is not None:
            raise ValueError("data.labelled_fraction and data.labelled_per_class both set; keep one")
        return self


class ModelConfig(Group):
    model: str = Field(description="a built-in name (mlp, cnn) or 'package.module:factory'")
    args: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model's factory")
    weights: str | None = Field(None, description="safetensors or .pt state dict to load")


class TeacherConfig(ModelConfig):
    """The teacher. Which of its keys apply depends on the method (`teacher_keys` of each method's keys)."""

    dtype: Literal["float32", "bfloat16"] = Field("float32", description="precision of the teacher's forward")
    cache: str | None = Field(None, description="folder of cached teacher outputs (`distill cache`) to train from")
    epochs: StrictInt | None = Field(None, ge=1, le=100_000, description="epochs when trained here (no weights)")

    @model_validator(mode="after")
    def _check_sources(self) -> TeacherConfig:
        if self.cache is not None and self.weights is None:
            raise ValueError("teacher.cache needs teacher.weights: the file the cache was made from (it is checked)")
        if self.epochs is not None and self.weights is not None:
            raise ValueError("teacher.epochs applies only when the teacher is trained here; drop it or teacher.weights")
        return self


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


Range = tuple[float, float]


class TuneConfig(Group):
    """The search space of `distill tune`: which losses, and the range of each setting (low, high)."""

    losses: list[Literal["kd", "dkd", "dist"]] = Field(
        default_factory=lambda: ["kd", "dkd", "dist"], min_length=1, description="the logit losses to choose from"
    )
    temperature: Range = Field((1.0, 8.0), description="the soft loss's temperature (log scale)")
    alpha: Range = Field((0.0, 1.0), description="kd: the weight of the hard loss")
    weight: Range = Field((0.1, 10.0), description="dkd and dist: their weight beside the cross-entropy (log scale)")
    lr: Range | None = Field(None, description="the learning rate (log scale); null: train.lr / 3 to train.lr * 3")
    seed: StrictInt = Field(0, ge=0, description="the sampler's seed")

    @model_validator(mode="after")
    def _check_ranges(self) -> TuneConfig:
        for key in ("temperature", "alpha", "weight", "lr"):
            low, high = getattr(self, key) or (1.0, 2.0)
            if not low < high:
                raise ValueError(f"tune.{key}: the range [{low}, {high}] is empty or inverted; give [low, high]")
            if key != "alpha" and low <= 0:
                raise ValueError(f"tune.{key}: searched on a log scale, so its range must be > 0, got [{low}, {high}]")
        if not 0 <= self.alpha[0] < self.alpha[1] <= 1:
            raise ValueError(f"tune.alpha: must lie in [0, 1], got {list(self.alpha)}")
        if len(set(self.losses)) != len(self.losses):
            raise ValueError(f"tune.losses: each loss once, got {self.losses}")
        return self


class CacheConfig(Group):
    """How `distill cache` stores the teacher's outputs (in teacher.cache)."""

    dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    top_k: StrictInt | None = Field(None, ge=1, description="keep only the k largest logits (kd only)")
    features: list[str] = Field(default_factory=list, description="teacher module paths to store as well")
    views: StrictInt | None = Field(
        None, ge=1, le=1000, description="with data.augment: the teacher's outputs on K augmented views of each sample"
    )
    allow_augmented: bool = Field(
        False, description="accept data.augment: the cache then holds clean-input outputs for augmented inputs"
    )
    batch_size: StrictInt = Field(256, ge=1, le=1_000_000)
    shard_rows: StrictInt = Field(4096, ge=1, le=10_000_000, description="samples per shard file")


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
