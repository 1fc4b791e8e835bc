"""One process at a time per run directory or cache: an advisory lock that dies with its holder.

The lock is a file beside the folder it guards (`runs/.NAME.lock`), held with `flock`, which the kernel
releases when the holder exits, however it exits. The file names its holder; a file found with a name in
it but no holder is a stale lock, left by a process that was killed: it is taken over, and said so.
"""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import time
from pathlib import Path

from distill.errors import DistillError

logger = logging.getLogger(__name__)


class FolderLock:
    """`with FolderLock(run_dir):` refuses to enter while another process holds `run_dir`."""

    def __init__(self, folder: str | Path):
        folder = Path(folder)
        self.folder = folder
        self.path = folder.parent / f".{folder.name}.lock"
        self.stale_holder: str | None = None  # who left a stale lock behind, when one was taken over
        self._fd: int | None = None
        self._made: list[Path] = []  # folders made to hold the lock file, deepest first

    def __enter__(self) -> FolderLock:
        parent = self.path.parent
        for folder in (parent, *parent.parents):
            if folder.exists() and not folder.is_dir():
                raise DistillError(f"{folder} is a file, not a folder; choose another place for {self.folder.name}")
        self._made = [folder for folder in (parent, *parent.parents) if not folder.exists()]
        parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 256).decode(errors="replace").strip() or "another process"
                os.close(fd)
                self._remove_made()
                raise DistillError(
                    f"{self.folder} is in use by another process ({holder}); wait for it to end, or choose another name"
                ) from None
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the holder removed the file as we opened it: lock the one there now
        left = os.read(fd, 256).decode(errors="replace").strip()
        if left:  # its holder never released it: killed, or its machine went down
            self.stale_holder = left
            logger.warning("taking over the stale lock on %s left by %s, which is no longer running", self.folder, left)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%H:%M:%S')}".encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        # removed while still held: a process that opened the old file sees it is gone and opens the new one
        self.path.unlink(missing_ok=True)
        os.close(self._fd)
        self._fd = None
        self._remove_made()

    def _remove_made(self) -> None:
        """A refused start leaves no folder behind; folders that now hold a run stay."""
        for folder in self._made:
            try:
                folder.rmdir()
            except OSError:  # not empty: it holds what the run wrote
                break


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False
