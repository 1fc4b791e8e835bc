"""Loss terms: math over tensors, registered by name for configs and the CLI."""

from distill.losses._registry import LOSSES
from distill.losses.logit import KD, kd_loss, soft_loss


def list() -> list[str]:
    """Names of every registered loss term."""
    return LOSSES.names()


__all__ = ["KD", "LOSSES", "kd_loss", "list", "soft_loss"]
