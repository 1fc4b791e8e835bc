"""Two processes pointed at one run directory or cache: the second is refused; a dead holder's lock is taken over."""

import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import TINY_RUN, write_config
from distill import DistillError
from distill._lock import FolderLock
from distill.cli import main

HOLD = textwrap.dedent(
    """
    import os, signal, sys, time
    from distill._lock import FolderLock
    lock = FolderLock(sys.argv[1]).__enter__()
    print("held", flush=True)
    if sys.argv[2] == "die":
        os.kill(os.getpid(), signal.SIGKILL)  # killed while holding it: no chance to clean up
    time.sleep(60)
    """
)


def hold_lock(folder, then: str) -> subprocess.Popen:
    """A process that takes the lock on `folder`, then sleeps ("sleep") or is killed at once ("die")."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, str(folder), then], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline() == "held\n"
    return child


@pytest.mark.e2e
def test_a_second_run_on_the_same_directory_is_refused(tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    holder = hold_lock(tmp_path / "runs" / "tiny", "sleep")
    try:
        code = main(["train", str(config)])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert f"runs/tiny is in use by another process (pid {holder.pid} on " in err
        assert not (tmp_path / "runs" / "tiny").exists()  # refused before writing anything
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", str(config)]) == 0  # the kernel released the lock with its holder
    assert not (tmp_path / "runs" / ".tiny.lock").exists()  # a finished run removes its lock file


@pytest.mark.e2e
def test_a_stale_lock_from_a_killed_process_is_taken_over(tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    dead = hold_lock(tmp_path / "runs" / "tiny", "die")
    assert dead.wait() == -signal.SIGKILL
    assert f"pid {dead.pid} on" in (tmp_path / "runs" / ".tiny.lock").read_text()  # left behind
    assert main(["train", str(config)]) == 0
    err = capsys.readouterr().err
    assert f"taking over the stale lock on {tmp_path / 'runs' / 'tiny'} left by pid {dead.pid}" in err


@pytest.mark.e2e
def test_distill_cache_takes_the_lock_of_its_folder(tmp_path, capsys):
    weights = tmp_path / "teacher.safetensors"
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    assert main(["train", str(config), "--set", "scratch=false"]) == 0
    (tmp_path / "runs" / "tiny" / "teacher.safetensors").rename(weights)
    holder = hold_lock(tmp_path / "cache", "sleep")
    try:
        code = main(
            [
                "cache",
                str(config),
                "--set",
                f"teacher.weights={weights}",
                "--set",
                f"teacher.cache={tmp_path / 'cache'}",
            ]
        )
        err = capsys.readouterr().err
        assert code == 2 and "cache is in use by another process" in err, err
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_is_held_only_inside_its_block(tmp_path):
    folder = tmp_path / "run"
    with FolderLock(folder) as lock:
        assert lock.path.exists() and str(os.getpid()) in lock.path.read_text()
        with pytest.raises(DistillError, match="in use by another process"):
            # flock locks belong to open files: a second open file in the same process is refused too
            FolderLock(folder).__enter__()
    assert not lock.path.exists()
    with FolderLock(folder) as again:
        assert again.stale_holder is None
