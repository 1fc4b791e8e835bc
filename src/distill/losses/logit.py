"""Logit distillation beyond KD: the logit terms of the benchmark tables (DKD, DIST, reverse KL, JSD, MSE)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.losses._registry import LOSSES
from distill.losses._term import LossInputError, check_rank, check_temperature


def _flat_logits(loss: str, student_logits: Tensor, teacher_logits: Tensor) -> tuple[Tensor, Tensor]:
    """Both logits as float32 (N, C), from (B, C) or (B, S, C); refuse other ranks and mismatched shapes."""
    check_rank(loss, "student_logits", student_logits, (2, 3))
    check_rank(loss, "teacher_logits", teacher_logits, (2, 3))
    if student_logits.shape != teacher_logits.shape:
        raise LossInputError(
            f"{loss}: student logits {tuple(student_logits.shape)} and teacher logits "
            f"{tuple(teacher_logits.shape)} differ"
        )
    num_classes = student_logits.shape[-1]
    return student_logits.reshape(-1, num_classes).float(), teacher_logits.reshape(-1, num_classes).float()


def dkd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    alpha: float,
    beta: float,
    temperature: float,
    ignore_index: int = -100,
) -> Tensor:
    """Decoupled knowledge distillation (Zhao et al., 2022, "Decoupled Knowledge Distillation", CVPR).

    KD splits into a target-class and a non-target-class part, which DKD weighs apart:

        b = [p_gt, 1 - p_gt]                      binary: target class vs the rest, p = softmax(z / T)
        p^ = p_i / (1 - p_gt), i != gt            the distribution among the non-target classes
        TCKD = KL(b_t || b_s),  NCKD = KL(p^_t || p^_s)
        L = T^2 * (alpha * TCKD + beta * NCKD)    mean over labelled samples

    As in the authors' code (mdistiller), both parts are scaled by T^2. The paper's cross-entropy is not part
    of this term: add it as its own term, `KD(alpha=1.0)` (`{loss: kd, alpha: 1.0}` in a config). The
    authors' linear warm-up of the DKD weight over the first 20 epochs is not reproduced. Samples whose label
    is `ignore_index` are left out. Logits may be (B, C) or (B, S, C).
    """
    student_logits, teacher_logits = _flat_logits("dkd", student_logits, teacher_logits)  # (N, C)
    labels = labels.reshape(-1)  # (N,)
    labelled = labels != ignore_index
    gt = F.one_hot(labels.clamp(min=0), student_logits.shape[-1]).bool() & labelled[:, None]  # (N, C)

    def parts(logits: Tensor) -> tuple[Tensor, Tensor]:
        z = logits / temperature
        # log b = [log p_gt, log(1 - p_gt)], in log space: log(1 - p_gt) = logsumexp(non-target) - logsumexp(all)
        non_target = z.masked_fill(gt, torch.finfo(z.dtype).min)
        log_all = z.logsumexp(-1)
        log_b = torch.stack([(z * gt).sum(-1) - log_all, non_target.logsumexp(-1) - log_all], dim=-1)  # (N, 2)
        return log_b, non_target.log_softmax(-1)  # (N, 2), (N, C) with p^ = 0 at the target

    log_b_s, log_nc_s = parts(student_logits)
    log_b_t, log_nc_t = parts(teacher_logits)
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum(-1)  # (N,)
    nckd = (log_nc_t.exp() * (log_nc_t - log_nc_s)).masked_fill(gt, 0.0).sum(-1)  # (N,)
    per_sample = (alpha * tckd + beta * nckd) * labelled
    return per_sample.sum() / labelled.sum().clamp(min=1) * temperature**2


@LOSSES.register("dkd")
class DKD(nn.Module):
    """The module form of `dkd_loss`. Defaults are the paper's CIFAR-100 setting (alpha 1, beta 8, T 4)."""

    kind: ClassVar[str] = "logits"

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 8.0,
        temperature: float = 4.0,
        *,
        ignore_index: int = -100,
        weight: float = 1.0,
    ):
        super().__init__()
        check_temperature(temperature)
        self.alpha, self.beta, self.temperature, self.ignore_index = alpha, beta, temperature, ignore_index
        self.weight = weight

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        return dkd_loss(
            student_logits,
            teacher_logits,
            labels,
            alpha=self.alpha,
            beta=self.beta,
            temperature=self.temperature,
            ignore_index=self.ignore_index,
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, beta={self.beta}, temperature={self.temperature}"


def _pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of each row of a with the same row of b, (N, C) -> (N,)."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


def dist_loss(
    student_logits: Tensor, teacher_logits: Tensor, *, beta: float, gamma: float, temperature: float
) -> Tensor:
    """DIST (Huang et al., 2022, "Knowledge Distillation from A Stronger Teacher", NeurIPS).

    Match relations, not values: with Y = softmax(z / T) of shape (N, C) and rho the Pearson correlation,

        inter = 1 - mean_i rho(Y_s[i, :], Y_t[i, :])     each sample's ranking of the classes
        intra = 1 - mean_c rho(Y_s[:, c], Y_t[:, c])     each class's ranking of the samples
        L = T^2 * (beta * inter + gamma * intra)

    Defaults follow the authors' code (hunto/DIST_KD, image_classification_sota): beta = gamma = 1, T = 1,
    their ImageNet setting; their CIFAR-100 setting is beta = gamma = 2, T = 4. rho uses their eps = 1e-8 in
    the denominator. Token logits (B, S, C) are flattened, so the intra-class term ranks tokens.
    """
    student_logits, teacher_logits = _flat_logits("dist", student_logits, teacher_logits)  # (N, C)
    y_s = (student_logits / temperature).softmax(-1)
    y_t = (teacher_logits / temperature).softmax(-1)
    inter = 1 - _pearson_rows(y_s, y_t).mean()
    intra = 1 - _pearson_rows(y_s.T, y_t.T).mean()  # (C, N): correlation over the batch
    return (beta * inter + gamma * intra) * temperature**2


@LOSSES.register("dist")
class DIST(nn.Module):
    """The module form of `dist_loss`."""

    kind: ClassVar[str] = "logits"

    def __init__(self, beta: float = 1.0, gamma: float = 1.0, temperature: float = 1.0, *, weight: float = 1.0):
        super().__init__()
        check_temperature(temperature)
        self.beta, self.gamma, self.temperature = beta, gamma, temperature
        self.weight = weight

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        return dist_loss(student_logits, teacher_logits, beta=self.beta, gamma=self.gamma, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"beta={self.beta}, gamma={self.gamma}, temperature={self.temperature}"


def reverse_kl_loss(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float) -> Tensor:
    """Reverse KL: T^2 * KL(softmax(s/T) || softmax(t/T)) = T^2 * sum p_s (log p_s - log p_t), batch mean.

    Mode-seeking where forward KL (Hinton's) is mean-covering: the student is pushed to put its mass where
    the teacher's is, rather than to cover every class the teacher gives weight to (as in MiniLLM, Gu et al.,
    2024, which uses T = 1). Logits may be (B, C) or (B, S, C); every row counts in the mean.
    """
    student_logits, teacher_logits = _flat_logits("reverse_kl", student_logits, teacher_logits)  # (N, C)
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    return (log_p_s.exp() * (log_p_s - log_p_t)).sum(-1).mean() * temperature**2


class _TemperedTerm(nn.Module):
    """The module form of a logit loss whose one option is its temperature."""

    kind: ClassVar[str] = "logits"
    loss_fn: ClassVar[Callable[..., Tensor]]

    def __init__(self, temperature: float = 1.0, *, weight: float = 1.0):
        super().__init__()
        check_temperature(temperature)
        self.temperature, self.weight = temperature, weight

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        return self.loss_fn(student_logits, teacher_logits, temperature=self.temperature)

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}"


@LOSSES.register("reverse_kl")
class ReverseKL(_TemperedTerm):
    """The module form of `reverse_kl_loss`."""

    loss_fn = staticmethod(reverse_kl_loss)


def jsd_loss(student_logits: Tensor, teacher_logits: Tensor, *, temperature: float) -> Tensor:
    """Jensen-Shannon divergence between the tempered distributions, T^2-scaled, batch mean.

        m = (p_s + p_t) / 2
        JSD = 1/2 KL(p_s || m) + 1/2 KL(p_t || m)         symmetric, bounded by log 2 (before T^2)

    The beta = 1/2 case of the generalised JSD of GKD (Agarwal et al., 2024). Logits may be (B, C) or (B, S, C).
    """
    student_logits, teacher_logits = _flat_logits("jsd", student_logits, teacher_logits)  # (N, C)
    log_p_s = F.log_softmax(student_logits / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits / temperature, dim=-1)
    log_m = torch.logaddexp(log_p_s, log_p_t) - math.log(2.0)
    kl_s = (log_p_s.exp() * (log_p_s - log_m)).sum(-1)  # (N,)
    kl_t = (log_p_t.exp() * (log_p_t - log_m)).sum(-1)
    return (0.5 * kl_s + 0.5 * kl_t).mean() * temperature**2


@LOSSES.register("jsd")
class JSD(_TemperedTerm):
    """The module form of `jsd_loss`."""

    loss_fn = staticmethod(jsd_loss)


def logit_mse_loss(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Logit matching (Ba & Caruana, 2014, "Do Deep Nets Really Need to be Deep?"), the T -> inf limit of KD.

        L = mean over samples and classes of (z_s - z_t)^2

    The paper writes 1/(2N) sum_n ||z_s - z_t||^2; the mean over classes here is that times 2/C.
    Logits may be (B, C) or (B, S, C).
    """
    student_logits, teacher_logits = _flat_logits("logit_mse", student_logits, teacher_logits)  # (N, C)
    return F.mse_loss(student_logits, teacher_logits)


@LOSSES.register("logit_mse")
class LogitMSE(nn.Module):
    """The module form of `logit_mse_loss`."""

    kind: ClassVar[str] = "logits"

    def __init__(self, *, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        return logit_mse_loss(student_logits, teacher_logits)
