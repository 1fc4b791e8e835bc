"""Token-level distillation of a causal language model (off-policy): on the data's text, the student learns
every counted token's distribution from a frozen teacher (trained here first, loaded, or read from its top-k
cache), with the next-token cross-entropy weighted by alpha."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from distill.config.methods import TokenMethod
from distill.losses.token_kd import TokenKD
from distill.models.lm import check_vocabularies, model_tokenizer
from distill.modules.token import TokenDistiller, check_fusable
from distill.recipes.base import RECIPES, Trained
from distill.stages import Stages, keep_loaded_teacher, train_scratch, train_teacher
from distill.tasks.caches import open_token_cache
from distill.tasks.lm import outputs

if TYPE_CHECKING:
    from distill.config import Config
    from distill.tasks.lm import LMExperiment


@RECIPES.register("token")
class Token:
    Method = TokenMethod

    def __init__(self, exp: LMExperiment):
        cfg, method = exp.cfg, exp.cfg.method
        self.exp = exp
        self.teacher = exp.net("teacher", cfg.teacher.weights)
        probe = exp.net("student", cfg.student.weights)  # checked here, not trained
        self.vocab = check_vocabularies(
            exp.tokenizer,
            model_tokenizer(cfg.student, exp.tokenizer),
            model_tokenizer(cfg.teacher, exp.tokenizer),
            outputs(probe),
            outputs(self.teacher),
            shared=method.shared_vocab,
        )
        self.loss = TokenKD(
            method.divergence, alpha=method.alpha, temperature=method.temperature, beta=method.beta, skew=method.skew
        )
        self.cache = None if cfg.teacher.cache is None else open_token_cache(exp, self.vocab)
        if method.fused:
            check_fusable(probe, self.teacher)

    def distiller(self, student: nn.Module) -> nn.Module:
        """What the student trains in: the teacher's distributions (live or cached) and the method's terms."""
        method = self.exp.cfg.method
        return TokenDistiller(
            student,
            self.teacher,
            self.loss,
            vocab=self.vocab,
            fused=method.fused,
            chunk_size=method.chunk_size,
            hidden_weight=method.hidden_weight,
            attention_weight=method.attention_weight,
            cache=self.cache,
        )

    def train(self, stages: Stages) -> Trained:
        cfg = self.exp.cfg
        train_teacher(stages, self.teacher)
        if cfg.teacher.dtype == "bfloat16":  # trained in float32 (above); it teaches in half the memory
            self.teacher.to(torch.bfloat16)
        models = {"teacher": self.teacher}
        if cfg.scratch:
            models["scratch"] = train_scratch(stages, epochs=cfg.train.epochs)
        student = self.exp.net("student", cfg.student.weights)
        stages.train("student", self.distiller(student), student, cfg.train)
        keep_loaded_teacher(stages, self.teacher)
        return Trained({**models, "student": student}, ["student"])

    @staticmethod
    def fields(cfg: Config) -> dict[str, str]:
        return {"teacher": "teacher", "scratch": "student", "student": "student"}
