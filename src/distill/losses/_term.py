"""What the Distiller needs to know of a loss term, beyond its math.

A term is an `nn.Module` whose `forward` takes tensors and returns a scalar. Two kinds:

    kind = "logits"    forward(student_logits, teacher_logits, labels)              (B, C) or (B, S, C)
    kind = "features"  forward(student_feat, teacher_feat)                          tapped intermediates
                       forward(student_feat, teacher_feat, index)  when needs_index sample indices (B,)

Every term has a `weight` (its factor in the total loss). A feature term also names the module paths to
tap, `student_layer` and `teacher_layer`, and the `adapter` that maps the student's feature to the
teacher's shape before the loss sees it: "none", "linear", "conv1x1", "conv3x3" or "auto" (none when the
shapes already agree, else linear for (B, D) features and a 1x1 convolution with resize for (B, C, H, W)).
"""

from __future__ import annotations

import math
from typing import ClassVar, Literal, Protocol

from torch import Tensor, nn

Adapter = Literal["auto", "none", "linear", "conv1x1", "conv3x3"]


class LogitTerm(Protocol):
    kind: ClassVar[Literal["logits"]]
    weight: float

    def __call__(self, student_logits: Tensor, teacher_logits: Tensor, labels: Tensor) -> Tensor: ...


class FeatureTerm(Protocol):
    kind: ClassVar[Literal["features"]]
    needs_index: ClassVar[bool]
    weight: float
    student_layer: str
    teacher_layer: str
    adapter: Adapter

    def __call__(self, student_feat: Tensor, teacher_feat: Tensor, *index: Tensor) -> Tensor: ...


class LossInputError(ValueError):
    """A loss refusing the tensors it was given (a rank, a size, a head count): the user tapped the wrong
    layer or paired the wrong models. The Distiller reports it as a user mistake naming the term; any other
    error raised inside a loss is a failure, not a configuration problem."""


def check_temperature(temperature: float) -> None:
    """A temperature must be a finite number > 0 (nan > 0 is false, but so is nan <= 0)."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature}")


def check_rank(loss: str, name: str, tensor: Tensor, ranks: tuple[int, ...]) -> None:
    """Refuse a tensor of the wrong rank with a message that names the loss, the input and the shapes."""
    if tensor.dim() not in ranks:
        expected = " or ".join(f"{r}-d" for r in ranks)
        raise LossInputError(f"{loss}: {name} must be {expected}, got shape {tuple(tensor.shape)}")


def check_pair(loss: str, student_feat: Tensor, teacher_feat: Tensor, ranks: tuple[int, ...]) -> None:
    """Refuse features of the wrong rank, or whose batch sizes differ, naming the loss."""
    check_rank(loss, "student_feat", student_feat, ranks)
    check_rank(loss, "teacher_feat", teacher_feat, ranks)
    if student_feat.shape[0] != teacher_feat.shape[0]:
        raise LossInputError(
            f"{loss}: student batch {student_feat.shape[0]} and teacher batch {teacher_feat.shape[0]} differ"
        )


class FeatureTermBase(nn.Module):
    """What every feature term holds besides its math: the layers to tap, its adapter and weight."""

    kind: ClassVar[str] = "features"
    needs_index: ClassVar[bool] = False
    default_adapter: ClassVar[Adapter] = "none"

    def __init__(self, student_layer: str, teacher_layer: str, *, weight: float = 1.0, adapter: Adapter | None = None):
        super().__init__()
        self.student_layer, self.teacher_layer = student_layer, teacher_layer
        self.weight, self.adapter = weight, adapter or self.default_adapter

    def extra_repr(self) -> str:
        return f"{self.student_layer!r} -> {self.teacher_layer!r}, adapter={self.adapter!r}"
