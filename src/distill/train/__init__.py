"""The training loop: trains any module whose forward returns a loss dict."""

from distill.train.checkpoint import Checkpoints
from distill.train.loop import Callback, History, evaluate, fit, resolve_device, seed_everything, setup
from distill.train.options import TrainOptions

__all__ = [
    "Callback",
    "Checkpoints",
    "History",
    "TrainOptions",
    "evaluate",
    "fit",
    "resolve_device",
    "seed_everything",
    "setup",
]
