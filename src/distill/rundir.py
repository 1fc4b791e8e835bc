"""A run's folder: made or continued only when it is safe, cleared of what a killed run left half-done, and
refused when a resume would mix two experiments."""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from distill._io import is_temporary, remove_temporaries, write_text
from distill._lock import FolderLock
from distill.config import Config, read_saved
from distill.errors import DistillError
from distill.train import Checkpoints, parallel

REPLACEABLE = ".replaceable"  # marks a run made with overwrite (the demo's): the next overwrite may replace it

# Keys that change how a run is carried out, not what it computes: they may differ on resume.
FREE_ON_RESUME = {
    "train.progress",
    "train.device",
    "train.tensorboard",
    "train.compile",
    "train.channels_last",
    "train.shard",
    "data.num_workers",
}


@contextlib.contextmanager
def opened(cfg: Config, *, resume: bool, overwrite: bool) -> Iterator[None]:
    """`cfg.run_dir`, locked and prepared (see `prepare`) for the length of the block by the process that
    writes; the others of a data-parallel run wait until it is ready, and only read. When it cannot be made
    ready (held by another run, a resume of something else), every process stops with the same line."""
    with contextlib.ExitStack() as held:
        refused = None
        if parallel.is_main():
            try:
                held.enter_context(FolderLock(cfg.run_dir))
                prepare(cfg, resume=resume, overwrite=overwrite)
            except (DistillError, OSError) as e:  # the folder is taken, or cannot be written
                refused = e
        reason = parallel.gathered(None if refused is None else str(refused))[0]  # the first process's
        if refused is not None:
            raise refused
        if reason is not None:
            raise DistillError(reason)
        yield


def prepare(
    cfg: Config,
    *,
    resume: bool,
    overwrite: bool,
    search: bool = False,
) -> None:
    """Make `cfg.run_dir` ready to train in, and write the resolved config there. We hold the folder's lock.
    A `search` (distill tune) resumes only with the same search space; a run, whatever its tune group."""
    run_dir, saved = cfg.run_dir, cfg.run_dir / "config.yaml"
    if run_dir.exists() and not run_dir.is_dir():
        raise DistillError(f"{run_dir} is a file; set out_dir or name to a folder")
    is_run = saved.exists()
    if overwrite and is_run and (run_dir / REPLACEABLE).exists():
        shutil.rmtree(run_dir)
        is_run = False
    if resume:
        if not is_run:
            raise DistillError(f"{run_dir} holds no run to resume; start it without --resume")
        _check_same_run(read_saved(saved), cfg, search=search)
    elif is_run and _has_progress(run_dir):
        raise DistillError(
            f"{run_dir} already holds a run; pass --resume to continue it, or set another name (--set name=...)"
        )
    elif run_dir.exists() and not is_run and any(not is_temporary(p) for p in run_dir.iterdir()):
        raise DistillError(f"{run_dir} holds other files; choose another name or out_dir")
    if run_dir.is_dir():  # ours, from here on
        _remove_leftovers(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:
        write_text(run_dir / REPLACEABLE, "made by `distill demo`, which replaces it when run again\n")
    write_text(saved, cfg.to_yaml())


def _has_progress(run_dir: Path) -> bool:
    """Whether a run got as far as a checkpoint or a finished stage (a failed start leaves neither)."""
    return any(run_dir.glob("*.safetensors")) or any(run_dir.glob("*/checkpoints/last.json"))


def _remove_leftovers(run_dir: Path) -> None:
    """What a killed run left half-done (we hold the lock: nothing else writes here): the temporary files
    and checkpoint folders of interrupted writes, and epoch folders an interrupted prune left unnamed."""
    remove_temporaries(run_dir)
    for pointer in run_dir.glob("*/checkpoints/last.json"):
        Checkpoints(pointer.parent).prune()


def _flat(cfg: Config) -> dict[str, Any]:
    """{"train.lr": 0.05, "name": "x", "method.kind": "offline", ...}"""
    flat = {}
    for group, value in cfg.model_dump(mode="json").items():
        if isinstance(value, dict):
            flat.update({f"{group}.{key}": v for key, v in value.items()})
        else:
            flat[group] = value
    return flat


def _check_same_run(before: Config, now: Config, *, search: bool) -> None:
    """Resuming with other settings would silently mix two experiments into one result."""
    old, new = _flat(before), _flat(now)
    for key in sorted(old.keys() | new.keys()):
        free = key in FREE_ON_RESUME or (key.startswith("tune.") and not search)
        if not free and old.get(key) != new.get(key):
            raise DistillError(
                f"--resume: {key} is {new.get(key)!r} but the run started with {old.get(key)!r}; "
                "resume with the same config"
            )


def saved_models(run_dir: Path, names: list[str]) -> list[str]:
    """Those of `names` that the run has saved as NAME.safetensors, in the order given."""
    return [name for name in names if (run_dir / f"{name}.safetensors").exists()]
