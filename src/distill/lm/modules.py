"""What a language-model stage trains: a model on its next-token cross-entropy (`NextToken`: the teacher and
the student alone), or a student learning every token's distribution from a frozen teacher (`TokenDistiller`).

Both report means over the batch's counted tokens and the count itself (`tokens`), so the training loop
weighs batches, and the micro-batches of an accumulation step, by their tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.lm.data import IGNORE
from distill.losses.fused import fused_token_distillation_loss
from distill.losses.token import TokenKD, shift_for_next_token, token_distillation_loss


def next_token_loss(logits: Tensor, ids_labels: Tensor) -> tuple[Tensor, Tensor]:
    """Mean next-token cross-entropy over the counted tokens of (B, S, V) logits and (B, S) labels, and the
    count (0 counted gives 0, not NaN)."""
    logits, labels = shift_for_next_token(logits, ids_labels)
    tokens = (labels != IGNORE).sum()
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), reduction="sum")
    return total / tokens.clamp_min(1), tokens


class NextToken(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        loss, tokens = next_token_loss(self.model(batch["input"]), batch["label"])
        return {"loss": loss, "tokens": tokens}


class TokenDistiller(nn.Module):
    """Student + frozen teacher + a `TokenKD`. The teacher is held apart (not a submodule): its weights stay out
    of the optimizer and the checkpoints. `vocab` ids are compared (fewer than the output layers hold when
    `method.shared_vocab` lets padded vocabularies meet)."""

    def __init__(self, student: nn.Module, teacher: nn.Module, loss: TokenKD, *, vocab: int, fused: bool,
                 chunk_size: int | None = None):  # fmt: skip
        super().__init__()
        self.student, self.loss = student, loss
        self._teacher = (teacher.eval().requires_grad_(False),)
        self.vocab, self.fused, self.chunk_size = vocab, fused, chunk_size

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        ids, labels = batch["input"], batch["label"]
        self.teacher.to(ids.device)
        if self.fused:
            with torch.no_grad():
                teacher_hidden = self.teacher.hidden(ids)
            student_head, teacher_head = self.student.head, self.teacher.head
            out = fused_token_distillation_loss(
                self.student.hidden(ids), student_head.weight[: self.vocab], teacher_hidden,
                teacher_head.weight[: self.vocab], labels, student_bias=_first(student_head.bias, self.vocab),
                teacher_bias=_first(teacher_head.bias, self.vocab), alpha=self.loss.alpha,
                chunk_size=self.chunk_size, **self.loss.settings,
            )  # fmt: skip
        else:
            with torch.no_grad():
                teacher_logits = self.teacher(ids)[..., : self.vocab].float()
            student_logits = self.student(ids)[..., : self.vocab]
            out = token_distillation_loss(student_logits, teacher_logits, labels, alpha=self.loss.alpha,
                                          **self.loss.settings)  # fmt: skip
        return {"loss": out.loss, "kd": out.soft, "ce": out.hard, "tokens": out.tokens}


def _first(bias: Tensor | None, count: int) -> Tensor | None:
    return None if bias is None else bias[:count]
