"""`distill tune` on a language model (method.kind token): the token divergence, its temperature, alpha (the
weight of the next-token cross-entropy) and the learning rate, judged by the student's validation loss: its
mean next-token cross-entropy per counted token (lower is better; perplexity is exp of it)."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING, Any

import torch

from distill.errors import ConfigError
from distill.losses.token_kd import TokenKD
from distill.stages import train_scratch, train_teacher
from distill.tasks.perplexity import sequence_losses
from distill.train import resolve_device
from distill.tune.search import Search, Setting

if TYPE_CHECKING:
    import optuna
    from torch import nn

    from distill.config import LMConfig
    from distill.stages import Stages


class LMSearch(Search):
    metric = "validation loss per token"
    direction = "minimize"

    def __init__(self, cfg: LMConfig):
        if cfg.method.kind != "token":
            raise ConfigError(
                f"distill tune searches method.kind token (off-policy), not {cfg.method.kind}: tune with "
                "method.kind token, then train on_policy with the best setting"
            )
        if cfg.teacher.cache is not None:  # the config refuses a cache beside any temperature but 1
            raise ConfigError(
                "distill tune searches the temperature, but teacher.cache holds the teacher at temperature 1 only: "
                "drop teacher.cache for the search"
            )
        super().__init__(cfg)

    def prepare(self, stages: Stages) -> float:
        cfg, teacher = self.cfg, self.recipe.teacher
        train_teacher(stages, teacher)
        if cfg.teacher.dtype == "bfloat16":  # as the token recipe does: trained in float32, teaches in half
            teacher.to(torch.bfloat16)
        scratch = train_scratch(stages, epochs=cfg.train.epochs)
        sums, counts = sequence_losses(scratch, self.exp.val_loader, resolve_device(cfg.train.device))
        return (sums.sum() / counts.sum()).item()

    def setting(self, trial: optuna.Trial) -> Setting:
        divergence = trial.suggest_categorical("divergence", self.space.divergences)
        method = {"divergence": divergence, "temperature": self.temperature(trial), "alpha": self.alpha(trial)}
        return Setting(method, self.lr(trial))

    def module(self, setting: Setting) -> nn.Module:
        """The token recipe's own distiller (fused or not, its hidden and attention terms, the vocabulary it
        checked), with the trial's loss in place of the config's."""
        chosen, method = setting.method, self.cfg.method
        recipe = copy.copy(self.recipe)  # shares the teacher; only the loss differs
        recipe.loss = TokenKD(
            chosen["divergence"],
            alpha=chosen["alpha"],
            temperature=chosen["temperature"],
            beta=method.beta,
            skew=method.skew,
        )
        return recipe.distiller(self.exp.net("student", self.cfg.student.weights))

    def score(self, record: dict[str, Any]) -> float:
        """The hard part of the distiller's loss: the student's next-token cross-entropy at temperature 1,
        averaged over the validation tokens, as `sequence_losses` measures the student alone."""
        return record["val/ce"]

    def show(self, value: float) -> str:
        return f"{value:.4f} (perplexity {perplexity(value):.2f})"


def perplexity(loss: float) -> float:
    """exp of a mean loss per token; a diverged one is infinite, not an overflow."""
    return math.exp(loss) if loss < 700 else math.inf
