"""Online distillation: teacher, student and any further peers trained together from scratch, each learning
from the others (deep mutual learning), or the teacher from the labels alone."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from distill.config.methods import OnlineMethod
from distill.modules.mutual import MutualLearning
from distill.recipes.base import RECIPES, Trained
from distill.stages import Stages, train_scratch
from distill.tasks.base import model_spec
from distill.tasks.classify import Experiment, build_net, check_outputs_match, check_stage, copies

if TYPE_CHECKING:
    from distill.config import Config


def _peer_fields(cfg: Config) -> dict[str, str]:
    """method.peers by the names they are saved and reported under: {"peer1": "method.peers.0", ...}."""
    return {f"peer{k}": f"method.peers.{k - 1}" for k in range(1, len(cfg.method.peers) + 1)}


@RECIPES.register("online")
class Online:
    Method = OnlineMethod

    def __init__(self, exp: Experiment):
        cfg = exp.cfg
        self.exp = exp
        fields = {"student": "student", "teacher": "teacher", **_peer_fields(cfg)}  # the student first: val/accuracy
        self.nets = {name: build_net(exp, field, model_spec(cfg, field).weights) for name, field in fields.items()}
        check_outputs_match(exp, {fields[name]: net for name, net in self.nets.items()})
        check_stage(exp, lambda: self._module(*copies(*self.nets.values())), "method", cfg.train)

    def _module(self, *nets: nn.Module) -> MutualLearning:
        method = self.exp.cfg.method
        return MutualLearning(
            list(nets),
            temperature=method.temperature,
            weight=method.weight,
            learns_from_peers=[method.mutual or name != "teacher" for name in self.nets],
            names=list(self.nets),
        )

    def train(self, stages: Stages) -> Trained:
        stages.run("online", self._module(*self.nets.values()), self.nets, self.exp.cfg.train)
        models = {"teacher": self.nets["teacher"], **{k: v for k, v in self.nets.items() if k.startswith("peer")}}
        if self.exp.cfg.scratch:
            models["scratch"] = train_scratch(stages, epochs=self.exp.cfg.train.epochs)
        return Trained({**models, "student": self.nets["student"]}, ["online"])

    @staticmethod
    def fields(cfg: Config) -> dict[str, str]:
        return {"teacher": "teacher", **_peer_fields(cfg), "scratch": "student", "student": "student"}
