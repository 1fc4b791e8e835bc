"""Contrastive representation distillation: tell the teacher's view of a sample apart from other samples'."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.losses._registry import LOSSES
from distill.losses._term import Adapter, FeatureTermBase, LossInputError, check_pair


def contrast_scores(embed: Tensor, bank: Tensor, contrast_index: Tensor, *, temperature: float) -> Tensor:
    """exp(<bank[k], embed> / T) for each sample's K+1 bank rows (positive first), shape (B, K+1).

    embed: (B, D) unit vectors; bank: (N, D); contrast_index: (B, K+1) rows of the bank.
    """
    rows = bank[contrast_index]  # (B, K+1, D), a copy: the banks may be updated in place after this
    return torch.exp(torch.einsum("bkd,bd->bk", rows, embed) / temperature)


def nce_loss(probs: Tensor, *, num_samples: int, eps: float = 1e-7) -> Tensor:
    """NCE loss of one direction of CRD, from unnormalised probabilities P = scores / Z, shape (B, K+1).

    With K noise samples drawn uniformly, Pn = 1/N, the posterior that a pair is the real one is
    h = P / (P + K * Pn); the positive (column 0) should score high, the K negatives low:

        L = -1/B sum_b [ log h(pos_b) + sum_k log(1 - h(neg_bk)) ]
    """
    k = probs.shape[1] - 1
    noise = k / num_samples  # K * Pn
    pos, neg = probs[:, 0], probs[:, 1:]  # (B,), (B, K)
    log_h_pos = torch.log(pos / (pos + noise + eps))
    log_not_h_neg = torch.log(noise / (neg + noise + eps))
    return -(log_h_pos.sum() + log_not_h_neg.sum()) / probs.shape[0]


def crd_loss(student_scores: Tensor, teacher_scores: Tensor, norms: Tensor, *, num_samples: int) -> Tensor:
    """Contrastive representation distillation (Tian et al., 2020, "Contrastive Representation Distillation", ICLR).

    Embeddings g_s(f_s), g_t(f_t) (linear heads, L2-normalised) are scored against memory banks of the other
    network's past embeddings, one positive (the sample itself) and K uniform negatives per sample:

        P_s = exp(<teacher_bank[k], g_s> / T) / Z_s         student_scores / norms[0], (B, K+1)
        P_t = exp(<student_bank[k], g_t> / T) / Z_t         teacher_scores / norms[1]
        L = NCE(P_s) + NCE(P_t)                             both directions, as the authors' code

    Z_s, Z_t (`norms`) are the authors' constant estimates of the partition functions, N * mean(scores) of
    the first training batch.
    """
    return nce_loss(student_scores / norms[0], num_samples=num_samples) + nce_loss(
        teacher_scores / norms[1], num_samples=num_samples
    )


@LOSSES.register("crd")
class CRD(FeatureTermBase):
    """CRD with its state: two embedding heads and two momentum memory banks of every training sample.

    `forward(student_feat, teacher_feat, index)` takes the dataset indices (B,) of the batch's samples.
    The heads are `nn.LazyLinear` from the flattened features to `feat_dim` (sized by the Distiller's first
    forward, before the optimizer is built); both are trained, as in the authors' code. The banks (N, feat_dim)
    are buffers: the rows of the batch move to normalise(m * old + (1 - m) * new) in training mode only, never
    in eval (so not in the Distiller's sizing forward either). The normalisers Z are set by the first training
    forward and kept, in the `norms` buffer.

    Negatives are drawn uniformly with replacement from the training rows (`train_rows`, default all N;
    torch's global RNG, so
    `torch.manual_seed` reproduces them), the positive may reappear among them: the authors' alias-method
    sampler over uniform weights draws from this same distribution. Their CIFAR-100 benchmark instead passes
    class-aware negatives from its dataset (other classes' samples, mode "exact"); this term does not.
    Defaults are theirs: feat_dim 128, K 16384, T 0.07, momentum 0.5 (weight 0.8 in their tables).
    """

    needs_index: ClassVar[bool] = True
    one_process_only: ClassVar[str] = (
        "its memory banks hold a row per training sample, updated by the processes that see it, which a "
        "data-parallel run does not share yet"
    )

    def __init__(
        self,
        student_layer: str,
        teacher_layer: str,
        *,
        num_samples: int,
        feat_dim: int = 128,
        nce_k: int = 16384,
        nce_t: float = 0.07,
        momentum: float = 0.5,
        weight: float = 1.0,
        adapter: Adapter = "none",
        max_memory_mb: float = 4096.0,
        train_rows: Tensor | Sequence[int] | None = None,
    ):
        super().__init__(student_layer, teacher_layer, weight=weight, adapter=adapter)
        # Negatives come only from rows that training updates: a validation row's memory never leaves its
        # random start, so drawing it would contrast against noise.
        pool = torch.arange(num_samples) if train_rows is None else torch.as_tensor(train_rows, dtype=torch.long)
        if not 0 < nce_k < len(pool):
            raise ValueError(
                f"crd: nce_k must be in [1, number of training samples), got nce_k={nce_k} with {len(pool)} "
                "training samples; draw fewer negatives"
            )
        if nce_t <= 0 or not 0.0 <= momentum < 1.0:
            raise ValueError(f"crd: need nce_t > 0 and momentum in [0, 1), got nce_t={nce_t}, momentum={momentum}")
        needed_mb = self.memory_estimate(num_samples, feat_dim) / 2**20
        if needed_mb > max_memory_mb:
            raise ValueError(
                f"crd: the memory banks would take {needed_mb:.0f} MB (2 x {num_samples} samples x {feat_dim} "
                f"float32), over max_memory_mb={max_memory_mb:g}; lower feat_dim or raise max_memory_mb"
            )
        self.num_samples, self.feat_dim, self.nce_k = num_samples, feat_dim, nce_k
        self.nce_t, self.momentum = nce_t, momentum
        self.embed_student = nn.LazyLinear(feat_dim)
        self.embed_teacher = nn.LazyLinear(feat_dim)
        stdv = 1.0 / math.sqrt(feat_dim / 3)  # the authors' initialisation: uniform in [-stdv, stdv]
        self.register_buffer("student_bank", torch.rand(num_samples, feat_dim) * 2 * stdv - stdv)
        self.register_buffer("teacher_bank", torch.rand(num_samples, feat_dim) * 2 * stdv - stdv)
        self.register_buffer("norms", torch.full((2,), -1.0))  # Z_s, Z_t; -1 until the first training forward
        self.register_buffer("negative_pool", pool, persistent=False)

    @staticmethod
    def memory_estimate(num_samples: int, feat_dim: int) -> int:
        """Bytes of the two float32 memory banks; each step also gathers 2 x B x (K+1) x feat_dim floats."""
        return 2 * num_samples * feat_dim * 4

    def memory_bytes(self) -> int:
        """Bytes the memory banks take now."""
        return sum(bank.numel() * bank.element_size() for bank in (self.student_bank, self.teacher_bank))

    def forward(self, student_feat: Tensor, teacher_feat: Tensor, index: Tensor) -> Tensor:
        check_pair("crd", student_feat, teacher_feat, (2, 3, 4))
        if index.shape != (student_feat.shape[0],):
            raise LossInputError(f"crd: index must be ({student_feat.shape[0]},), got shape {tuple(index.shape)}")
        g_s = F.normalize(self.embed_student(student_feat.float().flatten(1)), dim=1)  # (B, feat_dim)
        g_t = F.normalize(self.embed_teacher(teacher_feat.float().flatten(1)), dim=1)
        pool = self.negative_pool
        negatives = pool[torch.randint(len(pool), (index.shape[0], self.nce_k), device=pool.device)]  # (B, K)
        contrast_index = torch.cat([index[:, None], negatives], dim=1)  # (B, K+1), positive first
        student_scores = contrast_scores(g_s, self.teacher_bank, contrast_index, temperature=self.nce_t)
        teacher_scores = contrast_scores(g_t, self.student_bank, contrast_index, temperature=self.nce_t)
        # Z from this batch while unset (no host sync: a `where` on the device), then kept
        batch_norms = torch.stack([student_scores.mean(), teacher_scores.mean()]).detach() * len(pool)
        norms = torch.where(self.norms > 0, self.norms, batch_norms)
        loss = crd_loss(student_scores, teacher_scores, norms, num_samples=len(pool))
        if self.training:
            self.norms.copy_(norms)
            self._update_banks(g_s.detach(), g_t.detach(), index)
        return loss

    @torch.no_grad()
    def _update_banks(self, g_s: Tensor, g_t: Tensor, index: Tensor) -> None:
        for bank, embed in ((self.student_bank, g_s), (self.teacher_bank, g_t)):
            rows = bank[index] * self.momentum + embed * (1.0 - self.momentum)  # (B, feat_dim)
            bank.index_copy_(0, index, F.normalize(rows, dim=1))

    def extra_repr(self) -> str:
        return (
            f"{self.student_layer!r} -> {self.teacher_layer!r}, num_samples={self.num_samples}, "
            f"feat_dim={self.feat_dim}, nce_k={self.nce_k}, nce_t={self.nce_t}, momentum={self.momentum}"
        )
