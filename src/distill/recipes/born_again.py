"""Born-again networks: generations of the teacher's architecture, each learning from the one before."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distill.config.methods import BornAgainMethod
from distill.errors import ConfigError
from distill.losses import KD
from distill.modules.self_distiller import ensemble_accuracy, train_generations
from distill.recipes.base import RECIPES, Trained
from distill.stages import Stages, keep_loaded_teacher, train_teacher
from distill.tasks.classify import Experiment, build_net, check_outputs_match, new_net

if TYPE_CHECKING:
    from distill.config import Config


@RECIPES.register("born_again")
class BornAgain:
    Method = BornAgainMethod

    def __init__(self, exp: Experiment):
        cfg = exp.cfg
        if (cfg.student.model, cfg.student.args) != (cfg.teacher.model, cfg.teacher.args):
            raise ConfigError(
                "student: method.kind 'born_again' trains generations of the teacher's architecture; give "
                "student.model and student.args as the teacher's"
            )
        if cfg.student.weights is not None:
            raise ConfigError("student.weights: method.kind 'born_again' starts every generation afresh; drop it")
        self.exp = exp
        self.teacher = build_net(exp, "teacher", cfg.teacher.weights)
        check_outputs_match(exp, {"teacher": self.teacher})

    def train(self, stages: Stages) -> Trained:
        cfg, method = self.exp.cfg, self.exp.cfg.method
        train_teacher(stages, self.teacher)
        kd = KD(method.temperature, method.alpha, label_smoothing=method.label_smoothing)
        generations = train_generations(
            self.teacher,
            lambda: new_net(self.exp, "student"),
            kd,
            cfg.train,
            generations=method.generations,
            train=stages.train,
        )
        stages.save("student", generations[-1], stage="student")  # the last generation is the run's student
        keep_loaded_teacher(stages, self.teacher)
        ensemble = ensemble_accuracy([self.teacher, *generations], self.exp.test_loader)
        models = {"teacher": self.teacher, **{f"gen{k}": net for k, net in enumerate(generations, start=1)}}
        names = [f"gen{k}" for k in range(1, len(generations) + 1)]
        return Trained({**models, "student": generations[-1]}, names, {"born_again": {"ensemble_accuracy": ensemble}})

    @staticmethod
    def fields(cfg: Config) -> dict[str, str]:
        generations = {f"gen{k}": "student" for k in range(1, cfg.method.generations + 1)}
        return {"teacher": "teacher", **generations, "student": "student"}
