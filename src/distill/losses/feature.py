"""Feature distillation: the student matches what the teacher computes inside, not only what it outputs.

Each term reads one tapped intermediate of each network: (B, C, H, W) maps or (B, D) vectors, as the method
allows. Conv features are the benchmark setting (RepDistiller, mdistiller); the weights in their tables are
the terms' `weight` (FitNets 100, AT 1000, SP 3000, PKT 30000, RKD 1, NST 50, VID 1), not built in here.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from distill._tensors import resize_to
from distill.losses._registry import LOSSES
from distill.losses._term import Adapter, FeatureTermBase, LossInputError, check_pair

# --- FitNets --------------------------------------------------------------------------------------------------------


def hint_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """FitNets hint loss (Romero et al., 2015, "FitNets: Hints for Thin Deep Nets", ICLR).

        L = mean over all elements of (r(f_s) - f_t)^2

    where r is the regressor, here the term's adapter, applied by the Distiller before this function. The
    paper writes 1/2 ||r(f_s) - f_t||^2; RepDistiller and mdistiller take the mean (nn.MSELoss), which is
    what their weight of 100 is tuned for. Features: (B, D), (B, S, D) or (B, C, H, W), of equal shapes.
    """
    check_pair("hint", student_feat, teacher_feat, (2, 3, 4))
    if student_feat.shape != teacher_feat.shape:
        raise LossInputError(
            f"hint: student feature {tuple(student_feat.shape)} and teacher feature {tuple(teacher_feat.shape)} "
            "differ; set adapter='auto' (or 'linear', 'conv1x1', 'conv3x3') to map the student to the teacher"
        )
    return F.mse_loss(student_feat.float(), teacher_feat.float())


@LOSSES.register("hint")
class Hint(FeatureTermBase):
    """The module form of `hint_loss`; the adapter ("auto": a regressor when shapes differ) is the Distiller's."""

    default_adapter: ClassVar[Adapter] = "auto"

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        return hint_loss(student_feat, teacher_feat)


# --- Attention transfer ---------------------------------------------------------------------------------------------


def attention_map(feat: Tensor, p: float = 2.0) -> Tensor:
    """Spatial attention of a (B, C, H, W) map: mean over channels of |f|^p, shape (B, H, W)."""
    return feat.float().abs().pow(p).mean(1)


def at_loss(student_feat: Tensor, teacher_feat: Tensor, *, p: float = 2.0) -> Tensor:
    """Activation-based attention transfer (Zagoruyko & Komodakis, 2017, "Paying More Attention to Attention").

        Q(f) = a / ||a||_2,   a = vec(mean_c |f_c|^p)           (B, H*W), one unit vector per sample
        L = mean over samples and positions of (Q(f_s) - Q(f_t))^2

    As in the authors' code and RepDistiller/mdistiller (whose weight is 1000), not the paper's
    beta/2 * ||Q_s - Q_t||_p. Channel counts may differ. When spatial sizes differ, the student's attention map
    (before normalising) is resized to the teacher's: adaptive average pooling down, bilinear up. RepDistiller
    instead pools the larger *feature* down to the smaller size.
    """
    check_pair("at", student_feat, teacher_feat, (4,))
    a_s, a_t = attention_map(student_feat, p), attention_map(teacher_feat, p)  # (B, Hs, Ws), (B, Ht, Wt)
    a_s = resize_to(a_s[:, None], tuple(a_t.shape[-2:]))[:, 0]  # (B, Ht, Wt)
    q_s = F.normalize(a_s.flatten(1), dim=1)  # (B, Ht*Wt)
    q_t = F.normalize(a_t.flatten(1), dim=1)
    return (q_s - q_t).pow(2).mean()


@LOSSES.register("at")
class AT(FeatureTermBase):
    """The module form of `at_loss`."""

    def __init__(
        self, student_layer: str, teacher_layer: str, *, weight: float = 1.0, adapter: Adapter = "none", p: float = 2.0
    ):
        super().__init__(student_layer, teacher_layer, weight=weight, adapter=adapter)
        if p <= 0:
            raise ValueError(f"at: p must be > 0, got {p}")
        self.p = p

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        return at_loss(student_feat, teacher_feat, p=self.p)


# --- Similarity-preserving ------------------------------------------------------------------------------------------


def sp_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """Similarity-preserving KD (Tung & Mori, 2019, "Similarity-Preserving Knowledge Distillation", ICCV).

        G = row_normalise(F F^T),  F = the features flattened to (B, D)     (B, B): how alike the samples are
        L = ||G_s - G_t||_F^2 / B^2

    Rows are L2-normalised as in the paper and in RepDistiller/mdistiller (whose weight is 3000). The two
    networks' feature sizes may differ.
    """
    check_pair("sp", student_feat, teacher_feat, (2, 3, 4))
    batch = student_feat.shape[0]
    f_s = student_feat.float().reshape(batch, -1)  # (B, Ds)
    f_t = teacher_feat.float().reshape(batch, -1)  # (B, Dt)
    g_s = F.normalize(f_s @ f_s.T, dim=1)  # (B, B)
    g_t = F.normalize(f_t @ f_t.T, dim=1)
    return (g_s - g_t).pow(2).sum() / batch**2


@LOSSES.register("sp")
class SP(FeatureTermBase):
    """The module form of `sp_loss`."""

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        return sp_loss(student_feat, teacher_feat)


# --- Probabilistic knowledge transfer -------------------------------------------------------------------------------


def pkt_loss(student_feat: Tensor, teacher_feat: Tensor, *, eps: float = 1e-7) -> Tensor:
    """Probabilistic knowledge transfer (Passalis & Tefas, 2018, "Learning Deep Representations with
    Probabilistic Knowledge Transfer", ECCV).

        K_ij = (cos(f_i, f_j) + 1) / 2                      cosine kernel, in [0, 1]
        P_ij = K_ij / sum_j K_ij                            conditional probability of sample j given i
        L = mean_ij P^t_ij log((P^t_ij + eps) / (P^s_ij + eps))

    The mean is over all B^2 pairs (a KL per row, divided by B^2), as in the authors' code and
    RepDistiller/mdistiller (whose weight is 30000); cos uses f / (||f|| + eps). Features are flattened.
    """
    check_pair("pkt", student_feat, teacher_feat, (2, 3, 4))

    def conditional(feat: Tensor) -> Tensor:
        f = feat.float().flatten(1)  # (B, D)
        f = f / (f.norm(dim=1, keepdim=True) + eps)
        k = (f @ f.T + 1.0) / 2.0  # (B, B)
        return k / k.sum(dim=1, keepdim=True)

    p_s, p_t = conditional(student_feat), conditional(teacher_feat)
    return (p_t * torch.log((p_t + eps) / (p_s + eps))).mean()


@LOSSES.register("pkt")
class PKT(FeatureTermBase):
    """The module form of `pkt_loss`."""

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        return pkt_loss(student_feat, teacher_feat)


# --- Relational KD --------------------------------------------------------------------------------------------------


def _relations(feat: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Normalised pairwise distances (B, B) and angles (B, B, B) of flattened features."""
    f = feat.float().flatten(1)  # (B, D)
    batch = f.shape[0]
    diff = f[None, :, :] - f[:, None, :]  # (B, B, D): diff[i, j] = f_j - f_i
    dist = diff.norm(dim=-1)  # (B, B), zero diagonal
    mean_dist = dist.sum() / max(batch * (batch - 1), 1)  # over the off-diagonal pairs
    unit = F.normalize(diff, dim=-1)  # (B, B, D)
    angle = unit @ unit.transpose(1, 2)  # (B, B, B): angle[i, j, k] = cos of the angle j-i-k
    return dist / mean_dist.clamp(min=eps), angle


def rkd_loss(
    student_feat: Tensor,
    teacher_feat: Tensor,
    *,
    distance_weight: float = 25.0,
    angle_weight: float = 50.0,
    eps: float = 1e-12,
) -> Tensor:
    """Relational knowledge distillation (Park et al., 2019, "Relational Knowledge Distillation", CVPR).

        psi_D(i, j) = ||f_i - f_j|| / mu,   mu = mean distance over the pairs i != j
        psi_A(i, j, k) = <e_ji, e_ki>,      e_ji = (f_j - f_i) / ||f_j - f_i||
        L = w_d * huber(psi_D^s, psi_D^t) + w_a * huber(psi_A^s, psi_A^t)

    huber is smooth L1 with delta 1, averaged over all B^2 pairs and B^3 triplets, as in the authors' code and
    RepDistiller/mdistiller (w_d 25, w_a 50, applied to the pooled penultimate feature; tap that layer to
    match them). Features are flattened; their sizes may differ. mu averages the off-diagonal distances
    (the reference code averages the non-zero ones: the same unless two samples coincide).
    """
    check_pair("rkd", student_feat, teacher_feat, (2, 3, 4))
    dist_s, angle_s = _relations(student_feat, eps)
    dist_t, angle_t = _relations(teacher_feat, eps)
    return distance_weight * F.smooth_l1_loss(dist_s, dist_t) + angle_weight * F.smooth_l1_loss(angle_s, angle_t)


@LOSSES.register("rkd")
class RKD(FeatureTermBase):
    """The module form of `rkd_loss`."""

    def __init__(
        self,
        student_layer: str,
        teacher_layer: str,
        *,
        weight: float = 1.0,
        adapter: Adapter = "none",
        distance_weight: float = 25.0,
        angle_weight: float = 50.0,
    ):
        super().__init__(student_layer, teacher_layer, weight=weight, adapter=adapter)
        self.distance_weight, self.angle_weight = distance_weight, angle_weight

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        return rkd_loss(
            student_feat, teacher_feat, distance_weight=self.distance_weight, angle_weight=self.angle_weight
        )


# --- Neuron selectivity transfer ------------------------------------------------------------------------------------


def nst_loss(student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
    """Neuron selectivity transfer (Huang & Wang, 2017, "Like What You Like: Knowledge Distill via Neuron
    Selectivity Transfer").

    Each channel's spatial activation map, flattened to H*W and L2-normalised, is one sample of a network's
    distribution; the loss is their squared MMD under the polynomial kernel k(x, y) = (x . y)^2 (d=2, c=0):

        L = mean_ii' k(s_i, s_i') + mean_jj' k(t_j, t_j') - 2 mean_ij k(s_i, t_j)     per sample, batch mean

    As in RepDistiller/mdistiller (weight 50), with the teacher-only term kept so that L = 0 when the maps
    agree (it carries no gradient). Channel counts may differ; a student map of another spatial size is resized
    to the teacher's first (adaptive average pooling down, bilinear up; RepDistiller pools the larger down).
    """
    check_pair("nst", student_feat, teacher_feat, (4,))
    student_feat = resize_to(student_feat.float(), tuple(teacher_feat.shape[-2:]))
    s = F.normalize(student_feat.flatten(2), dim=2)  # (B, Cs, H*W)
    t = F.normalize(teacher_feat.float().flatten(2), dim=2)  # (B, Ct, H*W)

    def kernel(a: Tensor, b: Tensor) -> Tensor:
        return (a @ b.transpose(1, 2)).pow(2).mean()  # (B, Ca, Cb) -> mean

    return kernel(s, s) + kernel(t, t) - 2 * kernel(s, t)


@LOSSES.register("nst")
class NST(FeatureTermBase):
    """The module form of `nst_loss`."""

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        return nst_loss(student_feat, teacher_feat)
