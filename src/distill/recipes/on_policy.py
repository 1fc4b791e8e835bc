"""On-policy distillation of a causal language model (GKD): in a share of the batches the student writes the
completions of the batch's prompts and the teacher grades every token it wrote; the other batches distill on
the data's completions, as `token` does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from distill.config.methods import OnPolicyMethod
from distill.errors import ConfigError
from distill.modules.token import OnPolicy as OnPolicyModule
from distill.recipes.base import RECIPES
from distill.recipes.token import Token

if TYPE_CHECKING:
    from distill.tasks.lm import LMExperiment


@RECIPES.register("on_policy")
class OnPolicy(Token):
    Method = OnPolicyMethod

    def __init__(self, exp: LMExperiment):
        if not exp.cfg.data.path.endswith(".jsonl"):
            raise ConfigError(
                "method.kind on_policy: the student writes completions of prompts; give data.path a .jsonl of "
                "prompt/completion lines"
            )
        super().__init__(exp)

    def distiller(self, student: nn.Module) -> nn.Module:
        """The token distiller, wrapped to sample the student's own completions."""
        cfg, method = self.exp.cfg, self.exp.cfg.method
        return OnPolicyModule(
            super().distiller(student),
            student_share=method.student_share,
            temperature=method.sample_temperature,
            max_new_tokens=method.max_new_tokens,
            top_k=method.top_k,
            pad_id=self.exp.tokenizer.pad_id,
            context=cfg.data.context,
        )
