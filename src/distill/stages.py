"""What every recipe does the same way, in every task: train a stage unless it is done, the teacher on its
labels, the scratch baseline."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn
from torch.utils.data import DataLoader

from distill.train import Checkpoints, TrainOptions, fit, parallel
from distill.weights import load_weights, mark_start, save_weights, start_of

if TYPE_CHECKING:
    from distill.tasks.base import Task

SHARED = ("teacher", "assistant")  # trained once, with the first seed; every other stage once per seed


class Stages:
    """Trains the stages of one run in its folder: a stage NAME checkpoints into run_dir/NAME/ and, once done,
    writes each of its results as run_dir/RESULT.safetensors. A stage whose results all exist is not trained
    again (their weights are loaded); one with a checkpoint continues from it on resume. With a `tag` (the
    seeds after the first), every name but the SHARED ones becomes NAME-TAG."""

    def __init__(self, exp: Task, *, resume: bool, tag: str = ""):
        self.exp, self.resume, self.tag = exp, resume, tag

    def _name(self, name: str) -> str:
        return name if not self.tag or name in SHARED else f"{name}-{self.tag}"

    def train(
        self, name: str, module: nn.Module, model: nn.Module, options: TrainOptions, loader: DataLoader | None = None
    ) -> None:
        """Train `module`, which wraps `model`, as the stage `name`; its result is `model`, saved as NAME."""
        self.run(name, module, {name: model}, options, loader)

    def run(
        self,
        name: str,
        module: nn.Module,
        results: dict[str, nn.Module],
        options: TrainOptions,
        loader: DataLoader | None = None,
    ) -> None:
        """Train `module` as the stage `name` unless done; `results` are the models it trains, by the names
        they are saved under (several when peers train together). `loader` gives its batches: by default every
        training row (a student's); `exp.labelled_loader` for what learns from labels alone."""
        name = self._name(name)
        paths = {result: self.exp.run_dir / f"{self._name(result)}.safetensors" for result in results}
        if all(path.exists() for path in paths.values()):
            for result, path in paths.items():
                load_weights(results[result], path)
            return
        checkpoints = Checkpoints(self.exp.run_dir / name / "checkpoints")
        self.exp.log("training %s for %d epochs", name, options.epochs)
        resume = self.resume and checkpoints.pointer("last") is not None
        loader = self.exp.train_loader if loader is None else loader
        fit(module, loader, self.exp.val_loader, options, run_dir=self.exp.run_dir / name, resume=resume)
        if options.select == "best" and checkpoints.pointer("best") is not None:
            checkpoints.load("best", module)
        for result, path in paths.items():
            self._write(path, results[result], {"stage": name, "select": options.select})

    def save(self, name: str, model: nn.Module, **metadata: str) -> None:
        """Write a model the run reports on that no stage of that name trained (the last of several stages)."""
        self._write(self.exp.run_dir / f"{self._name(name)}.safetensors", model, metadata)

    @staticmethod
    def _write(path: Path, model: nn.Module, metadata: dict[str, str]) -> None:
        """The first process of a data-parallel run writes; the others wait until the file is there."""
        if parallel.is_main():
            save_weights(model, path, metadata=metadata)
        parallel.barrier()


def train_teacher(stages: Stages, teacher: nn.Module) -> None:
    """The teacher on its labels, for teacher.epochs (default train.epochs), unless it comes ready; a pretrained
    teacher (weights, a pretrained model) is fine-tuned from where it started."""
    exp = stages.exp
    if exp.teacher_given():
        return
    options = exp.alone_options(exp.cfg.train, exp.cfg.teacher.epochs or exp.cfg.train.epochs)
    stages.train("teacher", exp.alone(teacher), teacher, options, exp.teacher_loader)
    if (start := start_of(teacher)) is not None and start.pretrained:
        mark_start(teacher, start.fine_tuned(options.epochs))


def keep_loaded_teacher(stages: Stages, teacher: nn.Module) -> None:
    """A teacher that came ready (teacher.weights, a pretrained model), written beside the run's other models
    once they are trained, so the run folder holds every model it reports on."""
    if stages.exp.teacher_given():
        stages.save("teacher", teacher, source="teacher.weights")


def train_scratch(stages: Stages, *, epochs: int, label_smoothing: float = 0.0) -> nn.Module:
    """The student alone: the same architecture, initial weights, epochs and steps, on the labelled rows only
    (a row whose label a few-label study hid is never seen)."""
    exp = stages.exp
    scratch = exp.net("student", exp.cfg.student.weights)
    module = exp.alone(scratch, label_smoothing=label_smoothing)
    stages.train("scratch", module, scratch, exp.alone_options(exp.cfg.train, epochs), exp.labelled_loader)
    return scratch
