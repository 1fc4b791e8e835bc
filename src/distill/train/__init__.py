"""The training loop: trains any module whose forward returns a loss dict."""

from distill.train.checkpoint import Checkpoints
from distill.train.loop import fit
from distill.train.options import TrainOptions
from distill.train.parallel import EpochBatches, shuffled
from distill.train.steps import Callback, EpochSeeded, History, evaluate, resolve_device, seed_everything, setup

__all__ = [
    "Callback",
    "Checkpoints",
    "EpochBatches",
    "EpochSeeded",
    "History",
    "TrainOptions",
    "evaluate",
    "fit",
    "resolve_device",
    "seed_everything",
    "setup",
    "shuffled",
]
