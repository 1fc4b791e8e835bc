"""What a run reports on every model it trained: test and validation accuracy, agreement with the teacher, size
and speed; seeds averaged with their spread."""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader

from distill.diagnosis import Outputs
from distill.measure import SUMMARY_S, costs, where_measured
from distill.models import count_params
from distill.taps import logits_of
from distill.tasks.base import started_from
from distill.train import resolve_device

if TYPE_CHECKING:
    from distill.tasks.base import Task

ROLES = ("teacher", "assistant", "scratch", "student")  # summary.json always has these keys (null when absent)
SEEDED = ("scratch", "student")  # the rows trained once per seed; the others once per run


@torch.no_grad()
def logits_on(net: nn.Module, loader: DataLoader, device: torch.device) -> Tensor:
    """The (N, C) float32 logits of every sample of `loader`, in order, on the CPU."""
    net.eval().to(device)
    return torch.cat([logits_of(net(batch["input"].to(device))).float().cpu() for batch in loader])


def outputs_of(exp: Task, runs: list[dict[str, nn.Module]]) -> dict[str, list[Outputs]]:
    """Each model's outputs: one per seed for the seeded rows, one for the others, by row name."""
    device = resolve_device(exp.cfg.train.device)

    def outputs(net: nn.Module) -> Outputs:
        return Outputs(logits_on(net, exp.val_loader, device), logits_on(net, exp.test_loader, device))

    return {name: [outputs(run[name]) for run in (runs if name in SEEDED else runs[:1])] for name in runs[0]}


def describe(exp: Task, runs: list[dict[str, nn.Module]], outputs: dict[str, list[Outputs]]) -> dict[str, Any]:
    """One row per model: test accuracy (`accuracy`) and validation accuracy (`val_accuracy`), agreement with
    the teacher on test (None without a teacher), each the mean over `seeds` (with `accuracy_std` and
    `accuracies` when there are several), and params, bytes on disk, peak inference memory and CPU speed (on
    `measured_on`), and `started_from`: the weights it started from ("random (train.seed=0)", a file and its
    hash, "hf:FOLDER (pretrained; new head for 10 classes)", "fine-tuned from ... for 3 epochs"). `models`
    lists the rows in the order given. Test rows were never seen by training or selection."""
    test_labels, val_labels = exp.splits.test.labels, exp.splits.val.labels
    teacher = outputs["teacher"][0].test.argmax(-1) if "teacher" in outputs else None
    splits = exp.splits
    summary: dict[str, Any] = {
        "data": splits.description,
        "train_samples": len(splits.train),
        "labelled_samples": len(splits.labelled),  # what scratch learns from; the teacher, from `teacher_samples`
        "teacher_samples": len(splits.teacher),
        "test_samples": len(test_labels),
        "val_samples": len(val_labels),
        "models": list(runs[0]),
        "classes": splits.classes,
        "transform": None if splits.transform is None else splits.transform.to_dict(),  # image files' preprocessing
        "input_shape": list(splits.input_shape),
        "standardize": splits.stats,  # a table's per-feature mean and std, from the training split; else null
    }
    summary.update(dict.fromkeys(ROLES))
    for name, net in runs[0].items():
        tests = [(o.test.argmax(-1) == test_labels).float().mean().item() for o in outputs[name]]
        vals = [(o.val.argmax(-1) == val_labels).float().mean().item() for o in outputs[name]]
        agree = (
            None if teacher is None else [(o.test.argmax(-1) == teacher).float().mean().item() for o in outputs[name]]
        )
        summary[name] = {
            "accuracy": statistics.fmean(tests),
            "val_accuracy": statistics.fmean(vals),
            "agreement": None if agree is None else statistics.fmean(agree),
            "seeds": len(tests),
            **({"accuracy_std": statistics.stdev(tests), "accuracies": tests} if len(tests) > 1 else {}),
            "params": count_params(net),
            "size_bytes": (exp.run_dir / f"{name}.safetensors").stat().st_size,
            **costs(net, exp.splits.input_shape, quick_s=SUMMARY_S / len(runs[0])),
            "started_from": started_from([run[name] for run in (runs if name in SEEDED else runs[:1])]),
        }
    student = summary["student"]
    keys = ("params", "size_bytes", "peak_memory_bytes", "latency_ms", "latency_p95_ms", "throughput")
    summary["measured_on"] = where_measured()
    summary["ratios"] = {k: student[k] / summary["teacher"][k] for k in keys} if teacher is not None else None
    return summary
