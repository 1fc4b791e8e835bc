"""The root of a config, one per task: the keys every run has (`RunRoot`) and the task's groups beside them.
`task` picks the root (`classify` when the config names none)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, model_validator

from distill.config.base import RunRoot
from distill.config.groups import (
    CacheConfig,
    DataConfig,
    GenerateConfig,
    LMStudentConfig,
    LMTuneConfig,
    ModelConfig,
    TeacherConfig,
    TextDataConfig,
    TokenCacheConfig,
    TuneConfig,
)
from distill.config.methods import CLASSIFY, LM, OfflineMethod, TokenMethod
from distill.train import TrainOptions

ClassifyMethod = Annotated[CLASSIFY[0] | CLASSIFY[1] | CLASSIFY[2] | CLASSIFY[3], Field(discriminator="kind")]
LMMethod = Annotated[LM[0] | LM[1], Field(discriminator="kind")]


class TeacherRules(RunRoot):
    """The teacher group as the method reads it: required, absent, or without the keys it would ignore."""

    @model_validator(mode="after")
    def _check_teacher(self) -> TeacherRules:
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


class ClassifyConfig(TeacherRules):
    """task: classify (the default): images or table rows, each with a class."""

    kinds: ClassVar[tuple[type, ...]] = CLASSIFY  # the method kinds this task's runs take

    task: Literal["classify"] = "classify"
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig | None = Field(None, description="the teacher; every method.kind but self_distill has one")
    student: ModelConfig
    method: ClassifyMethod = Field(default_factory=OfflineMethod, description="the way of distilling")
    cache: CacheConfig = Field(default_factory=CacheConfig)
    tune: TuneConfig = Field(default_factory=TuneConfig, description="the search space of `distill tune`")

    @model_validator(mode="after")
    def _check_cache(self) -> ClassifyConfig:
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
    def _check_teacher_epochs(self) -> ClassifyConfig:
        epochs = self.teacher.epochs if self.teacher is not None else None
        if epochs is not None and any(m >= epochs for m in self.train.milestones):
            raise ValueError(
                f"teacher.epochs={epochs} must exceed every entry of train.milestones {self.train.milestones}"
            )
        return self


class LMConfig(TeacherRules):
    """task: lm: a causal language model distilled token by token on text.

    task: lm
    name: shakespeare
    data: {path: input.txt, tokenizer: char, context: 128, val_fraction: 0.05, test_fraction: 0.05}
    teacher: {model: gpt, args: {layers: 4, width: 128}, epochs: 3}
    student: {model: gpt, args: {layers: 2, width: 32}}
    method: {kind: token, divergence: reverse_kl, temperature: 1.0, alpha: 0.0, fused: true}
    train: {epochs: 3, optimizer: adamw, lr: 0.003}
    """

    kinds: ClassVar[tuple[type, ...]] = LM

    task: Literal["lm"]
    data: TextDataConfig
    teacher: TeacherConfig
    student: LMStudentConfig
    method: LMMethod = Field(default_factory=TokenMethod, description="the way of distilling")
    train: TrainOptions = Field(default_factory=lambda: TrainOptions(monitor="val/loss"))
    cache: TokenCacheConfig = Field(default_factory=TokenCacheConfig)
    tune: LMTuneConfig = Field(default_factory=LMTuneConfig, description="the search space of `distill tune`")
    generate: GenerateConfig | None = Field(None, description="what `distill generate` samples from the teacher")

    @model_validator(mode="after")
    def _check_room_to_write(self) -> LMConfig:
        """The student's completions must fit after a prompt: at least one prompt token, then its own."""
        context = self.data.context
        for key, group in (("method", self.method), ("generate", self.generate)):
            if group is not None and getattr(group, "max_new_tokens", 0) >= context:
                raise ValueError(
                    f"{key}.max_new_tokens: {group.max_new_tokens} leaves no room for a prompt in "
                    f"data.context {context}; lower it"
                )
        return self

    @model_validator(mode="after")
    def _check_teacher_sources(self) -> LMConfig:
        """A language model's teacher is trained here or given, never fine-tuned (a classifier's may be)."""
        if self.teacher.epochs is not None and self.teacher.weights is not None:
            raise ValueError("teacher.epochs applies only when the teacher is trained here; drop it or teacher.weights")
        return self

    @model_validator(mode="after")
    def _check_cache(self) -> LMConfig:
        method = self.method
        plain = method.temperature == 1 and not method.hidden_weight and not method.attention_weight
        if self.teacher.cache is not None and not plain:
            raise ValueError(
                "teacher.cache: holds the teacher's next-token probabilities at temperature 1: "
                "method.temperature 1, no hidden_weight or attention_weight"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, raw: Any) -> Any:
        """A language model has no accuracy to pick epochs by: its validation loss, unless the config says; and
        a method group without a kind is off-policy (`token`), the default."""
        if not isinstance(raw, dict):
            return raw
        if isinstance(raw.get("train"), dict) and "monitor" not in raw["train"]:
            raw = {**raw, "train": {**raw["train"], "monitor": "val/loss"}}
        if isinstance(raw.get("method"), dict) and "kind" not in raw["method"]:
            raw = {**raw, "method": {"kind": "token", **raw["method"]}}
        return raw


ROOTS: dict[str, type[RunRoot]] = {"classify": ClassifyConfig, "lm": LMConfig}
Config = ClassifyConfig | LMConfig
METHODS = {method.model_fields["kind"].default: method for method in (*CLASSIFY, *LM)}
