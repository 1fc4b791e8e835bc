"""Taps: named intermediate outputs of a model, and adapters that map a student's feature to a teacher's shape.

A tap path is one of:

    "layer3", "blocks.4.attn"     a submodule, captured with a forward hook (its output; the first element
                                  when it returns a tuple)
    "hidden_states.N"             entry N of a Hugging Face model's `output_hidden_states`
    "attentions.N"                entry N of its `output_attentions` (B, heads, S, S)
    "intermediates.N"             entry N of timm's `forward_intermediates`

The last three use what the model offers instead of hooks. Paths are checked when a Distiller is built,
so a typo fails at once with the closest real paths.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from distill._tensors import resize_to
from distill.errors import DistillError, first_line

MODEL_OUTPUTS = ("hidden_states", "attentions", "intermediates")
ADAPTERS = ("auto", "none", "linear", "conv1x1", "conv3x3")


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside DDP (`.module`) and `torch.compile` (`._orig_mod`) wrappers, whose paths users know."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def _is_output_path(path: str) -> bool:
    head, _, index = path.partition(".")
    return head in MODEL_OUTPUTS and index.isdigit()


def check_paths(model: nn.Module, paths: Sequence[str], role: str) -> None:
    """Fail now, listing close paths, when `model` has no module at one of `paths`."""
    model = unwrap(model)
    known = [name for name, _ in model.named_modules() if name]
    for path in paths:
        if _is_output_path(path):
            _check_model_output(model, path, role)
        elif path not in known:
            close = difflib.get_close_matches(path, known, n=3, cutoff=0.5)
            hint = f"; close: {', '.join(close)}" if close else f"; top-level modules: {', '.join(_top(model))}"
            raise DistillError(f"{role} has no module '{path}'{hint}")


def _top(model: nn.Module) -> list[str]:
    return [name for name, _ in model.named_children()]


def _check_model_output(model: nn.Module, path: str, role: str) -> None:
    if path.startswith("intermediates.") and not hasattr(model, "forward_intermediates"):
        raise DistillError(f"{role} tap '{path}' needs a timm model with forward_intermediates")
    if not path.startswith("intermediates.") and not hasattr(model, "config"):
        raise DistillError(f"{role} tap '{path}' needs a Hugging Face model (output_hidden_states/attentions)")


@contextmanager
def _hooks(model: nn.Module, paths: Mapping[str, str], store: dict[str, Tensor]) -> Iterator[None]:
    """Forward hooks that put the output of each module path into `store[name]`, removed on exit."""

    def capture(name: str):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            store[name] = output[0] if isinstance(output, (tuple, list)) else output

        return hook

    handles = [model.get_submodule(path).register_forward_hook(capture(name)) for name, path in paths.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


class Taps:
    """Named intermediate outputs of a model, captured by forward hooks while the block runs.

        with Taps(student, {"feat": "layer3"}) as s:
            logits = student(x)
        s["feat"]  # (B, C, H, W)

    Paths are checked at construction (a typo fails at once with close matches); hooks go on enter and
    come off on exit, even when the forward fails.
    """

    def __init__(self, model: nn.Module, paths: Mapping[str, str], role: str = "model"):
        self.model = unwrap(model)
        self.paths = dict(paths)
        check_paths(self.model, list(self.paths.values()), role)
        self.outputs: dict[str, Tensor] = {}
        self._scope = _hooks(self.model, self.paths, self.outputs)

    def __enter__(self) -> Taps:
        self._scope.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._scope.__exit__(*exc)

    def __getitem__(self, name: str) -> Tensor:
        return self.outputs[name]


def logits_of(output: object) -> Tensor:
    """A model's logits: the tensor itself, or the `.logits` of a Hugging Face output."""
    return output if isinstance(output, Tensor) else output.logits


def run_tapped(model: nn.Module, inputs: Tensor, paths: Sequence[str]) -> tuple[Tensor, dict[str, Tensor]]:
    """Run `model` on `inputs`; return its logits and the outputs at `paths`, by path."""
    if not paths:
        return logits_of(model(inputs)), {}
    inner = unwrap(model)
    offered = [p for p in paths if _is_output_path(p)]
    hooked = {p: p for p in paths if not _is_output_path(p)}
    features: dict[str, Tensor] = {}
    with _hooks(inner, hooked, features):
        if not offered:
            logits = logits_of(model(inputs))
        elif offered[0].startswith("intermediates."):
            logits = _run_timm(model, inputs, offered, features)
        else:
            logits = _run_hugging_face(model, inputs, offered, features)
    return logits, features


def _pick(outputs: Sequence[Tensor] | None, path: str) -> Tensor:
    head, _, index = path.partition(".")
    if outputs is None or int(index) >= len(outputs):
        count = 0 if outputs is None else len(outputs)
        raise DistillError(f"tap '{path}': the model returned {count} {head}; use an index below {count}")
    return outputs[int(index)]


def _run_hugging_face(model: nn.Module, inputs: Tensor, paths: Sequence[str], store: dict[str, Tensor]) -> Tensor:
    wants = {p.partition(".")[0] for p in paths}
    out = model(inputs, output_hidden_states="hidden_states" in wants, output_attentions="attentions" in wants)
    for path in paths:
        store[path] = _pick(getattr(out, path.partition(".")[0], None), path)
    return out.logits


def _run_timm(model: nn.Module, inputs: Tensor, paths: Sequence[str], store: dict[str, Tensor]) -> Tensor:
    if isinstance(model, nn.parallel.DistributedDataParallel):  # its gradient hooks live in its own forward
        raise DistillError("timm intermediates cannot be tapped through DistributedDataParallel; tap module paths")
    model = unwrap(model)
    indices = sorted({int(p.partition(".")[2]) for p in paths})
    try:
        final, intermediates = model.forward_intermediates(inputs, indices=indices)
    except (AssertionError, IndexError, ValueError) as e:  # timm checks the indices itself
        raise DistillError(f"taps {list(paths)}: the model refused intermediates {indices} ({first_line(e)})") from e
    for path in paths:
        store[path] = intermediates[indices.index(int(path.partition(".")[2]))]
    return model.forward_head(final)


# --- adapters ---------------------------------------------------------------------------------------------


class Resize(nn.Module):
    """Resize (B, C, H, W) maps to a fixed spatial size: average-pool down, bilinear up."""

    def __init__(self, size: tuple[int, int]):
        super().__init__()
        self.size = size

    def forward(self, x: Tensor) -> Tensor:
        return resize_to(x, self.size)


def make_adapter(kind: str, student_shape: torch.Size, teacher_shape: torch.Size, where: str) -> nn.Module:
    """A module mapping features of `student_shape` to `teacher_shape` (batch dimension first).

    kind: "none" (identity), "linear" (on the last dimension), "conv1x1" (1x1 conv + BN, with resize),
    "conv3x3" (the FitNets conv regressor: 3x3 conv + BN + ReLU, with resize), or "auto": identity when the
    shapes agree, else linear for (B, D) and (B, S, D) features and conv1x1 for (B, C, H, W) maps.
    """
    if kind not in ADAPTERS:
        raise DistillError(f"{where}: adapter '{kind}' is not one of {', '.join(ADAPTERS)}")
    if kind == "none" or (kind == "auto" and student_shape == teacher_shape):
        return nn.Identity()
    if kind == "auto":
        kind = "conv1x1" if len(student_shape) == 4 else "linear"
    rank_needed = {"linear": (2, 3), "conv1x1": (4,), "conv3x3": (4,)}[kind]
    if len(student_shape) != len(teacher_shape) or len(student_shape) not in rank_needed:
        raise DistillError(
            f"{where}: a {kind} adapter cannot map the student's {tuple(student_shape)} to the teacher's "
            f"{tuple(teacher_shape)}; tap layers of the same kind (both (B, C, H, W) or both (B, D)) or set adapter"
        )
    if kind == "linear":
        return nn.Linear(student_shape[-1], teacher_shape[-1])
    s_channels, t_channels, size = student_shape[1], teacher_shape[1], tuple(teacher_shape[-2:])
    if kind == "conv1x1":
        return nn.Sequential(Resize(size), nn.Conv2d(s_channels, t_channels, 1, bias=False), nn.BatchNorm2d(t_channels))
    return nn.Sequential(
        Resize(size), nn.Conv2d(s_channels, t_channels, 3, padding=1), nn.BatchNorm2d(t_channels), nn.ReLU()
    )
