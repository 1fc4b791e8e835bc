"""Knowledge distillation (Hinton et al., 2015): the student matches the teacher's softened class distribution,
beside the labels. The hard loss here is the one every supervised path of the library uses."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch.nn.functional as F
from torch import Tensor, nn

from distill.losses._registry import LOSSES
from distill.losses._term import LossInputError, check_rank, check_temperature

SoftKind = Literal["kl", "ce"]


def soft_loss(
    student_logits: Tensor, teacher_logits: Tensor, *, temperature: float, soft: SoftKind = "kl", t2: bool = True
) -> Tensor:
    """Soft loss between the tempered distributions of (N, C) logits, mean over the N samples.

    kl: KL(softmax(t/T) || softmax(s/T)) = sum p_t (log p_t - log p_s)
    ce: H(softmax(t/T), softmax(s/T))    = -sum p_t log p_s  (KL plus the teacher's entropy: same gradient)
    Multiplied by T^2 when `t2`, which keeps gradient size independent of T (Hinton et al., 2015).
    """
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)  # (N, C)
    log_p_t = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if soft == "kl":  # one fused op: this sits on every distillation step
        loss = F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True)
    elif soft == "ce":
        loss = -(log_p_t.exp() * log_p_s).sum() / len(log_p_s)
    else:
        raise ValueError(f"soft must be 'kl' or 'ce', got {soft!r}")
    return loss * temperature**2 if t2 else loss


def hard_loss(logits: Tensor, labels: Tensor, *, label_smoothing: float = 0.0, ignore_index: int = -100) -> Tensor:
    """Cross-entropy of (N, C) logits, mean over the labelled samples: those labelled `ignore_index` (a
    transfer set's) take no part, and a batch without any label gives 0, not NaN. The count is divided on the
    device: no host sync."""
    summed = F.cross_entropy(
        logits.float(), labels, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction="sum"
    )
    return summed / (labels != ignore_index).sum().clamp(min=1)


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
        raise LossInputError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ"
        )
    check_rank("kd", "student_logits", student_logits, (2, 3))
    num_classes = student_logits.shape[-1]
    student_logits = student_logits.reshape(-1, num_classes)  # (N, C)
    teacher_logits = teacher_logits.reshape(-1, num_classes)
    labels = labels.reshape(-1)  # (N,)

    # alpha is a hyperparameter, not data: leaving out a part weighted 0 costs no host sync
    if alpha == 0.0:
        return soft_loss(student_logits, teacher_logits, temperature=temperature, soft=soft, t2=t2)
    hard = hard_loss(student_logits, labels, label_smoothing=label_smoothing, ignore_index=ignore_index)
    if alpha == 1.0:
        return hard
    soft_part = soft_loss(student_logits, teacher_logits, temperature=temperature, soft=soft, t2=t2)
    return alpha * hard + (1.0 - alpha) * soft_part


@LOSSES.register("kd")
class KD(nn.Module):
    """The module form of `kd_loss`: hyperparameters here, tensors in `forward`."""

    kind: ClassVar[str] = "logits"
    accepts_topk: ClassVar[bool] = True  # its soft targets stay exact on the top-k classes of a top-k cache

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
        check_temperature(temperature)
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
