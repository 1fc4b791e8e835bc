"""`TokenKD`: one token-level distillation loss and its settings, the one place that chooses between its two
forms. Either from logits (`distill.losses.token`):

    loss = alpha * hard + (1 - alpha) * soft,   logits = hidden @ weight.T + bias when given hidden states

or from each model's final hidden states and output layer, chunk by chunk over tokens without ever holding
the full logits (`fused=True`, `distill.losses.fused`): the same value and gradients. `TokenDistiller`
(`distill.modules.token`) and `DistillationTrainer` (`distill.hf`) both call `TokenKD.forward`.

Imports both forms; neither imports this module, so there is no import cycle.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distill.losses._term import LossInputError
from distill.losses.fused import fused_token_distillation_loss
from distill.losses.token import Divergence, TokenLoss, check_settings, token_distillation_loss


class TokenKD(nn.Module):
    """Token-level distillation with one divergence (see `distill.losses.token` for each), returning a
    `TokenLoss`: `loss`, its `soft` and `hard` parts, and the `tokens` counted."""

    def __init__(
        self,
        divergence: Divergence = "forward_kl",
        *,
        alpha: float = 0.0,
        temperature: float = 1.0,
        beta: float = 0.5,
        skew: float = 0.1,
        ignore_index: int = -100,
    ):
        super().__init__()
        check_settings(divergence, alpha=alpha, temperature=temperature, beta=beta, skew=skew)
        self.divergence, self.alpha, self.temperature = divergence, alpha, temperature
        self.beta, self.skew, self.ignore_index = beta, skew, ignore_index

    @property
    def settings(self) -> dict[str, object]:
        return {
            "divergence": self.divergence,
            "temperature": self.temperature,
            "beta": self.beta,
            "skew": self.skew,
            "ignore_index": self.ignore_index,
        }

    def forward(
        self,
        student: Tensor,
        teacher: Tensor,
        labels: Tensor,
        num_tokens: int | Tensor | None = None,
        *,
        student_head: nn.Linear | None = None,
        teacher_head: nn.Linear | None = None,
        vocab: int | None = None,
        fused: bool = False,
        chunk_size: int | None = None,
    ) -> TokenLoss:
        """The loss over (B, S) `labels`, shifted here, divided by `num_tokens` (default: the tokens counted here).

        Without heads, `student` and `teacher` are (B, S, V) logits. With both heads they are final hidden
        states, (B, S, H) and (B, S, H_t), and the logits are `head(hidden)`: computed whole, or `fused`, chunk
        by chunk (`chunk_size` tokens; default `distill.losses.fused`'s), from the heads' weight and bias. Only
        the first `vocab` ids are compared (default: all; fewer when padded vocabularies meet). The teacher
        gets no gradient through its head."""
        if (student_head is None) != (teacher_head is None):
            raise LossInputError("TokenKD takes both models' output layers (hidden states) or neither (logits)")
        if fused:
            if student_head is None:
                raise LossInputError("the fused loss reads hidden states and both output layers: pass the heads")
            return fused_token_distillation_loss(
                student,
                _first(student_head.weight, vocab),
                teacher,
                _first(teacher_head.weight, vocab),
                labels,
                student_bias=_first(student_head.bias, vocab),
                teacher_bias=_first(teacher_head.bias, vocab),
                alpha=self.alpha,
                num_tokens=num_tokens,
                chunk_size=chunk_size,
                **self.settings,
            )
        if student_head is not None:
            student = student_head(student)  # (B, S, V_head)
            with torch.no_grad():
                teacher = teacher_head(teacher)
        if vocab is not None:
            student, teacher = student[..., :vocab], teacher[..., :vocab]  # (B, S, V)
        return token_distillation_loss(
            student, teacher.float(), labels, alpha=self.alpha, num_tokens=num_tokens, **self.settings
        )


def _first(rows: Tensor | None, count: int | None) -> Tensor | None:
    """The first `count` rows of an output layer's (V, H) weight or (V,) bias: all when `count` is None."""
    return rows if rows is None or count is None else rows[:count]
