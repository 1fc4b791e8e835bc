"""Did distillation pay, and why not.

The verdict is read on the test split: the student's accuracy minus the student alone's (scratch), sample by
sample and averaged over seeds, with a paired bootstrap interval. The causes are read on the validation split,
each with the numbers it rests on, and each comes with what to try.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from distill.verdict import RESAMPLES, paired_verdict

CLEARLY_BETTER = 0.01  # a teacher within a point of the student alone has little to teach


@dataclass
class Outputs:
    """A model's (N, C) float32 logits on the validation and test splits, on the CPU."""

    val: Tensor
    test: Tensor


def _correct(outputs: list[Outputs], labels: Tensor, split: str) -> Tensor:
    """(S, N) 1.0 where seed s's model is right on sample n of `split`."""
    return torch.stack([(getattr(o, split).argmax(-1) == labels).float() for o in outputs])


def calibration_error(probs: Tensor, labels: Tensor, bins: int = 15) -> float:
    """Expected calibration error (Guo et al., 2017): the gap between confidence and accuracy, averaged over
    equal-width confidence bins weighted by their share of samples."""
    confidence, predicted = probs.max(-1)
    right = (predicted == labels).float()
    which = (confidence * bins).long().clamp(max=bins - 1)
    error = torch.zeros(())
    for b in which.unique():
        inside = which == b
        error += inside.float().mean() * (confidence[inside].mean() - right[inside].mean()).abs()
    return error.item()


def diagnose(
    outputs: dict[str, list[Outputs]], val_labels: Tensor, test_labels: Tensor, *, temperature: float | None
) -> dict[str, Any]:
    """The verdict on test (`helped`, `no_difference`, `negative_transfer`), its margin and interval, and the
    causes and suggestions read on validation. `outputs` holds "student" and "scratch" (one per seed) and,
    where there is one, "teacher"; `temperature` is the soft loss's, where the method has one."""
    differences = (
        _correct(outputs["student"], test_labels, "test") - _correct(outputs["scratch"], test_labels, "test")
    ).mean(0)
    decided = paired_verdict(differences)
    measured = _measurements(outputs, val_labels, temperature)
    causes = _causes(measured, temperature)
    suggestions = [suggestion for _, _, suggestion in causes]
    if decided["verdict"] == "negative_transfer":
        suggestions.append("more weight on the hard loss (raise alpha), so the labels outweigh the teacher")
    return {
        **decided,
        "method": f"paired bootstrap, {RESAMPLES} resamples of the {len(test_labels)} test samples, "
        f"{len(outputs['student'])} seed{'s' if len(outputs['student']) > 1 else ''} averaged per sample",
        "causes": [{"cause": cause, "detail": detail} for cause, detail, _ in causes],
        "suggestions": list(dict.fromkeys(suggestions)),
        "measurements": measured,
    }


def _accuracy(outputs: list[Outputs], labels: Tensor) -> float:
    return _correct(outputs, labels, "val").mean().item()


def _measurements(outputs: dict[str, list[Outputs]], labels: Tensor, temperature: float | None) -> dict[str, Any]:
    """What the causes are read from, on the validation split."""
    measured: dict[str, Any] = {
        "student_val_accuracy": _accuracy(outputs["student"], labels),
        "scratch_val_accuracy": _accuracy(outputs["scratch"], labels),
    }
    if "teacher" not in outputs:
        return measured
    teacher = outputs["teacher"][0].val  # (N, C)
    probs = teacher.softmax(-1)
    student = torch.stack([o.val for o in outputs["student"]])  # (S, N, C)
    kl = (probs * (probs.clamp_min(1e-12).log() - student.log_softmax(-1))).sum(-1).mean()
    measured.update(
        teacher_val_accuracy=_accuracy(outputs["teacher"], labels),
        teacher_mean_top_probability=probs.max(-1).values.mean().item(),
        teacher_ece=calibration_error(probs, labels),
        student_agreement=(student.argmax(-1) == teacher.argmax(-1)).float().mean().item(),
        student_kl_to_teacher=kl.item(),
        num_classes=teacher.shape[-1],
    )
    if temperature is not None:
        measured["soft_target_top_probability"] = (teacher / temperature).softmax(-1).max(-1).values.mean().item()
    return measured


def _causes(m: dict[str, Any], temperature: float | None) -> list[tuple[str, str, str]]:
    """(cause, detail with its numbers, suggestion) for each cause the measurements show."""
    if "teacher_val_accuracy" not in m:
        return []
    causes = []
    teacher, alone = m["teacher_val_accuracy"], m["scratch_val_accuracy"]
    if teacher < alone + CLEARLY_BETTER:
        causes.append(
            (
                "teacher_not_better",
                f"the teacher's validation accuracy {teacher:.2%} is not clearly above the student alone's {alone:.2%}",
                "a better teacher (train it longer or larger, or load stronger weights): a student learns only what "
                "the teacher knows",
            )
        )
    top, ece = m["teacher_mean_top_probability"], m["teacher_ece"]
    if ece > 0.05:
        causes.append(
            (
                "miscalibrated_teacher",
                f"the teacher's confidence does not match its accuracy: mean top probability {top:.3f}, "
                f"accuracy {teacher:.3f}, ECE {ece:.3f}",
                "a higher temperature, which softens an over-confident teacher's targets",
            )
        )
    if temperature is not None:
        soft, uniform = m["soft_target_top_probability"], 1 / m["num_classes"]
        if soft > 0.95:
            causes.append(
                (
                    "nearly_one_hot_targets",
                    f"at T = {temperature:g} the teacher's soft targets are nearly one-hot (mean top probability "
                    f"{soft:.3f}): little beyond the label to learn",
                    f"a higher temperature (for example T = {2 * temperature:g})",
                )
            )
        elif soft < 1.5 * uniform:
            causes.append(
                (
                    "nearly_uniform_targets",
                    f"at T = {temperature:g} the teacher's soft targets are nearly uniform (mean top probability "
                    f"{soft:.3f}, uniform {uniform:.3f})",
                    f"a lower temperature (for example T = {max(temperature / 2, 1):g})",
                )
            )
    agreement, kl, student = m["student_agreement"], m["student_kl_to_teacher"], m["student_val_accuracy"]
    if teacher - student > 0.03 and agreement < teacher - 0.02:  # it disagrees more often than the teacher errs
        causes.append(
            (
                "capacity_gap",
                f"the distilled student agrees with the teacher on {agreement:.1%} of validation samples (KL to it "
                f"{kl:.3f}) and trails it by {(teacher - student) * 100:.1f} points",
                "a teacher assistant between them (method.assistant), a larger student, or longer training",
            )
        )
    return causes
