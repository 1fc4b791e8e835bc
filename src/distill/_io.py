"""Atomic file writes: a reader sees the old file or the new one, never half of either."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from distill.errors import DistillError

_UMASK = os.umask(0)
os.umask(_UMASK)


def file_sha256(path: str | os.PathLike) -> str:
    """The SHA-256 of a file's bytes, read a megabyte at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def fsync_dir(directory: Path) -> None:
    """Make a rename inside `directory` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def is_temporary(path: Path) -> bool:
    """What a kill inside `atomic_path` (or a checkpoint folder written the same way) leaves: `.NAME.*.tmp`."""
    return path.name.startswith(".") and path.name.endswith(".tmp")


def remove_temporaries(folder: Path) -> None:
    """Delete every leftover of an interrupted write under `folder`. Only the folder's one writer (it holds
    the folder's lock) may call this: another process's write in progress looks the same."""
    for tmp in sorted(filter(is_temporary, folder.rglob(".*.tmp")), reverse=True):  # a folder's content first
        if tmp.is_dir():
            shutil.rmtree(tmp)
        else:
            tmp.unlink()


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any]) -> None:
    """Call `write(tmp_path)`, then move the finished file into place."""
    with atomic_path(path) as tmp:
        write(tmp)


def write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def existing(path: str | os.PathLike, expected: str, *, kind: Literal["file", "any"] = "any") -> Path:
    """`path` as the user wrote it (so messages show their spelling), or a DistillError naming it and what was
    `expected` there ("a CSV file with a header row"): it does not exist, or it is a folder where a file
    (`kind="file"`) was wanted."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DistillError(f"{p} does not exist; expected {expected}")
    if kind == "file" and not p.is_file():
        raise DistillError(f"{p} is a folder; give {expected} inside it")
    return p


def relative_paths(text: str) -> str:
    """`text` with every absolute path in it written relative to the working directory, as messages and tables
    show paths (a data set's description records the absolute one)."""
    return re.sub(r"(?<![\w.])/[^\s:+(),]+", lambda m: os.path.relpath(m.group(0)), text)
