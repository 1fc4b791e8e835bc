"""What a run reports on every model it trained: accuracy, agreement with the teacher, size and speed."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from distill.build import Experiment, model_spec
from distill.measure import speed
from distill.models import count_params, user_code
from distill.taps import logits_of
from distill.train import resolve_device

if TYPE_CHECKING:
    from distill.config import Config

ROLES = ("teacher", "assistant", "scratch", "student")  # summary.json always has these keys (null when absent)


@torch.no_grad()
def _predictions(net: nn.Module, loader: DataLoader, device: torch.device) -> torch.Tensor:
    """Top-1 class of every sample of `loader`, in order."""
    net.eval().to(device)
    return torch.cat([logits_of(net(batch["input"].to(device))).argmax(-1).cpu() for batch in loader])


def describe(exp: Experiment, nets: dict[str, nn.Module]) -> dict[str, Any]:
    """Accuracy, agreement with the teacher (None without one), params, bytes on disk and CPU speed of each
    trained net, one row each under its name; `models` lists them in the order given."""
    device = resolve_device(exp.cfg.train.device)
    predictions = {name: _predictions(net, exp.val_loader, device) for name, net in nets.items()}
    labels = exp.splits.val.labels
    teacher_preds = predictions.get("teacher")  # none in self-distillation: no agreement, no ratios
    summary: dict[str, Any] = {"data": exp.splits.description, "val_samples": len(labels), "models": list(nets)}
    summary.update(dict.fromkeys(ROLES))
    for name, preds in predictions.items():
        summary[name] = {
            "accuracy": (preds == labels).float().mean().item(),
            "agreement": None if teacher_preds is None else (preds == teacher_preds).float().mean().item(),
            "params": count_params(nets[name]),
            "size_bytes": (exp.run_dir / f"{name}.safetensors").stat().st_size,
            **speed(nets[name], exp.splits.input_shape),
        }
    teacher, student = summary["teacher"], summary["student"]
    keys = ("params", "size_bytes", "latency_ms", "throughput")
    summary["ratios"] = {k: student[k] / teacher[k] for k in keys} if teacher else None
    return summary


def code_that_ran(cfg: Config, fields: list[str]) -> list[dict[str, str]]:
    """The user modules that the `package.module:factory` models of the config groups `fields` imported:
    which config key, file, sha256. Nothing else in a run imports code: weights load without pickle, YAML is
    read safely."""
    ran = []
    for field in dict.fromkeys(fields):
        spec = model_spec(cfg, field)
        if spec is not None and (code := user_code(spec.model)) is not None:
            ran.append({"config": f"{field}.model", **code})
    return ran
