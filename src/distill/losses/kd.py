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


def hard_loss(
    logits: Tensor,
    labels: Tensor,
    *,
    label_smoothing: float = 0.0,
    ignore_index: int = -100,
    per_sample: bool = False,
) -> Tensor:
    """Cross-entropy of (N, C) logits over the labelled samples; those labelled `ignore_index` (a transfer set's)
    take no part. Divided by the labelled count (the supervised mean; a batch without a label gives 0, not NaN),
    or with `per_sample` by every sample, so that a mixed loss weighs each sample alike however few carry a
    label. The division happens on the device: no host sync."""
    summed = F.cross_entropy(
        logits.float(), labels, ignore_index=ignore_index, label_smoothing=label_smoothing, reduction="sum"
    )
    count = len(labels) if per_sample else (labels != ignore_index).sum().clamp(min=1)
    return summed / count


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

        L = 1/N sum_i [ alpha * CE_i * [i labelled] + (1 - alpha) * L_soft_i ]
        CE_i      = cross-entropy(student_logits_i, labels_i)
        L_soft_i  = T^2 * KL(softmax(t_i/T) || softmax(s_i/T))

    `alpha` weights the HARD loss: alpha=1 is plain cross-entropy, alpha=0 pure imitation. Samples whose
    label is `ignore_index` contribute only the soft loss, and every sample weighs alike: with all labelled,
    this is alpha * (mean CE) + (1 - alpha) * (mean soft loss); in a transfer set where few rows carry labels,
    those few do not outweigh the rest (a mean over the labelled ones alone would give each a weight of
    N / labelled). Logits may be (B, C) or (B, S, C) for tokens.
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
    hard = hard_loss(
        student_logits, labels, label_smoothing=label_smoothing, ignore_index=ignore_index, per_sample=True
    )
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
