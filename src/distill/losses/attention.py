"""Attention distillation for transformers: the student's attention maps imitate the teacher's.

Both terms read tapped attention maps (B, H, S_q, S_k): what the tapped module gives, normally each query's
distribution over the keys (rows summing to 1). Padded queries are not masked out: tap maps of unpadded
batches, or mind that their rows count in the mean.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses._registry import LOSSES
from distill.losses._term import Adapter, FeatureTermBase, LossInputError, check_rank

Heads = Literal["match", "mean"]


def _check_heads(loss: str, heads: str) -> Heads:
    if heads not in ("match", "mean"):
        raise ValueError(f"{loss}: heads must be 'match' or 'mean', got {heads!r}")
    return heads


def _check_distributions(loss: str, attention: Tensor) -> None:
    """Refuse maps whose rows are not probability distributions (a conv feature tapped by mistake).

    Checked only when gradients are off, as in the Distiller's sizing forward and in evaluation, so
    training steps stay free of this host sync."""
    rows = attention.float().sum(-1)
    if (attention < 0).any() or not torch.allclose(rows, torch.ones_like(rows), atol=1e-3):
        raise LossInputError(
            f"{loss}: the teacher's tap is not an attention map (rows must be probabilities summing "
            "to 1); tap the attention probabilities, e.g. a Hugging Face model's attentions.N"
        )


def _align_heads(loss: str, student_attn: Tensor, teacher_attn: Tensor, heads: Heads) -> tuple[Tensor, Tensor]:
    """Check the maps' shapes; with heads="mean", average each over its heads first (keeping a head axis of 1)."""
    check_rank(loss, "student attention", student_attn, (4,))
    check_rank(loss, "teacher attention", teacher_attn, (4,))
    _check_heads(loss, heads)
    (b_s, h_s, *seq_s), (b_t, h_t, *seq_t) = student_attn.shape, teacher_attn.shape
    if b_s != b_t or seq_s != seq_t:
        raise LossInputError(
            f"{loss}: student attention {tuple(student_attn.shape)} and teacher attention "
            f"{tuple(teacher_attn.shape)} differ in batch or sequence length; tap the same inputs"
        )
    if not torch.is_grad_enabled():
        _check_distributions(loss, teacher_attn)
    if heads == "match" and h_s != h_t:
        raise LossInputError(
            f"{loss}: student has {h_s} heads, teacher {h_t}; set heads='mean' to compare head-averaged maps"
        )
    if heads == "mean":
        student_attn, teacher_attn = student_attn.mean(1, keepdim=True), teacher_attn.mean(1, keepdim=True)
    return student_attn.float(), teacher_attn.float()  # (B, H, Sq, Sk)


def attention_kl_loss(
    student_attn: Tensor, teacher_attn: Tensor, *, heads: Heads = "match", eps: float = 1e-12
) -> Tensor:
    """Self-attention distribution transfer (Wang et al., 2020, "MiniLM: Deep Self-Attention Distillation for
    Task-Agnostic Compression of Pre-Trained Transformers", NeurIPS).

        L = 1/(B H S_q) sum_{b,h,q} KL(A^t[b,h,q,:] || A^s[b,h,q,:])
          = mean over b, h, q of sum_k A^t log(A^t / A^s)

    A^t log A^t is 0 where A^t = 0 (masked keys); A^s is clamped to eps inside the log so that a key the
    student gives no weight costs a large finite amount. heads="mean": KL between the head-averaged maps.
    """
    student_attn, teacher_attn = _align_heads("attention_kl", student_attn, teacher_attn, heads)
    kl = torch.xlogy(teacher_attn, teacher_attn) - teacher_attn * student_attn.clamp(min=eps).log()
    return kl.sum(-1).mean()  # sum over keys, mean over (B, H, S_q)


def attention_mse_loss(student_attn: Tensor, teacher_attn: Tensor, *, heads: Heads = "match") -> Tensor:
    """Attention-based distillation (Jiao et al., 2020, "TinyBERT: Distilling BERT for Natural Language
    Understanding", Findings of EMNLP).

        L = 1/H sum_h MSE(A^s_h, A^t_h) = mean over b, h, q, k of (A^s - A^t)^2

    TinyBERT compares the unnormalised attention scores (before softmax, with masked entries zeroed); this
    term compares whatever the taps give, normally the softmax probabilities. heads="mean": MSE between
    the head-averaged maps.
    """
    student_attn, teacher_attn = _align_heads("attention_mse", student_attn, teacher_attn, heads)
    return F.mse_loss(student_attn, teacher_attn)


class _AttentionTerm(FeatureTermBase):
    """The module form of an attention-map loss: tap paths, weight, and how to treat the heads."""

    loss_fn: ClassVar[Callable[..., Tensor]]
    name: ClassVar[str]

    def __init__(
        self,
        student_layer: str,
        teacher_layer: str,
        *,
        weight: float = 1.0,
        heads: Heads = "match",
        adapter: Adapter = "none",
    ):
        super().__init__(student_layer, teacher_layer, weight=weight, adapter=adapter)
        self.heads = _check_heads(self.name, heads)

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        return self.loss_fn(student_feat, teacher_feat, heads=self.heads)


@LOSSES.register("attention_kl")
class AttentionKL(_AttentionTerm):
    """The module form of `attention_kl_loss`."""

    loss_fn, name = staticmethod(attention_kl_loss), "attention_kl"


@LOSSES.register("attention_mse")
class AttentionMSE(_AttentionTerm):
    """The module form of `attention_mse_loss`."""

    loss_fn, name = staticmethod(attention_mse_loss), "attention_mse"
