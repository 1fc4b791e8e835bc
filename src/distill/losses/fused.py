"""The token losses from hidden states, chunk by chunk over tokens, never holding a full tokens x vocab logits
tensor of either model: what makes a 128k vocabulary fit, in plain PyTorch, on a CPU too.

Forward takes each model's final hidden states and output layer (weight, optional bias). For each chunk of
counted tokens it computes both models' logits, the chunk's share of the loss and, by autograd on the
chunk's logits alone, their gradient; the output layer's chain rule (to the hidden states, weight and bias)
is done by hand, accumulated in place; then the chunk's logits are dropped. Backward only scales the stored
gradients. Peak memory: one chunk's logits and their intermediates, plus a gradient the size of the
student's output weight. Value and gradients equal `token_distillation_loss` on the full logits.

Builds on `distill.losses.token`, which does not import it back; `TokenKD` (`distill.losses.token_kd`) picks
this form when called with `fused=True`.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses._term import LossInputError
from distill.losses.token import Divergence, TokenLoss, check_settings, token_loss_sums

CHUNK_ELEMENTS = 2**20  # logits per chunk (4 MB in float32): the default chunk is this many over the vocabulary
MIN_CHUNK = 32  # tokens: each chunk reads the whole output layer, so a 128k vocabulary still gets chunks this long


def _trained(tensor: Tensor | None) -> bool:
    return tensor is not None and tensor.requires_grad


def _float(tensor: Tensor | None) -> Tensor | None:
    return None if tensor is None else tensor.float()


class _ChunkedTokenLoss(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any,
        student_hidden: Tensor,  # (N, H) the shifted, flattened positions
        student_weight: Tensor,  # (V, H)
        student_bias: Tensor | None,  # (V,)
        teacher_hidden: Tensor,  # (N, H_t)
        teacher_weight: Tensor,  # (V, H_t)
        teacher_bias: Tensor | None,
        labels: Tensor,  # (N,)
        options: dict[str, Any],
        alpha: float,
        num_tokens: Tensor | int | None,
        chunk_size: int,
        gradients: bool,  # whether a backward may follow (not under no_grad: evaluation)
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        counted = (labels != options["ignore_index"]).nonzero().squeeze(1)
        total = torch.as_tensor(len(counted) if num_tokens is None else num_tokens).clamp_min(1)
        student = (student_hidden, student_weight, student_bias)
        grads = [torch.zeros_like(t, dtype=torch.float32) if gradients and _trained(t) else None for t in student]
        grad_hidden, grad_weight, grad_bias = grads
        soft = hard = torch.zeros((), device=student_hidden.device)
        weight, bias = student_weight.float(), _float(student_bias)
        for rows in counted.split(chunk_size):
            hidden = student_hidden[rows].float()  # (C, H)
            teacher_logits = F.linear(teacher_hidden[rows].float(), teacher_weight.float(), _float(teacher_bias))
            student_logits = F.linear(hidden, weight, bias)  # (C, V)
            with torch.enable_grad():  # autograd on the chunk's logits alone: the loss's own derivative
                student_logits.requires_grad_(gradients)
                chunk_soft, chunk_hard, _ = token_loss_sums(student_logits, teacher_logits, labels[rows], **options)
                if gradients:
                    chunk_loss = (alpha * chunk_hard + (1 - alpha) * chunk_soft) / total
                    (grad_logits,) = torch.autograd.grad(chunk_loss, student_logits)  # (C, V)
            # the output layer's chain rule by hand, in place: no (V, H) temporary per chunk
            if grad_hidden is not None:
                grad_hidden.index_add_(0, rows, grad_logits @ weight)
            if grad_weight is not None:
                grad_weight.addmm_(grad_logits.T, hidden)
            if grad_bias is not None:
                grad_bias.add_(grad_logits.sum(0))
            soft, hard = soft + chunk_soft.detach(), hard + chunk_hard.detach()
        ctx.dtypes = [None if t is None else t.dtype for t in student]
        ctx.save_for_backward(*(g for g in grads if g is not None))
        ctx.trained = [g is not None for g in grads]
        soft, hard = soft / total, hard / total
        ctx.mark_non_differentiable(soft, hard)
        tokens = torch.as_tensor(len(counted), device=student_hidden.device)
        return alpha * hard + (1 - alpha) * soft, soft, hard, tokens

    @staticmethod
    def backward(ctx: Any, grad_loss: Tensor, *_: Tensor) -> tuple[Tensor | None, ...]:
        stored = iter(ctx.saved_tensors)
        grads = [
            (next(stored) * grad_loss).to(dtype) if trained else None
            for trained, dtype in zip(ctx.trained, ctx.dtypes, strict=True)
        ]
        return (*grads, None, None, None, None, None, None, None, None, None)


def fused_token_distillation_loss(
    student_hidden: Tensor,
    student_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_weight: Tensor,
    labels: Tensor,
    *,
    student_bias: Tensor | None = None,
    teacher_bias: Tensor | None = None,
    divergence: Divergence = "forward_kl",
    alpha: float = 0.0,
    temperature: float = 1.0,
    beta: float = 0.5,
    skew: float = 0.1,
    ignore_index: int = -100,
    num_tokens: int | Tensor | None = None,
    shifted: bool = False,
    chunk_size: int | None = None,
) -> TokenLoss:
    """`token_distillation_loss` of the logits `hidden @ weight.T + bias` of each model, computed `chunk_size`
    tokens at a time (default: CHUNK_ELEMENTS logits a chunk). Hidden states (B, S, H) and (B, S, H_t), labels
    (B, S), shifted here unless `shifted`; output weights (V, H) and (V, H_t). The teacher gets no gradient;
    only `loss` has one (`soft` and `hard` are reported values)."""
    vocab = student_weight.shape[0]
    if teacher_weight.shape[0] != vocab:
        raise LossInputError(
            f"the student's output layer has {vocab} rows and the teacher's {teacher_weight.shape[0]}: the two "
            "models must share a vocabulary"
        )
    check_settings(divergence, alpha=alpha, temperature=temperature, beta=beta, skew=skew)
    if not shifted:
        student_hidden, teacher_hidden, labels = student_hidden[:, :-1], teacher_hidden[:, :-1], labels[:, 1:]
    options = {
        "divergence": divergence,
        "temperature": temperature,
        "beta": beta,
        "skew": skew,
        "ignore_index": ignore_index,
    }
    chunk_size = chunk_size or max(MIN_CHUNK, CHUNK_ELEMENTS // vocab)
    with torch.autocast(student_hidden.device.type, enabled=False):  # float32 logits, also under bf16 training
        loss, soft, hard, tokens = _ChunkedTokenLoss.apply(
            student_hidden.reshape(-1, student_hidden.shape[-1]),
            student_weight,
            student_bias,
            teacher_hidden.reshape(-1, teacher_hidden.shape[-1]),
            teacher_weight,
            teacher_bias,
            labels.reshape(-1),
            options,
            alpha,
            num_tokens,
            chunk_size,
            torch.is_grad_enabled(),
        )
    return TokenLoss(loss, soft, hard, tokens)
