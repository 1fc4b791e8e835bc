"""Offline distillation: a frozen teacher (trained here first, loaded, or read from its cache) teaches the
student, optionally through a teacher assistant (TAKD) and in several stages (FitNets: hint, then KD)."""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import torch
from pydantic import Field, StrictInt, ValidationError, model_serializer, model_validator
from torch import nn

from distill.build import Experiment, build_net, build_terms, check_outputs_match, check_stage, copies
from distill.cache.logits import TeacherCache
from distill.modules.distiller import Distiller
from distill.losses import LOSSES
from distill.recipes import RECIPES, Trained
from distill.stages import Stages, keep_loaded_teacher, train_scratch, train_teacher
from distill.registry import did_you_mean
from distill.schema import NAME, Group, MethodGroup, ModelConfig, TermConfig, describe_error
from distill.tasks.classify_cache import open_cache
from distill.train import TrainOptions

if TYPE_CHECKING:
    from distill.config import Config

Teacher = nn.Module | TeacherCache


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


@RECIPES.register("offline")
class Offline:
    Method = OfflineMethod

    def __init__(self, exp: Experiment):
        cfg, method = exp.cfg, exp.cfg.method
        self.exp = exp
        self.student = build_net(exp, "student", cfg.student.weights)
        self.assistant = build_net(exp, "method.assistant", method.assistant.weights) if method.assistant else None
        self.cached = cfg.teacher.cache is not None  # the stored outputs stand in for the teacher
        self.teacher = open_cache(exp) if self.cached else build_net(exp, "teacher", cfg.teacher.weights)
        # what the student learns from: the assistant when there is one (TAKD), else the teacher
        self.student_teacher = self.teacher if self.assistant is None else self.assistant
        nets = {
            "student": self.student,
            "teacher": None if self.cached else self.teacher,
            "method.assistant": self.assistant,
        }
        check_outputs_match(exp, {field: net for field, net in nets.items() if net is not None})
        self.dtype = torch.bfloat16 if cfg.teacher.dtype == "bfloat16" else torch.float32

        self.stages = method.student_stages(cfg.train.epochs)
        field = "method.stages.{}.terms" if method.stages else "method.terms"
        smoothing = method.label_smoothing
        self.options = [stage_options(cfg.train, stage, i) for i, stage in enumerate(self.stages)]
        self.terms = [
            build_terms(exp, s.terms, field.format(i), label_smoothing=smoothing) for i, s in enumerate(self.stages)
        ]
        for i, terms in enumerate(self.terms):
            self._check(self.student, self.student_teacher, terms, field.format(i), self.options[i])
        self.assistant_terms = []
        if self.assistant is not None:  # it learns from the teacher with method.terms, then teaches the student
            self.assistant_terms = build_terms(exp, method.terms, "method.terms", label_smoothing=smoothing)
            self._check(self.assistant, self.teacher, self.assistant_terms, "method.terms (assistant)", cfg.train)

    def _check(self, student: nn.Module, teacher: Teacher, terms: list, field: str, options: TrainOptions) -> None:
        def make() -> Distiller:
            return Distiller(*copies(student, teacher, terms), teacher_dtype=self.dtype)

        check_stage(self.exp, make, field, options)

    def _distiller(self, student: nn.Module, teacher: Teacher, terms: list) -> Distiller:
        return Distiller(student, teacher, terms, teacher_dtype=self.dtype)  # freezes the teacher: trained by now

    def train(self, stages: Stages) -> Trained:
        cfg, method = self.exp.cfg, self.exp.cfg.method
        if not self.cached:
            train_teacher(stages, self.teacher)
        models = {"teacher": self.teacher}  # the table's order
        if self.assistant is not None:
            distiller = self._distiller(self.assistant, self.teacher, self.assistant_terms)
            stages.train("assistant", distiller, self.assistant, cfg.train)
            models["assistant"] = self.assistant
        if cfg.scratch:
            epochs = sum(stage.epochs for stage in self.stages)
            models["scratch"] = train_scratch(stages, epochs=epochs, label_smoothing=method.label_smoothing)
        for stage, terms, options in zip(self.stages, self.terms, self.options, strict=True):
            name = f"student-{stage.name}" if method.stages else "student"
            distiller = self._distiller(self.student, self.student_teacher, terms)
            stages.train(name, distiller, self.student, options)
        if method.stages:
            stages.save("student", self.student, stage="student")
        models["student"] = self.student
        if self.cached:  # a cached run builds the teacher only to report on it
            models["teacher"] = build_net(self.exp, "teacher", cfg.teacher.weights)
        keep_loaded_teacher(stages, models["teacher"])
        return Trained(models, [stage.name for stage in self.stages])

    @staticmethod
    def fields(cfg: Config) -> dict[str, str]:
        assistant = {"assistant": "method.assistant"} if cfg.method.assistant else {}
        return {"teacher": "teacher", **assistant, "scratch": "student", "student": "student"}
