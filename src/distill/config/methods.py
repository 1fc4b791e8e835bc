"""The keys of each way of distilling (`method:`), one model per `method.kind`, each starting with its
`kind: Literal["NAME"]`. They live here, below the recipes that run them: a schema never imports what it
configures. `CLASSIFY` and `LM` are the kinds each task's config accepts.
"""

from __future__ import annotations

import inspect
from typing import Any, ClassVar, Literal

from pydantic import Field, StrictInt, ValidationError, model_serializer, model_validator

from distill.config.base import NAME, Group, MethodGroup, describe_error
from distill.config.groups import ModelConfig, TermConfig
from distill.losses import LOSSES
from distill.losses.token import Divergence
from distill.registry import did_you_mean
from distill.train import TrainOptions


def _kd() -> list[TermConfig]:
    return [TermConfig(loss="kd", temperature=4.0, alpha=0.5)]


class StageConfig(Group):
    """One stage of a multi-stage student run, e.g. FitNets: a hint stage, then a KD stage."""

    name: str = Field(pattern=NAME)
    epochs: StrictInt = Field(ge=1, le=100_000)
    terms: list[TermConfig] = Field(min_length=1)
    train: dict[str, Any] = Field(default_factory=dict, description="train options that differ in this stage")


class OfflineMethod(MethodGroup):
    """method.kind offline: the student learns from a frozen teacher with `terms` (or `stages`)."""

    teacher_keys: ClassVar[tuple[str, ...]] = ("model", "args", "weights", "dtype", "cache", "epochs")

    kind: Literal["offline"] = "offline"
    terms: list[TermConfig] = Field(default_factory=_kd, min_length=1, description="the loss terms, summed")
    stages: list[StageConfig] | None = Field(
        None, min_length=1, description="student stages in order, each with its own terms; instead of terms"
    )
    assistant: ModelConfig | None = Field(
        None, description="teacher assistant (TAKD): learns from the teacher with terms, then teaches the student"
    )
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="on every hard loss: scratch, and kd's hard part")

    @model_validator(mode="after")
    def _check_stages(self) -> OfflineMethod:
        if self.stages is None:
            return self
        if "terms" in self.model_fields_set:
            raise ValueError("method.terms and method.stages both set: with stages, each stage lists its own terms")
        names = [stage.name for stage in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"method.stages: names must differ, got {names}")
        for i, stage in enumerate(self.stages):
            if "epochs" in stage.train:
                raise ValueError(f"method.stages.{i}.train.epochs: give a stage's epochs as method.stages.{i}.epochs")
            for key in stage.train:  # their values are checked with the train group's when the run is built
                if key not in TrainOptions.model_fields:
                    close = did_you_mean(key, list(TrainOptions.model_fields))
                    raise ValueError(f"method.stages.{i}.train.{key}: unknown key{close}")
        return self

    @model_serializer(mode="wrap")
    def _resolved(self, handler: Any) -> dict[str, Any]:
        resolved = handler(self)
        if self.stages is not None:  # the stages replace the terms: a resolved config must not give both
            del resolved["terms"]
        return resolved

    def check(self, cfg: Any) -> None:
        for i, stage in enumerate(self.stages or []):
            stage_options(cfg.train, stage, i)  # a bad override fails as the config is read, naming its key

    def soft_temperature(self) -> float | None:
        """The temperature of the first term of the last student stage that has one (its default if not set)."""
        for term in self.student_stages(1)[-1].terms:
            given = inspect.signature(LOSSES.get(term.loss)).parameters.get("temperature")
            if "temperature" in term.options or given is not None:
                return float(term.options.get("temperature", given.default if given else 0.0))
        return None

    def student_stages(self, epochs: int) -> list[StageConfig]:
        """The stages that train the student: the listed ones, or one named 'student' of `terms`."""
        return self.stages or [StageConfig(name="student", epochs=epochs, terms=self.terms)]


def stage_options(train: TrainOptions, stage: StageConfig, i: int) -> TrainOptions:
    """The train group with a stage's overrides; a bad override is one line naming its key."""
    try:
        return TrainOptions(**{**train.model_dump(), **stage.train, "epochs": stage.epochs})
    except ValidationError as e:
        raise ValueError(describe_error(e.errors()[0], TrainOptions, prefix=f"method.stages.{i}.train")) from None


class OnlineMethod(MethodGroup):
    """method.kind online: no teacher is trained first; every peer trains for train.epochs in one stage."""

    teacher_keys: ClassVar[tuple[str, ...]] = ("model", "args", "weights")
    several_seeds: ClassVar[bool] = False  # its teacher trains with its students: seeds would make several teachers

    kind: Literal["online"] = "online"
    mutual: bool = Field(
        True, description="true: each learns from the others (DML); false: the teacher from labels only"
    )
    temperature: float = Field(1.0, gt=0, le=1000)
    weight: float = Field(1.0, ge=0, allow_inf_nan=False, description="factor of the KL term toward the other models")
    peers: list[ModelConfig] = Field(
        default_factory=list, max_length=16, description="more models trained alongside, reported as peer1, peer2, ..."
    )


class BornAgainMethod(MethodGroup):
    """method.kind born_again: the teacher is generation 0 (trained here or loaded); the student, of the same
    architecture, is the last generation. No scratch run: the architecture alone is generation 0."""

    teacher_keys: ClassVar[tuple[str, ...]] = ("model", "args", "weights", "epochs")
    several_seeds: ClassVar[bool] = False  # its generations are seeded seed + k already

    kind: Literal["born_again"] = "born_again"
    generations: StrictInt = Field(2, ge=1, le=20, description="generations after the teacher (generation 0)")
    temperature: float = Field(1.0, gt=0, le=1000)
    alpha: float = Field(0.0, ge=0, le=1, description="weight of the hard loss (0: pure imitation, as in the paper)")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="on the hard loss of each generation")


class SelfDistillMethod(MethodGroup):
    """method.kind self_distill: the one way without a teacher; compared with the student alone (scratch)."""

    teacher_keys: ClassVar[tuple[str, ...]] = ()

    kind: Literal["self_distill"] = "self_distill"
    taps: list[str] = Field(min_length=1, description="student module paths that each get an auxiliary head")
    temperature: float = Field(3.0, gt=0, le=1000)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of each head's hard loss (the paper's 1 - alpha)")
    feature_weight: float = Field(0.0, ge=0, allow_inf_nan=False, description="factor of the feature hint (0: off)")
    feature_tap: str | None = Field(None, description="the module whose output is the final feature, for the hint")


class TokenMethod(MethodGroup):
    """method.kind token: off-policy distillation on the data set's text, every counted token."""

    teacher_keys: ClassVar[tuple[str, ...]] = ("model", "args", "weights", "dtype", "cache", "epochs")

    kind: Literal["token"] = "token"
    divergence: Divergence = "forward_kl"
    temperature: float = Field(1.0, gt=0, le=1000, description="of the loss only; never a sampling temperature")
    alpha: float = Field(0.0, ge=0, le=1, description="weight of the next-token cross-entropy (the hard loss)")
    beta: float = Field(0.5, ge=0, le=1, description="jsd: 0 is forward KL, 1 reverse KL")
    skew: float = Field(0.1, gt=0, lt=1, description="skew_forward_kl / skew_reverse_kl: the mixture's weight")
    fused: bool = Field(True, description="compute from hidden states chunk by chunk: no tokens x vocab logits")
    chunk_size: StrictInt | None = Field(None, ge=1, description="tokens per chunk of the fused form (default: auto)")
    hidden_weight: float = Field(
        0.0,
        ge=0,
        allow_inf_nan=False,
        description="factor of the final hidden states' MSE (mapped across widths)",
    )
    attention_weight: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="factor of the KL between last-layer attention maps (MiniLM)"
    )
    shared_vocab: bool = Field(
        False, description="distill over the ids both output layers have when their sizes differ (padded vocabs)"
    )


class OnPolicyMethod(TokenMethod):
    """method.kind on_policy (GKD): in a share of the batches the student writes the completions of the batch's
    prompts and the teacher grades every token it wrote; the other batches distill on the data's completions.
    Needs prompts: JSONL data."""

    teacher_keys: ClassVar[tuple[str, ...]] = ("model", "args", "weights", "dtype", "epochs")

    kind: Literal["on_policy"] = "on_policy"
    divergence: Divergence = "reverse_kl"
    student_share: float = Field(0.5, ge=0, le=1, description="lambda: the share of batches the student samples")
    sample_temperature: float = Field(1.0, ge=0, le=100, description="of the student's sampling; 0 is greedy")
    max_new_tokens: StrictInt = Field(32, ge=1, le=1_000_000, description="tokens the student writes per prompt")
    top_k: StrictInt | None = Field(None, ge=1, description="the student samples among its k most likely tokens")


CLASSIFY = (OfflineMethod, OnlineMethod, BornAgainMethod, SelfDistillMethod)
LM = (TokenMethod, OnPolicyMethod)
