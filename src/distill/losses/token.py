"""Token-level distillation for language models: student and teacher next-token distributions compared at every
counted position of a (batch, sequence, vocab) pair of logits.

Position t's logits predict token t+1 (the causal shift, `shift_for_next_token`); a label of `ignore_index`
(-100: prompt and padding) is not counted. Each divergence below is summed over the vocabulary per counted
token, at a temperature of its own (never a sampling temperature), times T^2 as in KD (Hinton et al., 2015;
`distill.losses.kd`), which keeps the gradients' size independent of T:

    forward_kl        KL(p_T || p_S)                                   mode-covering; plain KD
    reverse_kl        KL(p_S || p_T)                                   mode-seeking (MiniLLM)
    jsd               beta KL(p_T || m) + (1 - beta) KL(p_S || m),     generalized JSD (GKD); m = beta p_T +
                      beta = 0 is exactly forward KL, 1 reverse KL     (1 - beta) p_S. Near either end the
                      (the ends by definition: the mixture's value     value is near 0, so a sweep over beta
                      tends to 0 there)                                rescales the loss as well
    skew_forward_kl   KL(p_T || skew p_T + (1 - skew) p_S)             DistiLLM (Ko et al., 2024)
    skew_reverse_kl   KL(p_S || skew p_S + (1 - skew) p_T)             DistiLLM
    tv                1/2 sum |p_T - p_S|                              total variation

The total, `alpha * hard + (1 - alpha) * soft` with `hard` the next-token cross-entropy on the labels, is a
sum over counted tokens divided by `num_tokens`: by default the tokens counted in this call, or, under
gradient accumulation, the count over every micro-batch of the optimizer step (pass it), so accumulating
changes nothing (docs/decisions.md, "Language models"). No NaN when a row counts no token, a probability
underflows or a logit is -inf (a masked vocabulary entry): 0 log 0 is 0.

Pure functions of logits; imports neither `distill.losses.fused` (the chunked form from hidden states, which
builds on `token_loss_sums` here) nor `distill.losses.token_kd` (`TokenKD`, which chooses between the two).
"""

from __future__ import annotations

import math
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from distill.losses._term import LossInputError, check_temperature

Divergence = Literal["forward_kl", "reverse_kl", "jsd", "skew_forward_kl", "skew_reverse_kl", "tv"]
DIVERGENCES: tuple[str, ...] = Divergence.__args__
LOG_FLOOR = -1e30  # stands for log 0 inside a mixture


class TokenLoss(NamedTuple):
    """`loss` (what to minimise), its `soft` and `hard` parts, and the `tokens` it counted in this call."""

    loss: Tensor
    soft: Tensor
    hard: Tensor
    tokens: Tensor


def shift_for_next_token(logits: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """(B, S, V) logits and (B, S) labels -> the (B, S-1, V) logits of positions 0..S-2 and the tokens they
    predict, positions 1..S-1."""
    return logits[:, :-1], labels[:, 1:]


def _kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) per row, summed over the last axis; a term where p = 0 is 0, whatever q is."""
    kept = log_p > -math.inf
    zero = torch.zeros((), dtype=log_p.dtype, device=log_p.device)
    log_p, log_q = torch.where(kept, log_p, zero), torch.where(kept, log_q, zero)  # masked before, so no NaN grads
    return (log_p.exp() * kept * (log_p - log_q)).sum(-1)


def _mixture(log_a: Tensor, log_b: Tensor, weight_a: float) -> Tensor:
    """log(weight_a * a + (1 - weight_a) * b), computed in log space. An entry where both are 0 (-inf: a masked
    vocabulary entry) is floored first: logaddexp's gradient at (-inf, -inf) is NaN; its KL term counts 0."""
    log_a, log_b = log_a.clamp_min(LOG_FLOOR), log_b.clamp_min(LOG_FLOOR)
    return torch.logaddexp(log_a + math.log(weight_a), log_b + math.log1p(-weight_a))


def token_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    divergence: Divergence = "forward_kl",
    *,
    temperature: float = 1.0,
    beta: float = 0.5,
    skew: float = 0.1,
) -> Tensor:
    """Per-token divergence of (N, V) logits, summed over the vocabulary, times T^2: (N,)."""
    log_s = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (N, V)
    log_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if divergence == "forward_kl" or (divergence == "jsd" and beta == 0):
        value = _kl(log_t, log_s)
    elif divergence == "reverse_kl" or (divergence == "jsd" and beta == 1):
        value = _kl(log_s, log_t)
    elif divergence == "jsd":
        log_m = _mixture(log_t, log_s, beta)
        value = beta * _kl(log_t, log_m) + (1 - beta) * _kl(log_s, log_m)
    elif divergence == "skew_forward_kl":
        value = _kl(log_t, _mixture(log_t, log_s, skew))
    elif divergence == "skew_reverse_kl":
        value = _kl(log_s, _mixture(log_s, log_t, skew))
    elif divergence == "tv":
        value = 0.5 * (log_t.exp() - log_s.exp()).abs().sum(-1)
    else:
        raise ValueError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
    return value * temperature**2


def token_loss_sums(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    divergence: Divergence = "forward_kl",
    temperature: float = 1.0,
    beta: float = 0.5,
    skew: float = 0.1,
    ignore_index: int = -100,
) -> tuple[Tensor, Tensor, Tensor]:
    """Sums over the counted tokens of already-shifted (N, V) logits and (N,) labels: (soft, hard, tokens)."""
    counted = labels != ignore_index  # (N,)
    student, teacher, targets = student_logits[counted], teacher_logits[counted], labels[counted]
    soft = token_divergence(student, teacher, divergence, temperature=temperature, beta=beta, skew=skew).sum()
    hard = F.cross_entropy(student.float(), targets, reduction="sum")
    return soft, hard, counted.sum()


def token_distillation_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    divergence: Divergence = "forward_kl",
    alpha: float = 0.0,
    temperature: float = 1.0,
    beta: float = 0.5,
    skew: float = 0.1,
    ignore_index: int = -100,
    num_tokens: int | Tensor | None = None,
    shifted: bool = False,
) -> TokenLoss:
    """`alpha * hard + (1 - alpha) * soft` over (B, S, V) logits and (B, S) labels, shifted here unless
    `shifted`; sums over counted tokens divided by `num_tokens` (default: those counted here)."""
    check_settings(divergence, alpha=alpha, temperature=temperature, beta=beta, skew=skew)
    _check_shapes(student_logits, teacher_logits, labels)
    if not shifted:
        student_logits, labels = shift_for_next_token(student_logits, labels)
        teacher_logits = teacher_logits[:, :-1]
    vocab = student_logits.shape[-1]
    soft, hard, tokens = token_loss_sums(
        student_logits.reshape(-1, vocab),
        teacher_logits.reshape(-1, vocab),
        labels.reshape(-1),
        divergence=divergence,
        temperature=temperature,
        beta=beta,
        skew=skew,
        ignore_index=ignore_index,
    )
    return combine(soft, hard, tokens, alpha=alpha, num_tokens=num_tokens)


def combine(soft: Tensor, hard: Tensor, tokens: Tensor, *, alpha: float, num_tokens: int | Tensor | None) -> TokenLoss:
    """The sums of one call divided by the tokens of the step: never by 0, so a batch counting none gives 0."""
    total = torch.as_tensor(tokens if num_tokens is None else num_tokens, device=soft.device).clamp_min(1)
    soft, hard = soft / total, hard / total
    return TokenLoss(alpha * hard + (1 - alpha) * soft, soft, hard, tokens)


def check_settings(divergence: str, *, alpha: float, temperature: float, beta: float, skew: float) -> None:
    if divergence not in DIVERGENCES:
        raise LossInputError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
    check_temperature(temperature)
    for name, value in (("alpha", alpha), ("beta", beta)):
        if not 0 <= value <= 1:
            raise LossInputError(f"{name} must lie in [0, 1], got {value}")
    if not 0 < skew < 1:  # skew 1 compares a distribution with itself: always 0
        raise LossInputError(f"skew must lie in (0, 1), got {skew}")


def _check_shapes(student: Tensor, teacher: Tensor, labels: Tensor) -> None:
    if student.shape != teacher.shape:
        raise LossInputError(
            f"student logits {tuple(student.shape)} and teacher logits {tuple(teacher.shape)} differ in shape: the "
            "two models must share a vocabulary"
        )
    if student.dim() != 3 or labels.shape != student.shape[:2]:
        raise LossInputError(
            f"token losses take (batch, sequence, vocab) logits and (batch, sequence) labels, got "
            f"{tuple(student.shape)} and {tuple(labels.shape)}"
        )
