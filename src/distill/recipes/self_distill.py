"""Deep self-distillation: auxiliary heads on the student's inner blocks learn from its final head while it
trains; no teacher. The heads are dropped from the saved student."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from distill.build import Experiment, build_net, check_outputs_match, check_stage, copies
from distill.recipes import RECIPES, Trained
from distill.stages import Stages, train_scratch
from distill.schema import MethodGroup
from distill.modules.self_distiller import SelfDistiller

if TYPE_CHECKING:
    from torch import nn

    from distill.config import Config


class SelfDistillMethod(MethodGroup):
    """method.kind self_distill: the one way without a teacher; compared with the student alone (scratch)."""

    teacher_keys: ClassVar[tuple[str, ...]] = ()

    kind: Literal["self_distill"] = "self_distill"
    taps: list[str] = Field(min_length=1, description="student module paths that each get an auxiliary head")
    temperature: float = Field(3.0, gt=0, le=1000)
    alpha: float = Field(0.7, ge=0, le=1, description="weight of each head's hard loss (the paper's 1 - alpha)")
    feature_weight: float = Field(0.0, ge=0, allow_inf_nan=False, description="factor of the feature hint (0: off)")
    feature_tap: str | None = Field(None, description="the module whose output is the final feature, for the hint")


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
