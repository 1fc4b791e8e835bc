"""What every export shares whatever the task: the run's own fields in each file's metadata, export.json, and
the way a file (or folder) that failed its parity check is kept aside."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from distill._io import _UMASK, write_json
from distill.errors import DistillError
from distill.pipeline import SavedRun

SHIP_BUDGET_S = 0.5  # seconds each timing figure of export and report may take: steadier than a run summary's


def run_fields(run: SavedRun) -> dict[str, str]:
    """The run's name, its config as the run saved it (what `distill eval` rebuilds the test split from) and
    that config's sha256, so a file can be traced to the run it came from."""
    config = (run.path / "config.yaml").read_text()
    return {"run": run.cfg.name, "config_sha256": hashlib.sha256(config.encode()).hexdigest(), "config": config}


def record(path: Path, results: dict[str, Any]) -> None:
    """export.json: the latest figures of every file exported so far."""
    recorded = json.loads(path.read_text()) if path.exists() else {}
    write_json(path, {**recorded, **results})


def keep_failed(tmp: Path, path: Path, problem: str) -> DistillError:
    """Move the export at `tmp` that failed its check aside as PATH.failed (a file or a folder, replacing an
    earlier one) and return the one line that says so."""
    failed = path.with_name(path.name + ".failed")
    if failed.is_dir():
        shutil.rmtree(failed)
    os.replace(tmp, failed)
    return DistillError(f"{path}: {problem}; kept as {failed.name} for a look, nothing else written")


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def readable(folder: Path) -> None:
    """Give `folder` and its files the modes open() and mkdir would (mkdtemp makes 0700; some writers 0600)."""
    folder.chmod(0o777 & ~_UMASK)
    for file in folder.rglob("*"):
        file.chmod((0o777 if file.is_dir() else 0o666) & ~_UMASK)
