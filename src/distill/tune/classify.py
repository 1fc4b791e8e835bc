"""`distill tune` on a classifier (method.kind offline): the logit loss (kd, dkd or dist), its temperature and
weights, and the learning rate, judged by validation accuracy (higher is better)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from distill.config import TermConfig
from distill.errors import ConfigError
from distill.modules.distiller import Distiller
from distill.stages import train_scratch, train_teacher
from distill.tasks.accuracy import logits_on
from distill.tasks.classify import build_terms
from distill.train import resolve_device
from distill.tune.search import Search, Setting

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from distill.config import ClassifyConfig
    from distill.stages import Stages


class ClassifySearch(Search):
    metric = "validation accuracy"
    direction = "maximize"

    def __init__(self, cfg: ClassifyConfig):
        method = cfg.method
        if method.kind != "offline" or method.stages or method.assistant:  # one set of terms to search
            raise ConfigError(
                "distill tune searches the terms of method.kind offline, in one stage, without an assistant"
            )
        super().__init__(cfg)

    def prepare(self, stages: Stages) -> float:
        cfg = self.cfg
        train_teacher(stages, self.recipe.teacher)  # a cached teacher comes with its weights: nothing to train
        scratch = train_scratch(stages, epochs=cfg.train.epochs, label_smoothing=cfg.method.label_smoothing)
        logits = logits_on(scratch, self.exp.val_loader, resolve_device(cfg.train.device))
        return (logits.argmax(-1) == self.exp.splits.val.labels).float().mean().item()

    def setting(self, trial: optuna.Trial) -> Setting:
        loss = trial.suggest_categorical("loss", self.space.losses)
        temperature = self.temperature(trial)
        if loss == "kd":
            terms = [{"loss": "kd", "temperature": temperature, "alpha": self.alpha(trial)}]
        else:  # dkd and dist carry no cross-entropy of their own: kd at alpha 1 is it
            weight = trial.suggest_float("weight", *self.space.weight, log=True)
            terms = [{"loss": "kd", "alpha": 1.0}, {"loss": loss, "temperature": temperature, "weight": weight}]
        return Setting({"terms": terms}, self.lr(trial))

    def module(self, setting: Setting) -> nn.Module:
        specs = [TermConfig(**term) for term in setting.method["terms"]]
        terms = build_terms(self.exp, specs, "tune", label_smoothing=self.cfg.method.label_smoothing)
        student = self.exp.net("student", self.cfg.student.weights)
        return Distiller(student, self.recipe.teacher, terms, teacher_dtype=self.recipe.dtype)

    def score(self, record: dict[str, Any]) -> float:
        return record["val/accuracy"]

    def show(self, value: float) -> str:
        return f"{value:.2%}"
