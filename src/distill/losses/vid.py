"""Variational information distillation: the student predicts the teacher's feature as a Gaussian."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.lazy import LazyModuleMixin
from torch.nn.parameter import UninitializedParameter

from distill._tensors import resize_to
from distill.losses._registry import LOSSES
from distill.losses._term import Adapter, FeatureTermBase, LossInputError, check_pair


def vid_loss(pred_mean: Tensor, teacher_feat: Tensor, log_scale: Tensor, *, eps: float = 1e-5) -> Tensor:
    """Variational information distillation (Ahn et al., 2019, "Variational Information Distillation for
    Knowledge Transfer", CVPR).

    Maximise a variational lower bound on the mutual information of the two features: the student predicts
    the teacher's feature as a Gaussian with mean mu(f_s) (`pred_mean`, from the regressor) and a learned
    per-channel variance,

        sigma_c^2 = softplus(alpha_c) + eps                      alpha = `log_scale`, (C,)
        L = mean over b, c, h, w of  1/2 [ (t - mu)^2 / sigma_c^2 + log sigma_c^2 ]

    the Gaussian negative log-likelihood without its constant, averaged as in RepDistiller/mdistiller.
    pred_mean and teacher_feat: (B, C, H, W) of equal shapes.
    """
    var = (F.softplus(log_scale.float()) + eps)[None, :, None, None]  # (1, C, 1, 1)
    return 0.5 * ((pred_mean.float() - teacher_feat.float()).pow(2) / var + var.log()).mean()


@LOSSES.register("vid")
class VID(LazyModuleMixin, FeatureTermBase):
    """VID with its regressor: three 1x1 convolutions (no bias, ReLU between), C_s -> M -> M -> C_t.

    Lazy in both channel counts: the weights and the per-channel variance are registered at construction as
    uninitialised parameters and take their shapes from the first forward's student and teacher features
    (which the Distiller runs in `setup`, before the optimizer is built). Then they are ordinary parameters:
    in `parameters()`, the state dict and `.to()`. M = `mid_channels`, or the teacher's channels (RepDistiller).
    The variance starts at `init_var` (5, as theirs). A student map of another spatial size is resized to the
    teacher's before the regressor (adaptive average pooling down, bilinear up); (B, D) features are treated
    as (B, D, 1, 1).
    """

    def __init__(
        self,
        student_layer: str,
        teacher_layer: str,
        *,
        weight: float = 1.0,
        adapter: Adapter = "none",
        mid_channels: int | None = None,
        init_var: float = 5.0,
        eps: float = 1e-5,
    ):
        super().__init__(student_layer, teacher_layer, weight=weight, adapter=adapter)
        if init_var <= eps:
            raise ValueError(f"vid: init_var must be > eps={eps}, got {init_var}")
        self.mid_channels, self.init_var, self.eps = mid_channels, init_var, eps
        self.conv1 = UninitializedParameter()  # (M, Cs, 1, 1)
        self.conv2 = UninitializedParameter()  # (M, M, 1, 1)
        self.conv3 = UninitializedParameter()  # (Ct, M, 1, 1)
        self.log_scale = UninitializedParameter()  # (Ct,)

    def initialize_parameters(self, student_feat: Tensor, teacher_feat: Tensor) -> None:
        """Called once, by LazyModuleMixin, with the first forward's inputs."""
        if not self.has_uninitialized_params():
            return
        check_pair("vid", student_feat, teacher_feat, (2, 4))  # before reading channel counts off the shapes
        c_s, c_t = student_feat.shape[1], teacher_feat.shape[1]
        mid = self.mid_channels or c_t
        device = student_feat.device
        with torch.no_grad():
            self.conv1.materialize((mid, c_s, 1, 1), device=device)
            self.conv2.materialize((mid, mid, 1, 1), device=device)
            self.conv3.materialize((c_t, mid, 1, 1), device=device)
            self.log_scale.materialize((c_t,), device=device)
            self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.has_uninitialized_params():
            return
        with torch.no_grad():
            for conv in (self.conv1, self.conv2, self.conv3):
                nn.init.kaiming_uniform_(conv, a=math.sqrt(5))  # nn.Conv2d's default
            self.log_scale.fill_(math.log(math.expm1(self.init_var - self.eps)))  # softplus^-1(init_var - eps)

    def forward(self, student_feat: Tensor, teacher_feat: Tensor) -> Tensor:
        check_pair("vid", student_feat, teacher_feat, (2, 4))
        if student_feat.dim() != teacher_feat.dim():
            raise LossInputError(
                f"vid: student {tuple(student_feat.shape)} and teacher {tuple(teacher_feat.shape)} must both be "
                "(B, C, H, W) maps or both (B, D) vectors; tap layers of the same kind"
            )
        if student_feat.dim() == 2:
            student_feat, teacher_feat = student_feat[..., None, None], teacher_feat[..., None, None]
        x = resize_to(student_feat.float(), tuple(teacher_feat.shape[-2:]))  # (B, Cs, Ht, Wt)
        x = F.relu(F.conv2d(x, self.conv1))
        x = F.relu(F.conv2d(x, self.conv2))
        pred_mean = F.conv2d(x, self.conv3)  # (B, Ct, Ht, Wt)
        return vid_loss(pred_mean, teacher_feat, self.log_scale, eps=self.eps)
