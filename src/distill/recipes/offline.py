"""Offline distillation: a frozen teacher (trained here first, loaded, or read from its cache) teaches the
student, optionally through a teacher assistant (TAKD) and in several stages (FitNets: hint, then KD)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from distill.cache.logits import TeacherCache
from distill.config.methods import OfflineMethod, stage_options
from distill.modules.distiller import Distiller
from distill.recipes.base import RECIPES, Trained
from distill.stages import Stages, keep_loaded_teacher, train_scratch, train_teacher
from distill.tasks.caches import open_cache
from distill.tasks.classify import Experiment, build_net, build_terms, check_outputs_match, check_stage, copies
from distill.train import TrainOptions

if TYPE_CHECKING:
    from distill.config import Config

Teacher = nn.Module | TeacherCache


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
