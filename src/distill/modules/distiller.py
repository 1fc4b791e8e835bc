"""The Distiller: a student, a frozen teacher and weighted loss terms, as one trainable module."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from distill._tensors import Batch, top1_accuracy
from distill.cache.logits import TeacherCache
from distill.errors import DistillError, first_line
from distill.losses import LOSSES, LossInputError, hard_loss
from distill.modules.teacher import LiveTeacher, teacher_source
from distill.taps import check_paths, logits_of, make_adapter, run_tapped
from distill.train import History, TrainOptions, fit, setup

RESERVED = {"loss", "accuracy", "teacher_accuracy", "agreement"}  # what forward reports besides the terms


def _term_names(terms: Sequence[nn.Module]) -> list[str]:
    """Registered names ('kd', 'hint', ...; else the class name); repeats get a suffix: 'hint', 'hint_2'."""
    names: list[str] = []
    for term in terms:
        base = LOSSES.name_of(term) or type(term).__name__.lower()
        if base in RESERVED:
            raise DistillError(f"a loss term may not be named '{base}': the Distiller reports that; rename the class")
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.append(name)
    return names


def _check_topk(terms: nn.ModuleDict, top_k: int | None) -> None:
    """A top-k cache rebuilds the teacher's distribution from k logits: only losses made for that may use it."""
    if top_k is None:
        return
    for name, term in terms.items():
        if term.kind == "logits" and not getattr(term, "accepts_topk", False):
            raise DistillError(
                f"loss term '{name}' needs the teacher's full distribution, but the cache keeps only its top {top_k} "
                "logits; make the cache with cache.top_k: null"
            )


def tap_paths(terms: Sequence[nn.Module]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The student's and the teacher's module paths that the feature terms read, each once, in order."""
    features = [term for term in terms if term.kind == "features"]
    student = tuple(dict.fromkeys(term.student_layer for term in features))
    teacher = tuple(dict.fromkeys(term.teacher_layer for term in features))
    return student, teacher


class Distiller(nn.Module):
    """Student + frozen teacher + weighted loss terms; `forward(batch)` returns the loss and its parts.

    Logit terms get `(student_logits, teacher_logits, labels)`; feature terms get the outputs tapped at
    their `student_layer` and `teacher_layer`, the student's passed through an adapter when the shapes
    differ (see `distill.losses._term`). The total is `sum(term.weight * term_value)`; each term's
    unweighted value is returned under its name, with `accuracy`, and in evaluation `teacher_accuracy`
    and `agreement` (student vs teacher top-1). The module's parameters and state dict are the student's,
    the adapters' and the terms' own: the teacher is held apart (see `LiveTeacher`). A `TeacherCache` in its
    place serves the stored outputs by the batch's "index" instead of running a teacher.

    Adapters are sized by a first forward without gradients (what `fit` does before it builds the
    optimizer); call `setup(batch)` before building an optimizer of your own.
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module | TeacherCache,
        terms: Sequence[nn.Module],
        *,
        teacher_dtype: torch.dtype = torch.float32,
        ignore_index: int = -100,
    ):
        super().__init__()
        if not terms:
            raise DistillError("a Distiller needs at least one loss term, e.g. losses.KD(temperature=4.0, alpha=0.5)")
        self.student = student
        self.terms = nn.ModuleDict(zip(_term_names(terms), terms, strict=True))
        self.adapters = nn.ModuleDict()
        self.student_taps, self.teacher_taps = tap_paths(terms)
        check_paths(student, self.student_taps, "student")
        self.teacher = teacher_source(teacher, dtype=teacher_dtype, taps=self.teacher_taps)
        _check_topk(self.terms, self.teacher.top_k)
        self.ignore_index = ignore_index

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        inputs, labels = batch["input"], batch["label"]
        # The teacher first (float32, no grad: live or from the cache; in evaluation, an unsharded live teacher's
        # outputs on a batch once a run): its activations are freed before the student's are made and kept for
        # backward: on a CPU the other order made a live epoch several percent slower (benchmarks/epoch_time.py).
        teacher_logits, teacher_features = self.teacher(batch, remember=not self.training)
        student_logits, student_features = run_tapped(self.student, inputs, self.student_taps)  # (B, C), {path: …}
        if student_logits.shape != teacher_logits.shape:
            raise DistillError(
                f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
                "differ in shape: the student must predict the same classes as the teacher"
            )
        parts = {}
        for name, term in self.terms.items():
            try:
                if term.kind == "logits":
                    parts[name] = term(student_logits, teacher_logits, labels)
                    continue
                teacher_feature = teacher_features[term.teacher_layer]
                student_feature = self._adapt(name, term, student_features[term.student_layer], teacher_feature)
                index = (batch["index"],) if term.needs_index else ()
                parts[name] = term(student_feature, teacher_feature, *index)
            except LossInputError as e:  # a loss refusing its inputs (rank, heads, sizes): a wrong tap or pair
                raise DistillError(f"loss term '{name}': {first_line(e)}") from e
        weighted = [
            value if self.terms[name].weight == 1.0 else self.terms[name].weight * value
            for name, value in parts.items()
        ]
        total = sum(weighted[1:], weighted[0])
        with torch.no_grad():
            parts["accuracy"] = top1_accuracy(student_logits, labels, self.ignore_index)
            if not self.training:  # the teacher's side is for evaluation; training steps stay lean
                parts["teacher_accuracy"] = top1_accuracy(teacher_logits, labels, self.ignore_index)
                parts["agreement"] = (student_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean()
        return {"loss": total, **parts}

    def _adapt(self, name: str, term: nn.Module, student_feature: Tensor, teacher_feature: Tensor) -> Tensor:
        if term.adapter == "none":
            return student_feature
        if name not in self.adapters:
            if self.training and torch.is_grad_enabled():
                raise DistillError("adapters are sized by a first forward: call setup(batch) before the optimizer")
            where = f"loss term '{name}' ({term.student_layer} -> {term.teacher_layer})"
            adapter = make_adapter(term.adapter, student_feature.shape, teacher_feature.shape, where)
            self.adapters[name] = adapter.to(student_feature.device)
        return self.adapters[name](student_feature)

    def shard_frozen(self, shard: Callable[[nn.Module], None]) -> None:
        """A live teacher's blocks sharded (train.shard); a cache has nothing to shard."""
        if isinstance(self.teacher, LiveTeacher):
            self.teacher.shard(shard)

    def setup(self, batch: Batch) -> list[str]:
        """One forward without gradients that sizes the adapters and lazy loss parameters (`distill.train.setup`);
        returns the names of what forward reports."""
        return setup(self, batch)

    def fit(
        self,
        train_loader: Iterable[Batch],
        val_loader: Iterable[Batch] | None = None,
        *,
        epochs: int,
        run_dir: str | None = None,
        **options: Any,
    ) -> History:
        """Train the student with `distill.train.fit`; `options` are `TrainOptions` fields (lr, optimizer...)."""
        return fit(self, train_loader, val_loader, TrainOptions(epochs=epochs, **options), run_dir=run_dir)


class Supervised(nn.Module):
    """A model trained on labels alone: the teacher stage and the `scratch` baseline of a run."""

    def __init__(self, model: nn.Module, *, label_smoothing: float = 0.0, ignore_index: int = -100):
        super().__init__()
        self.model = model
        self.label_smoothing, self.ignore_index = label_smoothing, ignore_index

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        logits = logits_of(self.model(batch["input"]))  # (B, C); a Hugging Face model's output holds them
        labels = batch["label"]
        loss = hard_loss(logits, labels, label_smoothing=self.label_smoothing, ignore_index=self.ignore_index)
        with torch.no_grad():
            accuracy = top1_accuracy(logits, labels, self.ignore_index)
        return {"loss": loss, "accuracy": accuracy}


def supervised_options(options: TrainOptions, epochs: int | None = None) -> TrainOptions:
    """`options` for a `Supervised` module, which reports only loss and accuracy: a monitor of anything else
    (a distillation term) becomes val/accuracy. `epochs` replaces the count when given."""
    update: dict[str, Any] = {} if epochs is None else {"epochs": epochs}
    if options.monitor not in ("val/loss", "val/accuracy"):
        update.update(monitor="val/accuracy", monitor_mode="auto")
    return options.model_copy(update=update)  # milestones were checked against the epochs where they were set
