"""Logit distillation: the student matches the teacher's softened class distribution."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from distill.losses._registry import LOSSES

SoftKind = Literal["kl", "ce"]


def soft_loss(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float, soft: SoftKind = "kl", t2: bool = True
) -> Tensor:
    """Per-sample soft loss between the tempered distributions, shape (N,).

    kl: KL(softmax(t/T) || softmax(s/T)) = sum p_t (log p_t - log p_s)
    ce: H(softmax(t/T), softmax(s/T))    = -sum p_t log p_s  (KL plus the teacher's entropy: same gradient)
    Multiplied by T^2 when `t2`, which keeps gradient size independent of T (Hinton et al., 2015).
    """
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (N, C)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    p_t = log_p_t.exp()
    if soft == "kl":
        per_sample = (p_t * (log_p_t - log_p_s)).sum(-1)
    elif soft == "ce":
        per_sample = -(p_t * log_p_s).sum(-1)
    else:
        raise ValueError(f"soft must be 'kl' or 'ce', got {soft!r}")
    return per_sample * temperature**2 if t2 else per_sample


def kd_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    labels: Tensor,
    *,
    temperature: float,
    alpha: float,
    soft: SoftKind = "kl",
    t2: bool = True,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
) -> Tensor:
    """Knowledge distillation loss (Hinton et al., 2015, "Distilling the Knowledge in a Neural Network").

        L = alpha * L_hard + (1 - alpha) * L_soft
        L_hard = cross-entropy(student_logits, labels)          mean over labelled samples
        L_soft = T^2 * KL(softmax(t/T) || softmax(s/T))         mean over all samples

    `alpha` weights the HARD loss: alpha=1 is plain cross-entropy, alpha=0 pure imitation. Samples whose
    label is `ignore_index` contribute only the soft loss. Logits may be (B, C) or (B, S, C) for tokens.
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ"
        )
    num_classes = student_logits.shape[-1]
    student_logits = student_logits.reshape(-1, num_classes)  # (N, C)
    teacher_logits = teacher_logits.reshape(-1, num_classes)
    labels = labels.reshape(-1)  # (N,)

    per_sample_ce = F.cross_entropy(
        student_logits.float(), labels, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction="none"
    )
    # Divide by the labelled count on the device: no host sync, and 0 (not NaN) for an unlabelled batch.
    labelled = (labels != ignore_index).sum().clamp(min=1)
    hard = per_sample_ce.sum() / labelled
    soft_part = soft_loss(student_logits, teacher_logits, temperature=temperature, soft=soft, t2=t2).mean()
    return alpha * hard + (1.0 - alpha) * soft_part


@LOSSES.register("kd")
class KD(nn.Module):
    """The module form of `kd_loss`: hyperparameters here, tensors in `forward`."""

    kind: ClassVar[str] = "logits"

    def __init__(
        self,
        temperature: float = 4.0,
        alpha: float = 0.5,
        *,
        soft: SoftKind = "kl",
        t2: bool = True,
        label_smoothing: float = 0.0,
        ignore_index: int = -100,
        weight: float = 1.0,
    ):
        super().__init__()
        self.weight = weight
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.temperature, self.alpha, self.soft, self.t2 = temperature, alpha, soft, t2
        self.label_smoothing, self.ignore_index = label_smoothing, ignore_index

    def forward(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor:
        return kd_loss(
            student_logits,
            teacher_logits,
            labels,
            temperature=self.temperature,
            alpha=self.alpha,
            soft=self.soft,
            t2=self.t2,
            label_smoothing=self.label_smoothing,
            ignore_index=self.ignore_index,
        )

    def extra_repr(self) -> str:
        return f"temperature={self.temperature}, alpha={self.alpha}, soft={self.soft!r}, t2={self.t2}"
