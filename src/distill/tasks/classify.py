"""task: classify. From a config to the objects a run trains: data and loaders, networks, loss terms, and the
checks that make a mistake fail before any file is written; and what the run reports on each model."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from distill import data
from distill.config.groups import TermConfig
from distill.diagnosis import diagnose
from distill.errors import ConfigError, DistillError, first_line
from distill.losses import LOSSES
from distill.models import build_model
from distill.models.hf_image import HF, preprocessing
from distill.modules.distiller import Supervised, supervised_options
from distill.registry import build
from distill.taps import logits_of
from distill.tasks.accuracy import describe, outputs_of
from distill.tasks.base import Shared, model_spec
from distill.train import TrainOptions, seed_everything, setup, shuffled
from distill.train.parallel import loading
from distill.weights import Start, load_fitting, mark_start, start_of

if TYPE_CHECKING:
    from distill.config import ClassifyConfig


@dataclass
class Experiment(Shared):
    """A classifier's experiment (a `Task`): the built pieces of a config that every stage shares."""

    cfg: ClassifyConfig
    data: data.ArrayData  # every sample, in the order a teacher cache indexes
    splits: data.DataSplits
    train_loader: DataLoader  # every training row: what a student learns from
    labelled_loader: DataLoader  # the rows that keep labels, as many batches an epoch: scratch's
    teacher_loader: DataLoader  # every row the data labels, with its label, as many batches an epoch
    val_loader: DataLoader  # picks: the best epoch, tuning
    test_loader: DataLoader  # reports: never seen by training or selection
    workers: int = 0  # the loaders' worker processes (data read from files has some by default)

    def net(self, field: str, weights: str | Path | None = None) -> nn.Module:
        return build_net(self, field, weights)

    def teacher_given(self) -> bool:
        """Pretrained (teacher.weights, hf:) and no teacher.epochs: used as it comes; with teacher.epochs it is
        fine-tuned here first (`stages.train_teacher`)."""
        teacher = self.cfg.teacher
        return teacher.epochs is None and (teacher.weights is not None or teacher.model.startswith(HF))

    def alone(self, model: nn.Module, *, label_smoothing: float = 0.0) -> nn.Module:
        return Supervised(model, label_smoothing=label_smoothing)

    def alone_options(self, options: TrainOptions, epochs: int) -> TrainOptions:
        return supervised_options(options, epochs)

    def summarize(self, runs: list[dict[str, nn.Module]], temperature: float | None) -> dict[str, Any]:
        """Accuracy, agreement, size and speed of each model, and the verdict on test (`diagnosis.py`)."""
        outputs = outputs_of(self, runs)
        summary = describe(self, runs, outputs)
        if "scratch" in outputs:
            labels = self.splits.val.labels, self.splits.test.labels
            summary["diagnosis"] = diagnose(outputs, *labels, temperature=temperature)
        return summary


def build_experiment(cfg: ClassifyConfig) -> Experiment:
    d = cfg.data
    loaded = load_data(cfg)
    splits = data.split(
        loaded,
        val_fraction=d.val_fraction,
        test_fraction=d.test_fraction,
        seed=d.seed,
        augment=d.augment,
        labelled_fraction=d.labelled_fraction,
        labelled_per_class=d.labelled_per_class,
    )
    workers = d.num_workers
    if workers is None:
        workers = 0 if isinstance(loaded.inputs, torch.Tensor) else data.workers()
    train_loader = shuffled(splits.train, d.batch_size, workers)

    def steps_of_train(part: data.IndexedDataset) -> DataLoader:
        """Batches of `part` drawn as many times an epoch as the student's, so every stage takes as many steps."""
        if len(part) == len(splits.train) and part.labels.equal(splits.train.labels):
            return train_loader  # the same rows and labels: the same batches
        return shuffled(part, d.batch_size, workers, draws=len(splits.train))

    def fixed(part: data.IndexedDataset) -> DataLoader:
        return DataLoader(part, batch_size=max(d.batch_size, 256), **loading(workers, persistent=False))

    labelled, teacher = steps_of_train(splits.labelled), steps_of_train(splits.teacher)
    loaders = train_loader, labelled, teacher, fixed(splits.val), fixed(splits.test)
    return Experiment(cfg, loaded, splits, *loaders, workers=workers)


IMAGE_KEYS = ("image_size", "crop_fraction", "channels", "normalize", "skip_bad")


def load_data(cfg: ClassifyConfig) -> data.ArrayData:
    """The config's data set; image files with the data keys of images and the teacher's pretrained
    preprocessing (its mean and std, its size)."""
    d = cfg.data
    images = {key: getattr(d, key) for key in IMAGE_KEYS if getattr(d, key) is not None}
    if images and not data.takes(d.name, "images"):
        raise ConfigError(f"data.{next(iter(images))} applies to image files (folder, manifest, hf); remove it")
    pretrained = preprocessing(cfg.teacher.model) if cfg.teacher is not None else None
    return data.load(
        d.name,
        images=data.ImageOptions(**images, pretrained=pretrained) if data.takes(d.name, "images") else None,
        path=d.train_path or d.path,
        input_column=d.input_column,
        label_column=d.label_column,
        unlabelled_path=d.unlabelled_path,
        val_path=d.val_path,
        test_path=d.test_path,
    )


def new_net(exp: Experiment, field: str) -> nn.Module:
    """A fresh network of the config group `field`, initialised from the global RNG as it stands."""
    spec = model_spec(exp.cfg, field)
    return build_model(
        spec.model, input_shape=exp.splits.input_shape, num_classes=exp.splits.num_classes, args=spec.args, field=field
    )


def build_net(exp: Experiment, field: str, weights: str | Path | None = None) -> nn.Module:
    """The network of the config group `field`, seeded with train.seed (so scratch and student start
    identical), with `weights` loaded when given: all but a final classifier made for another class count,
    which is left new. `weights.start_of(net)` says where it started. A teacher whose head is new must be
    fine-tuned: without teacher.epochs it is refused."""
    seed_everything(exp.cfg.train.seed)
    model = new_net(exp, field)
    start = start_of(model) or Start("random", (f"train.seed={exp.cfg.train.seed}",))
    classes = exp.splits.num_classes
    if weights is not None:
        new = load_fitting(model, weights)
        if new:
            exp.log("%s: %s made new for the data's %d classes; the rest loaded", field, ", ".join(new), classes)
        start = Start.of_file(weights, new_head=classes if new else None)
    # a teacher used as it comes (not one that online distillation trains anyway) must not teach from a new head
    given = field == "teacher" and "epochs" in exp.cfg.method.teacher_keys and exp.cfg.teacher.weights == weights
    if given and start.new_head and exp.cfg.teacher.epochs is None:
        raise ConfigError(
            f"teacher.epochs: the teacher's head is new for the data's {classes} classes; set teacher.epochs to "
            "fine-tune it"
        )
    return mark_start(model, start)


@torch.no_grad()
def check_outputs_match(exp: Experiment, nets: dict[str, nn.Module]) -> None:
    """One sample through each net (by config field) before any training: a class-count mismatch fails now,
    not hours later."""
    sample = exp.splits.train[0]["input"].unsqueeze(0)
    for field, net in nets.items():
        try:
            shape = tuple(logits_of(net.eval()(sample)).shape)
        except (RuntimeError, ValueError) as e:  # ValueError: a Hugging Face model refusing the image size
            raise DistillError(
                f"{field}.model cannot take the data's inputs of shape {exp.splits.input_shape} ({first_line(e)})"
            ) from e
        if shape != (1, exp.splits.num_classes):
            raise DistillError(
                f"{field}.model outputs shape {shape} for one sample, but the data has "
                f"{exp.splits.num_classes} classes; expected (1, {exp.splits.num_classes}); check {field}.args"
            )


def build_terms(
    exp: Experiment, specs: list[TermConfig], field: str, *, label_smoothing: float = 0.0
) -> list[nn.Module]:
    """Loss terms from their config entries; `field` names the list in error messages."""
    defaults = {
        "num_samples": exp.splits.num_samples,  # CRD's memory: one row per sample
        "train_rows": exp.splits.train.indices,  # and its negatives: training rows only
        "label_smoothing": label_smoothing,
    }
    terms = []
    for i, spec in enumerate(specs):
        where = f"{field}.{i}"
        try:
            loss = LOSSES.get(spec.loss)
        except ConfigError as e:
            raise ConfigError(f"{where}.loss: {e}") from e
        args = {**spec.options, "weight": spec.weight}
        if loss.kind == "features":
            if not (spec.student and spec.teacher):
                raise ConfigError(f"{where}: '{spec.loss}' is a feature loss: give student and teacher module paths")
            args.update(student_layer=spec.student, teacher_layer=spec.teacher)
        elif spec.student or spec.teacher:
            raise ConfigError(f"{where}: '{spec.loss}' works on logits; remove its student/teacher paths")
        terms.append(build(loss, spec.loss, args, where, defaults))
    return terms


def check_stage(exp: Experiment, make_module: Callable[[], nn.Module], field: str, options: TrainOptions) -> None:
    """One batch through a module built by `make_module` from copies of a stage's parts: tap paths, adapters,
    heads, the losses' view of their inputs and train.monitor fail now, not after a teacher has trained for
    hours. `field` names the config key a failure is reported under."""
    try:
        module = make_module()
        names = setup(module, next(iter(exp.val_loader)))
    except DistillError as e:
        raise DistillError(f"{field}: {e}") from e
    if options.monitor.partition("/")[2] not in names:  # val/accuracy -> accuracy
        raise ConfigError(
            f"train.monitor: '{options.monitor}' is not reported by {field}; it reports "
            f"{', '.join(f'val/{n}' for n in names)}"
        )
    for part in module.modules():
        if hasattr(part, "memory_bytes"):
            exp.log("%s memory bank: %.1f MB", LOSSES.name_of(part), part.memory_bytes() / 2**20)


def copies(*objects: Any) -> Any:
    """Deep copies of a stage's parts, for `check_stage`: the check must not freeze or size the real ones."""
    return copy.deepcopy(objects)
