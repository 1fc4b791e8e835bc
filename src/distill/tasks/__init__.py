"""Tasks: what a run's models do, and so the data they read and what is measured of them.

base.py        the `Task` protocol every experiment implements, and what they share
classify.py    images and table rows with a class: accuracy, agreement, per-sample correctness
lm.py          causal language models: perplexity, per-token loss (`perplexity.py` measures it)

Adding a task is a root in config/roots.py, a module here whose experiment implements `Task`, and its entry
in `BUILDERS` (docs/architecture.md).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from distill.tasks import classify, lm
from distill.tasks.base import Task

if TYPE_CHECKING:
    from distill.config import Config

BUILDERS = {"classify": classify.build_experiment, "lm": lm.build_experiment}


def experiment(cfg: Config) -> Task:
    """The built experiment of `cfg`'s task: its data, splits and loaders."""
    return BUILDERS[cfg.task](cfg)


__all__ = ["BUILDERS", "Task", "experiment"]
