"""Data-parallel runs: `torchrun --nproc-per-node 2 -m distill train` with gloo on the CPU trains what one process
trains, resumes at another world size, stops when a process dies, and `distill cache` in parallel writes the same
bytes as one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_RUN, tiny_net, write_config
from distill import Distiller, DistillError, losses
from distill.cli import main
from distill.train import EpochBatches, parallel
from distill.train.sharding import blocks

CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
RUN = ["--set", "scratch=false", "--set", "train.device=cpu", "--set", "teacher.epochs=2", "--set", "train.epochs=3"]


def torchrun(processes: int, *argv: str, cwd: Path, **popen) -> subprocess.Popen:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    return subprocess.Popen(
        [*command, "-m", "distill", *argv], cwd=cwd, env=CHILD_ENV, text=True, start_new_session=True, **popen
    )


def finished(process: subprocess.Popen, timeout: float = 240) -> tuple[int, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, (out or "") + (err or "")


def weights(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    return load_file(run_dir / f"{name}.safetensors")


def assert_close(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys()
    for key in want:
        assert (got[key] - want[key]).abs().max() <= 1e-5, key


def one_process_run(where: Path, *argv: str) -> Path:
    where.mkdir(exist_ok=True)
    config = write_config(where / "tiny.yaml", TINY_RUN.format(out="runs"))
    os.chdir(where)
    assert main(["train", str(config), *argv]) == 0
    return where / "runs" / "tiny"


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """The reference: the run in one process."""
    return one_process_run(tmp_path_factory.mktemp("one"), *RUN)


def kill_all(launcher: subprocess.Popen) -> None:
    """torchrun and the workers it started (in sessions of their own)."""
    for pid in [*workers(launcher.pid).values(), launcher.pid]:
        os.kill(pid, signal.SIGKILL)
    launcher.communicate()


# --- the batches ---------------------------------------------------------------------------------------------------


def test_epoch_batches_depend_on_seed_and_epoch_alone():
    batches = EpochBatches(10, 4)

    def epoch(seed: int, number: int) -> list[list[int]]:
        batches.seed_epoch(seed, number)
        return list(batches)

    assert epoch(0, 1) == epoch(0, 1) and epoch(0, 1) != epoch(0, 2) and epoch(0, 1) != epoch(1, 1)
    assert sorted(i for batch in epoch(3, 0) for i in batch) == list(range(10))
    assert [len(batch) for batch in epoch(0, 0)] == [4, 4, 2] and len(batches) == 3
    more = EpochBatches(4, 3, draws=10)  # a smaller part drawn as often as a larger one: whole permutations
    drawn = [i for batch in more for i in batch]
    assert len(drawn) == 10 and sorted(drawn[:4]) == sorted(drawn[4:8]) == [0, 1, 2, 3]


def test_each_process_takes_its_share_of_every_global_batch(monkeypatch):
    batches = EpochBatches(11, 4)
    batches.seed_epoch(0, 5)
    whole = list(batches)
    monkeypatch.setattr(parallel, "world", lambda: 3)
    shares = []
    for rank in range(3):
        monkeypatch.setattr(parallel, "rank", lambda rank=rank: rank)
        shares.append(list(batches))
    assert len(batches) == 3  # the last batch, 3 rows, one for each process
    for i, batch in enumerate(whole):
        assert [row for share in shares for row in share[i]] == batch
    one_short = EpochBatches(10, 4)  # a last batch of 2 rows cannot give each of 3 processes one: left out
    assert len(one_short) == 2 and len(list(one_short)) == 2


# --- torchrun ------------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_two_processes_train_what_one_trains(one_process, tmp_path):
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out="runs"))
    code, output = finished(
        torchrun(2, "train", str(config), *RUN, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    )
    assert code == 0, output
    run_dir = tmp_path / "runs" / "tiny"
    for name in ("teacher", "student"):
        assert_close(weights(run_dir, name), weights(one_process, name))
    assert output.count("test acc and agree:") == 1  # one process reports
    summary = json.loads((run_dir / "summary.json").read_text())
    reference = json.loads((one_process / "summary.json").read_text())
    assert summary["student"]["accuracy"] == reference["student"]["accuracy"]
    metrics = [json.loads(line) for line in (run_dir / "student" / "metrics.jsonl").read_text().splitlines()]
    want = [json.loads(line) for line in (one_process / "student" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in metrics] == [r["step"] for r in want]  # written once, by the first process
    assert metrics[-1]["val/accuracy"] == pytest.approx(want[-1]["val/accuracy"], abs=1e-6)
    assert metrics[-1]["train/loss"] == pytest.approx(want[-1]["train/loss"], rel=1e-5)


SHARD = ["--set", "train.shard=true"]


@pytest.mark.e2e
def test_a_sharded_run_trains_what_one_process_trains(one_process, tmp_path):
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out="runs"))
    code, output = finished(
        torchrun(2, "train", str(config), *RUN, *SHARD, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    )
    assert code == 0, output
    assert "sharded over 2 processes; each holds about" in output  # FSDP2, not a replica per process
    run_dir = tmp_path / "runs" / "tiny"
    for name in ("teacher", "student"):  # the distilled student's teacher was sharded too
        assert_close(weights(run_dir, name), weights(one_process, name))
    summary, reference = (json.loads((where / "summary.json").read_text()) for where in (run_dir, one_process))
    assert summary["student"]["accuracy"] == reference["student"]["accuracy"]


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, finished(process)[1]
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.05)


LONGER = [*RUN, "--set", "train.epochs=15"]  # time to stop a run in the middle


@pytest.mark.e2e
def test_a_two_process_run_resumes_in_one(tmp_path):
    reference = one_process_run(tmp_path / "one", *LONGER)
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out="runs"))
    process = torchrun(2, "train", str(config), *LONGER, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    checkpoints = tmp_path / "runs" / "tiny" / "student" / "checkpoints"
    _wait_for(checkpoints / "last.json", process)
    kill_all(process)
    assert not (tmp_path / "runs" / "tiny" / "summary.json").exists()
    os.chdir(tmp_path)
    assert main(["train", str(config), *LONGER, "--resume"]) == 0
    assert_close(weights(tmp_path / "runs" / "tiny", "student"), weights(reference, "student"))


@pytest.mark.e2e
def test_a_sharded_run_resumes_sharded_and_then_in_one_process(tmp_path):
    """Sharded checkpoints hold the whole state: they load into shards and into one process alike."""
    reference = one_process_run(tmp_path / "one", *LONGER)
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out="runs"))
    last = tmp_path / "runs" / "tiny" / "student" / "checkpoints" / "last.json"
    process = torchrun(
        2, "train", str(config), *LONGER, *SHARD, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _wait_for(last, process)
    kill_all(process)
    stopped_at = json.loads(last.read_text())["epoch"]
    process = torchrun(
        2,
        "train",
        str(config),
        *LONGER,
        *SHARD,
        "--resume",
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while process.poll() is None and json.loads(last.read_text())["epoch"] == stopped_at:
        assert time.monotonic() < deadline, "the sharded run did not resume"
        time.sleep(0.05)
    if process.poll() is None:  # stopped again, a few epochs on
        kill_all(process)
    else:
        assert process.returncode == 0, finished(process)[1]
    os.chdir(tmp_path)
    assert main(["train", str(config), *LONGER, "--resume"]) == 0
    assert_close(weights(tmp_path / "runs" / "tiny", "student"), weights(reference, "student"))


def workers(launcher: int) -> dict[int, int]:
    """The worker processes torchrun started, by rank: {rank: pid}."""
    found = {}
    for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
            parent = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        ranks = [int(line[5:]) for line in environ if line.startswith(b"RANK=")]
        if parent == launcher and ranks:
            found[ranks[0]] = pid
    return found


@pytest.mark.e2e
def test_when_a_process_dies_the_others_stop_and_the_checkpoints_stay_whole(tmp_path):
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out="runs"))
    run = [*LONGER, "--set", "train.log_every=1"]
    process = torchrun(2, "train", str(config), *run, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    student = tmp_path / "runs" / "tiny" / "student"
    _wait_for(student / "checkpoints" / "last.json", process)
    time.sleep(0.3)  # into the next epoch
    os.kill(workers(process.pid)[1], signal.SIGKILL)
    started = time.monotonic()
    code, output = finished(process, timeout=120)
    assert code != 0 and time.monotonic() - started < 60
    assert "rank: 1" in output and "Signal 9" in output, output  # torchrun names the process that died
    pointer = json.loads((student / "checkpoints" / "last.json").read_text())
    folder = student / "checkpoints" / pointer["dir"]
    checksums = json.loads((folder / "sha256.json").read_text())
    assert sorted(checksums) == ["model.safetensors", "state.pt"]
    os.chdir(tmp_path)
    assert main(["train", str(config), *run, "--resume"]) == 0  # and it continues


@pytest.mark.e2e
def test_a_batch_that_does_not_split_over_the_processes_is_refused(tmp_path):
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out="runs"))
    process = torchrun(3, "train", str(config), *RUN, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    code, output = finished(process)
    assert code != 0
    assert "distill: error: data.batch_size=128 cannot be split evenly over 3 processes" in output, output
    assert "exitcode  : 2" in output  # each process: a user's mistake
    assert not (tmp_path / "runs").exists()


def test_other_commands_say_they_run_in_one_process(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["report", str(tmp_path)]) == 2
    assert "distill report runs in one process: start it without torchrun" in capsys.readouterr().err


@pytest.mark.e2e
def test_a_parallel_cache_equals_one_process_cache_byte_for_byte(one_process, tmp_path):
    teacher = one_process / "teacher.safetensors"
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out="runs"))
    cached = [
        "--set",
        f"teacher.weights={teacher}",
        "--set",
        "train.device=cpu",
        "--set",
        "cache.features=[hidden1]",
        "--set",
        "cache.shard_rows=500",
    ]
    made = {}
    for processes in (1, 2):
        where = f"cache{processes}"
        argv = ["cache", str(config), *cached, "--set", f"teacher.cache={where}"]
        if processes == 1:
            os.chdir(tmp_path)
            assert main(argv) == 0
        else:
            code, output = finished(torchrun(2, *argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE))
            assert code == 0, output
        made[processes] = {p.name: p.read_bytes() for p in sorted((tmp_path / where).iterdir())}
    assert len(made[1]) > 3 and made[1] == made[2]


@pytest.mark.e2e
def test_a_folder_the_first_process_refuses_stops_every_process_with_its_line(tmp_path):
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out="runs"))
    (tmp_path / "runs" / "tiny").mkdir(parents=True)
    (tmp_path / "runs" / "tiny" / "notes.txt").write_text("mine")
    code, output = finished(
        torchrun(2, "train", str(config), *RUN, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    )
    assert code != 0 and output.count("runs/tiny holds other files; choose another name or out_dir") == 2, output
    assert "exitcode  : 2" in output and (tmp_path / "runs" / "tiny" / "notes.txt").read_text() == "mine"


def test_the_blocks_sharded_are_the_outermost_elements_of_containers_that_hold_parameters():
    block = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU())
    layers = torch.nn.ModuleList([block, torch.nn.Linear(2, 2), torch.nn.Dropout()])
    model = torch.nn.ModuleDict({"stem": torch.nn.Linear(2, 2), "layers": layers})
    assert blocks(model) == [block, layers[1]]  # not the Linear inside the block, nor what holds no parameters
    assert blocks(torch.nn.Linear(2, 2)) == []


@pytest.mark.e2e
def test_shard_in_one_process_trains_the_whole_module_and_says_so(tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    assert main(["train", str(config), *SHARD, "--set", "scratch=false", "--set", "train.epochs=1"]) == 0
    assert "train.shard: one process holds the whole module, unsharded (launch several with torchrun)" in (
        capsys.readouterr().err
    )


def test_shard_and_channels_last_are_refused_together(tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    assert main(["train", str(config), *SHARD, "--set", "train.channels_last=true"]) == 2
    assert "train.shard and train.channels_last cannot be combined" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_what_one_process_cannot_share_is_refused_with_several(monkeypatch):
    monkeypatch.setattr(parallel, "world", lambda: 2)
    crd = Distiller(tiny_net(), tiny_net(hidden=32), [losses.CRD("0", "0", num_samples=10, nce_k=4)])
    with pytest.raises(DistillError, match="CRD: its memory banks hold a row per training sample.*without torchrun"):
        parallel.check_module(crd)
    with pytest.raises(DistillError, match="train.device is cuda:1, one GPU for every process"):
        parallel.local_device(torch.device("cuda", 1))
    assert parallel.local_device(torch.device("cpu")) == torch.device("cpu")


LM_RUN = """\
task: lm
name: tiny-lm
out_dir: runs
data: {path: text.txt, context: 32, val_fraction: 0.1, test_fraction: 0.1, batch_size: 8}
teacher: {model: gpt, args: {layers: 2, heads: 2, width: 16}, epochs: 1}
student: {model: gpt, args: {layers: 1, heads: 1, width: 8}}
method: {kind: token, divergence: forward_kl, alpha: 0.2, hidden_weight: 0.5}
train: {epochs: 2, optimizer: sgd, lr: 0.5, grad_accum: 2, clip_grad_norm: 1.0, nonfinite: skip, progress: false,
        device: cpu}  # sgd: Adam would magnify rounding
scratch: false
"""


@pytest.mark.e2e
def test_a_language_model_run_on_two_processes_weighs_tokens_as_one_does(tmp_path):
    """Replicated and sharded (the teacher's blocks too, with a hidden-state term reading both models' heads), with
    accumulated batches, clipped gradient norms and the finite checks of nonfinite: skip."""
    text = "".join(f"line {i}: the quick brown fox jumps over the lazy dog {i * 7 % 13}\n" for i in range(120))
    runs = {}
    for how, argv in {"one": None, "replicated": [], "sharded": SHARD}.items():
        where = tmp_path / how
        where.mkdir()
        (where / "text.txt").write_text(text)
        write_config(where / "lm.yaml", LM_RUN)
        if argv is None:
            os.chdir(where)
            assert main(["train", "lm.yaml"]) == 0
        else:
            code, output = finished(
                torchrun(2, "train", "lm.yaml", *argv, cwd=where, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            )
            assert code == 0, output
        runs[how] = where / "runs" / "tiny-lm"
    for how in ("replicated", "sharded"):
        for name in ("teacher", "student"):
            assert_close(weights(runs[how], name), weights(runs["one"], name))
