"""metrics.jsonl: one JSON object per logged step and per epoch, with optional TensorBoard mirroring."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from distill._io import write_text
from distill.errors import DistillError, TrainingDiverged
from distill.train import parallel


class MetricsLog:
    """Appends records to `run_dir/metrics.jsonl`. On resume, drops records written after the checkpoint,
    so the file never holds a step twice."""

    def __init__(self, run_dir: Path | None, *, keep_until_step: int | None, tensorboard: bool):
        self.path = run_dir / "metrics.jsonl" if run_dir else None
        self._tb = _tensorboard_writer(run_dir) if tensorboard and run_dir else None
        if self.path is None:
            return
        kept = ""
        if keep_until_step is not None and self.path.exists():
            lines = self.path.read_text().splitlines(keepends=True)
            kept = "".join(line for line in lines if _step_of(line) <= keep_until_step)
        write_text(self.path, kept)

    def write(self, record: dict[str, Any]) -> None:
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if "/" in key and isinstance(value, (int, float)):
                    self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def _step_of(line: str) -> float:
    try:
        return json.loads(line)["step"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return float("inf")  # a torn last line from a crash: drop it


def _tensorboard_writer(run_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise DistillError(
            "train.tensorboard needs the tensorboard package: pip install 'distill[tensorboard]'"
        ) from None
    return SummaryWriter(str(run_dir / "tensorboard"))


class Window:
    """Running sums of a module's outputs on the device, read back only at log points (the one host sync)."""

    def __init__(self, device: torch.device):
        self.sums: dict[str, Tensor] = {}
        self.count = 0
        self.finite = torch.ones((), dtype=torch.bool, device=device)
        self.first_bad_step = torch.full((), -1, dtype=torch.long, device=device)

    def add(self, out: dict[str, Tensor], step: int, share: Tensor | float = 1.0) -> None:
        """A batch's values; `share` weighs this process's part of a global batch (see `_share`)."""
        for key, value in out.items():
            self.sums[key] = self.sums.get(key, 0.0) + value.detach().float() * share
        self.count += 1
        self.check(out["loss"].detach(), step)

    def check(self, value: Tensor, step: int) -> None:
        """Remember the first step at which `value` (a loss or a gradient norm) was NaN or infinite."""
        ok = torch.isfinite(value)
        self.first_bad_step = torch.where(~ok & self.finite, step, self.first_bad_step)
        self.finite &= ok

    def read(self, epoch: int) -> dict[str, float]:
        """The means since the last read, over every process (all of them read at the same steps): one reduction
        and one host sync."""
        values = [self.finite.logical_not(), *self.sums.values()]
        bad, *sums = parallel.all_sum(torch.stack([value.double() for value in values])).tolist()
        if bad > 0:
            step = self.first_bad_step.item()
            where = f"at step {step}" if step >= 0 else "in another process of the run"
            raise TrainingDiverged(
                f"the loss or its gradient became NaN or infinite {where} (epoch {epoch}); the last good checkpoint "
                "is kept; lower train.lr or set train.clip_grad_norm"
            )
        n = self.count * parallel.world()
        return {f"train/{key}": value / n for key, value in zip(self.sums, sums, strict=True)}
