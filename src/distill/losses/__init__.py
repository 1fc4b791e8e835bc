"""Loss terms: math over tensors, registered by name for configs and the CLI."""

from distill.losses._registry import LOSSES
from distill.losses._term import LossInputError, check_temperature
from distill.losses.attention import AttentionKL, AttentionMSE, attention_kl_loss, attention_mse_loss
from distill.losses.crd import CRD, contrast_scores, crd_loss, nce_loss
from distill.losses.feature import (
    AT,
    NST,
    PKT,
    RKD,
    SP,
    Hint,
    at_loss,
    attention_map,
    hint_loss,
    nst_loss,
    pkt_loss,
    rkd_loss,
    sp_loss,
)
from distill.losses.fused import fused_token_distillation_loss
from distill.losses.kd import KD, hard_loss, kd_loss, soft_loss
from distill.losses.logit import (
    DIST,
    DKD,
    JSD,
    LogitMSE,
    ReverseKL,
    dist_loss,
    dkd_loss,
    jsd_loss,
    logit_mse_loss,
    reverse_kl_loss,
)
from distill.losses.token import TokenLoss, token_distillation_loss
from distill.losses.token_kd import TokenKD
from distill.losses.vid import VID, vid_loss


def list() -> list[str]:
    """Names of every registered loss term."""
    return LOSSES.names()


__all__ = [
    "AT",
    "CRD",
    "DIST",
    "DKD",
    "JSD",
    "KD",
    "LOSSES",
    "NST",
    "PKT",
    "RKD",
    "SP",
    "VID",
    "AttentionKL",
    "AttentionMSE",
    "Hint",
    "LogitMSE",
    "LossInputError",
    "ReverseKL",
    "TokenKD",
    "TokenLoss",
    "at_loss",
    "attention_kl_loss",
    "attention_map",
    "attention_mse_loss",
    "check_temperature",
    "contrast_scores",
    "crd_loss",
    "dist_loss",
    "dkd_loss",
    "fused_token_distillation_loss",
    "hard_loss",
    "hint_loss",
    "jsd_loss",
    "kd_loss",
    "list",
    "logit_mse_loss",
    "nce_loss",
    "nst_loss",
    "pkt_loss",
    "reverse_kl_loss",
    "rkd_loss",
    "soft_loss",
    "sp_loss",
    "token_distillation_loss",
    "vid_loss",
]
