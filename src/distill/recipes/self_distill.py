"""Deep self-distillation: auxiliary heads on the student's inner blocks learn from its final head while it
trains; no teacher. The heads are dropped from the saved student."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distill.config.methods import SelfDistillMethod
from distill.modules.self_distiller import SelfDistiller
from distill.recipes.base import RECIPES, Trained
from distill.stages import Stages, train_scratch
from distill.tasks.classify import Experiment, build_net, check_outputs_match, check_stage, copies

if TYPE_CHECKING:
    from torch import nn

    from distill.config import Config


@RECIPES.register("self_distill")
class SelfDistill:
    Method = SelfDistillMethod

    def __init__(self, exp: Experiment):
        self.exp = exp
        self.student = build_net(exp, "student", exp.cfg.student.weights)
        check_outputs_match(exp, {"student": self.student})
        check_stage(exp, lambda: self._module(*copies(self.student)), "method", exp.cfg.train)

    def _module(self, student: nn.Module) -> SelfDistiller:
        """The student with the auxiliary heads of the method; what it trains is saved without them."""
        method = self.exp.cfg.method
        return SelfDistiller(student, method.taps, **method.model_dump(exclude={"kind", "taps"}))

    def train(self, stages: Stages) -> Trained:
        stages.train("student", self._module(self.student), self.student, self.exp.cfg.train)
        scratch = {"scratch": train_scratch(stages, epochs=self.exp.cfg.train.epochs)} if self.exp.cfg.scratch else {}
        return Trained({**scratch, "student": self.student}, ["student"])

    @staticmethod
    def fields(cfg: Config) -> dict[str, str]:
        return {"scratch": "student", "student": "student"}
