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

from typing import ClassVar, Literal, Protocol

from torch import Tensor

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


def check_rank(loss: str, name: str, tensor: Tensor, ranks: tuple[int, ...]) -> None:
    """Refuse a tensor of the wrong rank with a message that names the loss, the input and the shapes."""
    if tensor.dim() not in ranks:
        expected = " or ".join(f"{r}-d" for r in ranks)
        raise ValueError(f"{loss}: {name} must be {expected}, got shape {tuple(tensor.shape)}")
