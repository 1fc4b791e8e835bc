"""distill: train a small student model to imitate a large teacher, and prove what it gained."""

from distill import losses
from distill.errors import ConfigError, DistillError, TrainingDiverged
from distill.modules.distiller import Distiller, Supervised
from distill.taps import Taps
from distill.train import TrainOptions, fit

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "DistillError",
    "Distiller",
    "Supervised",
    "Taps",
    "TrainOptions",
    "TrainingDiverged",
    "fit",
    "losses",
]
