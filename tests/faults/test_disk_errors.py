"""A write that fails (a full disk, a read-only folder) stops the run in one line and loses nothing finished."""

import errno
import json
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from conftest import TINY_RUN, write_config
from distill.cli import main

FAULTS = {
    "ENOSPC": OSError(errno.ENOSPC, "No space left on device"),
    "EACCES": PermissionError(errno.EACCES, "Permission denied"),
}


def failing_on(call: int, fault: OSError):
    """A stand-in for a write function that does the real write until its `call`-th use, which raises."""

    def install(monkeypatch, target: str):
        module, _, name = target.rpartition(".")
        real = getattr(__import__(module, fromlist=[name]), name)
        calls = 0

        def write(*args, **kwargs):
            nonlocal calls
            calls += 1
            if calls == call:
                raise fault
            return real(*args, **kwargs)

        monkeypatch.setattr(target, write)

    return install


def tensors(path: Path) -> dict:
    return load_file(str(path))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run every faulted one must end equal to."""
    tmp = tmp_path_factory.mktemp("reference")
    config = write_config(tmp / "tiny.yaml", TINY_RUN.format(out=tmp / "runs") + "scratch: false\n")
    assert main(["train", str(config), "--set", "train.epochs=3"]) == 0
    return tmp / "runs" / "tiny"


@pytest.mark.e2e
@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize(
    "target, call",
    [
        ("distill.weights.save_model", 3),  # the teacher's last checkpoint
        ("torch.save", 5),  # the state file of the student's second checkpoint
        ("distill.stages.save_weights", 2),  # the student's result, after its last checkpoint
        ("distill.pipeline.write_json", 1),  # summary.json
    ],
)
def test_a_failed_write_stops_the_run_and_resume_finishes_it_identically(
    tmp_path, capsys, monkeypatch, reference, fault, target, call
):
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out=tmp_path / "runs") + "scratch: false\n")
    failing_on(call, FAULTS[fault])(monkeypatch, target)
    code = main(["train", str(config), "--set", "train.epochs=3"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("distill: error: ") and err.count("\n") == 1, err
    assert FAULTS[fault].strerror in err
    run_dir = tmp_path / "runs" / "tiny"
    assert not list(run_dir.rglob("*.tmp"))  # nothing half-written left behind
    for pointer in run_dir.glob("*/checkpoints/last.json"):  # every checkpoint still named is whole
        folder = pointer.parent / json.loads(pointer.read_text())["dir"]
        assert (folder / "state.pt").exists() and tensors(next(folder.glob("*.safetensors")))
    monkeypatch.undo()

    assert main(["train", str(config), "--set", "train.epochs=3", "--resume"]) == 0
    for name in ("teacher", "student"):
        got, want = tensors(run_dir / f"{name}.safetensors"), tensors(reference / f"{name}.safetensors")
        assert got.keys() == want.keys() and all((got[k] == want[k]).all() for k in got)


def test_a_run_directory_that_cannot_be_made_is_one_line(tmp_path, capsys, monkeypatch):
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if self.name == "runs":
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)
    code = main(["train", str(config)])
    err = capsys.readouterr().err
    assert code == 2 and err == f"distill: error: Permission denied: {tmp_path / 'runs'}\n"
    assert not (tmp_path / "runs").exists()


LIMITED = """
import resource, sys
from distill.cli import main
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), resource.RLIM_INFINITY))  # writes past it: EFBIG
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.e2e
@pytest.mark.parametrize("limit", [5_000, 12_000])  # inside the first checkpoint's weights; its state
def test_a_real_failed_write_is_one_line_and_resume_finishes(tmp_path, reference, limit):
    """No stand-in this time: the kernel refuses the write (a file size limit, as a full disk would)."""
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out=tmp_path / "runs") + "scratch: false\n")
    argv = ["train", str(config), "--set", "train.epochs=3"]
    limited = subprocess.run([sys.executable, "-c", LIMITED, str(limit), *argv], capture_output=True, text=True)
    assert limited.returncode == 2 and limited.stderr.count("\n") == 1, limited.stderr
    assert limited.stderr.startswith("distill: error: ") and "File too large" in limited.stderr
    run_dir = tmp_path / "runs" / "tiny"
    assert not list(run_dir.rglob("*.tmp"))
    assert main([*argv, "--resume"]) == 0
    for name in ("teacher", "student"):
        got, want = tensors(run_dir / f"{name}.safetensors"), tensors(reference / f"{name}.safetensors")
        assert all((got[k] == want[k]).all() for k in want)


@pytest.mark.e2e
def test_a_cache_write_that_fails_is_one_line_naming_the_shard(tmp_path, reference):
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    teacher, folder = reference / "teacher.safetensors", tmp_path / "c"
    cache = ["--set", f"teacher.weights={teacher}", "--set", f"teacher.cache={folder}"]
    limited = subprocess.run(
        [sys.executable, "-c", LIMITED, "20000", "cache", str(config), *cache], capture_output=True, text=True
    )
    assert limited.returncode == 2 and limited.stderr.count("\n") == 1, limited.stderr
    assert f"cannot write {folder / 'logits-00000.npy'}: " in limited.stderr and "is the disk full" in limited.stderr
    assert main(["cache", str(config), *cache]) == 0  # the same command continues
