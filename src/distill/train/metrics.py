"""metrics.jsonl: one JSON object per logged step and per epoch, with optional TensorBoard mirroring."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from distill._io import write_text
from distill.errors import DistillError


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
