"""The Distiller: a student, a frozen teacher and weighted loss terms, as one trainable module."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.errors import DistillError
from distill.teacher import LiveTeacher

if TYPE_CHECKING:
    from distill.train import History

Batch = dict[str, Tensor]


def _accuracy(logits: Tensor, labels: Tensor, ignore_index: int) -> Tensor:
    """Top-1 accuracy over labelled samples, as a 0-dim tensor (no host sync)."""
    labelled = labels != ignore_index
    correct = (logits.argmax(-1) == labels) & labelled
    return correct.sum() / labelled.sum().clamp(min=1)


def _term_names(terms: Sequence[nn.Module]) -> list[str]:
    """'kd', 'hint', ... from the class names; repeats get a suffix: 'hint', 'hint_2'."""
    names: list[str] = []
    for term in terms:
        base = type(term).__name__.lower()
        name, k = base, 1
        while name in names:
            k += 1
            name = f"{base}_{k}"
        names.append(name)
    return names


class Distiller(nn.Module):
    """Student + frozen teacher + weighted loss terms; `forward(batch)` returns the loss and its parts.

    Each term is called as `term(student_logits, teacher_logits, labels)`. The total is
    `sum(weight_i * term_i)`; each term's unweighted value is returned under its name, with
    `accuracy` (student vs labels) and `agreement` (student vs teacher top-1) for monitoring.
    The module's parameters, state dict and `.to()` are the student's and the terms': the teacher
    is held apart (see `LiveTeacher`).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        terms: Sequence[nn.Module],
        weights: Sequence[float] | None = None,
        *,
        teacher_dtype: torch.dtype = torch.float32,
        ignore_index: int = -100,
    ):
        super().__init__()
        if not terms:
            raise DistillError("a Distiller needs at least one loss term, e.g. losses.KD(temperature=4.0, alpha=0.5)")
        weights = [1.0] * len(terms) if weights is None else [float(w) for w in weights]
        if len(weights) != len(terms):
            raise DistillError(f"got {len(terms)} loss terms but {len(weights)} weights")
        self.student = student
        self.teacher = LiveTeacher(teacher, dtype=teacher_dtype)
        self.terms = nn.ModuleDict(zip(_term_names(terms), terms, strict=True))
        self.weights = dict(zip(self.terms, weights, strict=True))
        self.ignore_index = ignore_index

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        inputs, labels = batch["input"], batch["label"]
        student_logits = self.student(inputs)  # (B, C)
        teacher_logits = self.teacher(inputs)  # (B, C), float32, no grad
        if student_logits.shape != teacher_logits.shape:
            raise DistillError(
                f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
                "differ in shape: the student must predict the same classes as the teacher"
            )
        parts = {name: term(student_logits, teacher_logits, labels) for name, term in self.terms.items()}
        total = sum(self.weights[name] * value for name, value in parts.items())
        with torch.no_grad():
            parts["accuracy"] = _accuracy(student_logits, labels, self.ignore_index)
            parts["teacher_accuracy"] = _accuracy(teacher_logits, labels, self.ignore_index)
            parts["agreement"] = (student_logits.argmax(-1) == teacher_logits.argmax(-1)).float().mean()
        return {"loss": total, **parts}

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
        from distill.train import TrainOptions, fit

        return fit(self, train_loader, val_loader, TrainOptions(epochs=epochs, **options), run_dir=run_dir)


class Supervised(nn.Module):
    """A model trained on labels alone: the teacher stage and the `scratch` baseline of a run."""

    def __init__(self, model: nn.Module, *, label_smoothing: float = 0.0, ignore_index: int = -100):
        super().__init__()
        self.model = model
        self.label_smoothing, self.ignore_index = label_smoothing, ignore_index

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        logits = self.model(batch["input"])
        labels = batch["label"]
        loss = F.cross_entropy(logits, labels, ignore_index=self.ignore_index, label_smoothing=self.label_smoothing)
        with torch.no_grad():
            accuracy = _accuracy(logits, labels, self.ignore_index)
        return {"loss": loss, "accuracy": accuracy}
