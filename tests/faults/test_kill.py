"""Crash consistency: `distill train` and `distill cache` killed by SIGKILL, at random times and inside their
file writes, then resumed, end with exactly the files of an uninterrupted run, and refuse what they cannot trust.

The kills come from `_driver.py`, which runs the command in a child process with its write primitives wrapped.
The default run tries a handful of kill points; the sweep tries every write of a whole run and a set of random
times, and prints its figures:

    .venv/bin/python -m pytest tests/faults -m slow -s
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from conftest import TINY_RUN, write_config
from distill.cli import main
from distill.models import mlp
from distill.weights import save_weights

pytestmark = pytest.mark.e2e  # every test reads runs of `distill` in child processes, killed or whole

DRIVER = Path(__file__).with_name("_driver.py")
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # the same arithmetic in every run

# Teacher and student stages, 2 and 3 epochs of 22 steps, a metrics line every 5 steps: some 140 file writes.
TRAIN = ["--set", "scratch=false", "--set", "teacher.epochs=2", "--set", "train.epochs=3"]
TRAIN += ["--set", "data.batch_size=64", "--set", "train.log_every=5", "--set", "train.device=cpu"]
STAGES = ("teacher", "student")
SHARD_ROWS = 600  # three shards of the 1797 digits, two arrays each
CACHE = ["--set", "cache.features=[hidden1]", "--set", "train.device=cpu", "--set", f"cache.shard_rows={SHARD_ROWS}"]


# ----- running a command and killing it -----


@dataclass
class Outcome:
    """What a chain of kills and a final resume left."""

    kills: int = 0  # SIGKILLs that landed
    missed: list[int] = field(default_factory=list)  # planned kills the process finished before
    corruptions: list[str] = field(default_factory=list)  # damaged files a kill left where the product trusts them
    stuck: str | None = None  # the error of a resume that would not continue
    differences: list[str] = field(default_factory=list)  # how the finished files differ from the reference
    litter: list[str] = field(default_factory=list)  # temporary files and unnamed folders the finished run kept

    def problems(self) -> list[str]:
        stuck = [f"resume failed: {self.stuck}"] if self.stuck else []
        return self.corruptions + stuck + self.differences + [f"left behind: {path}" for path in self.litter]


def launch(where: Path, argv: list[str], kill: dict) -> tuple[int, str]:
    """Run `distill ARGV` through the driver in `where`; `kill` is a driver plan, or {"after_s": t} for a timer
    started once the imports are done. Returns the exit status (-9 when killed) and stderr."""
    plan = {key: value for key, value in kill.items() if key != "after_s"}
    ready = where / "driver-ready"
    ready.unlink(missing_ok=True)
    if "after_s" in kill:
        plan["ready"] = str(ready)
    with open(where / "stderr.txt", "w+") as err:
        child = subprocess.Popen(
            [sys.executable, str(DRIVER), json.dumps(plan), *argv],
            cwd=where,
            env=CHILD_ENV,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        if "after_s" in kill:
            while not ready.exists() and child.poll() is None:
                time.sleep(0.005)
            try:
                child.wait(timeout=kill["after_s"])
            except subprocess.TimeoutExpired:
                child.kill()
        code = child.wait(timeout=600)
        err.seek(0)
        return code, err.read()


def crash_then_finish(
    where: Path,
    argv: Callable[[], list[str]],
    kills: list[dict],
    damage: Callable[[], list[str]],
    plan: dict | None = None,
) -> Outcome:
    """Start the command once per kill, dying as each plan says, check what every kill left, then let a last
    resume finish. `plan` holds driver settings for every start."""
    outcome, plan = Outcome(), plan or {}
    for i, kill in enumerate(kills):
        code, err = launch(where, argv(), {**plan, **kill})
        if code == -signal.SIGKILL:
            outcome.kills += 1
            outcome.corruptions += damage()
        elif code == 0:
            outcome.missed.append(i)
        else:
            outcome.stuck = _last_line(err, code)
            return outcome
    code, err = launch(where, argv(), plan)
    if code != 0:
        outcome.stuck = _last_line(err, code)
    return outcome


def _last_line(err: str, code: int) -> str:
    lines = err.strip().splitlines()
    return f"exit {code}: {lines[-1] if lines else ''}"


def run_cases(cases: dict[str, list[dict]], play: Callable[[Path, list[dict]], Outcome], root: Path) -> dict:
    """Each case in a folder of its own, as many at once as there are cores."""
    folders = {label: root / f"case-{i:03d}" for i, label in enumerate(cases)}
    for folder in folders.values():
        folder.mkdir()
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        futures = {label: pool.submit(play, folders[label], kills) for label, kills in cases.items()}
        return {label: future.result() for label, future in futures.items()}


def write_event(events: list[list[str]], name: str, fragment: str, nth: int = 0) -> int:
    """The 1-based index of the `nth` event `name` whose target contains `fragment`."""
    hits = [i for i, (n, target) in enumerate(events, 1) if n == name and fragment in target]
    return hits[nth]


def kill_in(events: list[list[str]], index: int) -> dict:
    """A plan that dies inside write `index`: half its bytes on disk, or just after a rename or an fsync."""
    return {"kill_at": index, "how": "inside", "expect": events[index - 1][0]}


def figures(outcomes: dict[str, Outcome]) -> str:
    tried = [o for o in outcomes.values() if o.kills]
    identical = sum(not o.problems() for o in tried)
    corruptions = sum(len(o.corruptions) for o in outcomes.values())
    litter = sum(len(o.litter) for o in tried)
    lines = [
        f"{len(tried)} kill points ({sum(o.kills for o in tried)} kills), {identical} identical resumes, "
        f"{corruptions} corruptions accepted, {litter} leftover temporary files or folders"
    ]
    lines += [f"  {label}: {problem}" for label, o in outcomes.items() for problem in o.problems()]
    return "\n".join(lines)


# ----- what a kill may leave, and what a finished run must hold -----


def _tensor_differences(path: Path, reference: Path) -> list[str]:
    try:
        got, want = load_file(path), load_file(reference)
    except Exception as e:
        return [f"{path.name} cannot be read: {e}"]
    if got.keys() != want.keys():
        return [f"{path.name} holds {sorted(got)}, expected {sorted(want)}"]
    return [f"{path.name}: {key} differs" for key in want if not torch.equal(got[key], want[key])]


def _checkpoint_damage(folder: Path, pointer: dict) -> list[str]:
    """Problems of a checkpoint folder a pointer names: it must hold its files as their checksums say, readable,
    of its epoch."""
    where = f"{folder.parent.parent.name}/{folder.name}"
    if not folder.is_dir():
        return [f"{where} is named by a pointer but missing"]
    names = sorted(p.name for p in folder.iterdir())
    if names != ["model.safetensors", "sha256.json", "state.pt"]:
        return [f"{where} is named by a pointer but holds {names}"]
    checksums = json.loads((folder / "sha256.json").read_text())
    if checksums != {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in checksums}:
        return [f"{where} is named by a pointer but its files differ from their checksums"]
    try:
        with safe_open(folder / "model.safetensors", "pt") as f:
            metadata = f.metadata()
            for key in f.keys():  # noqa: SIM118 (safe_open is no dict)
                f.get_tensor(key)
        state = torch.load(folder / "state.pt", weights_only=True)
    except Exception as e:
        return [f"{where} is named by a pointer but cannot be read: {type(e).__name__}: {e}"]
    expected = (pointer["epoch"], pointer["step"])
    if (state["epoch"], state["step"]) != expected or metadata != {"epoch": str(expected[0]), "step": str(expected[1])}:
        return [f"{where} holds epoch {state['epoch']} step {state['step']}; its pointer says {expected}"]
    return []


def run_damage(run_dir: Path) -> list[str]:
    """Files of a run the product trusts as they are: checkpoints named by last.json or best.json, and the
    weights of finished stages (a resume skips a stage whose result exists)."""
    problems = []
    for checkpoints in sorted(run_dir.glob("*/checkpoints")):
        for which in ("last", "best"):
            pointer_file = checkpoints / f"{which}.json"
            if not pointer_file.exists():
                continue
            try:
                pointer = json.loads(pointer_file.read_text())
            except json.JSONDecodeError:
                problems.append(f"{pointer_file.parent.parent.name}/{pointer_file.name} is torn")
                continue
            problems += _checkpoint_damage(checkpoints / pointer["dir"], pointer)
    for result in sorted(run_dir.glob("*.safetensors")):
        try:
            load_file(result)
        except Exception as e:
            problems.append(f"{result.name} exists but cannot be read: {e}")
    return problems


def leftovers(run_dir: Path) -> list[str]:
    """Temporary files of interrupted writes, and checkpoint folders no pointer names: a resume removes them."""
    named = set()
    for checkpoints in run_dir.glob("*/checkpoints"):
        for which in ("last", "best"):
            if (checkpoints / f"{which}.json").exists():
                pointer = json.loads((checkpoints / f"{which}.json").read_text())
                named |= {checkpoints / pointer[key] for key in ("dir", "previous") if pointer.get(key)}
    stray = [*run_dir.rglob(".*.tmp"), *(p for p in run_dir.glob("*/checkpoints/epoch-*") if p not in named)]
    return sorted(str(p.relative_to(run_dir)) for p in stray)


def _records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def metrics_differences(path: Path, reference: Path) -> list[str]:
    """metrics.jsonl must log the reference run's steps, each once and in order, with its values."""
    where = f"{path.parent.name}/{path.name}"
    try:
        records = _records(path)
    except (OSError, json.JSONDecodeError) as e:
        return [f"{where} cannot be read: {e}"]
    want = _records(reference)
    steps = [r["step"] for r in records if "lr" in r]  # the log points (epoch records repeat their last step)
    want_steps = [r["step"] for r in want if "lr" in r]
    if steps != sorted(set(steps)):
        return [f"{where}: logged steps repeat or go back: {steps}"]
    if steps != want_steps:
        return [f"{where}: logged steps {steps}, expected {want_steps}"]
    if records != want:
        first = next(i for i, (a, b) in enumerate(zip(records, want, strict=False)) if a != b)
        return [f"{where}: record {first} differs from the uninterrupted run's"]
    return []


def run_differences(run_dir: Path, reference: Path) -> list[str]:
    """How a finished run differs from the uninterrupted one: weights, checkpoints, metrics, accuracy."""
    if not (run_dir / "summary.json").exists():
        return ["no summary.json: the run did not finish"]
    differences = run_damage(run_dir)
    for result in sorted(reference.glob("*.safetensors")):
        differences += _tensor_differences(run_dir / result.name, result)
    for stage in STAGES:
        differences += metrics_differences(run_dir / stage / "metrics.jsonl", reference / stage / "metrics.jsonl")
        for which in ("last", "best"):
            pointer = json.loads((run_dir / stage / "checkpoints" / f"{which}.json").read_text())
            if pointer != json.loads((reference / stage / "checkpoints" / f"{which}.json").read_text()):
                differences.append(f"{stage}/checkpoints/{which}.json is {pointer}")
                continue
            model = Path(stage, "checkpoints", pointer["dir"], "model.safetensors")
            differences += _tensor_differences(run_dir / model, reference / model)
    accuracy = {k: v["accuracy"] for k, v in json.loads((run_dir / "summary.json").read_text()).items() if k in STAGES}
    if accuracy != {k: json.loads((reference / "summary.json").read_text())[k]["accuracy"] for k in STAGES}:
        differences.append(f"summary.json accuracies {accuracy}")
    return differences


def cache_damage(cache: Path) -> list[str]:
    """A shard the manifest lists must be whole: the manifest is what `distill train` trusts."""
    if not (cache / "manifest.json").exists():
        return []
    try:
        manifest = json.loads((cache / "manifest.json").read_text())
    except json.JSONDecodeError:
        return ["manifest.json is torn"]
    problems = []
    for shard, entry in manifest["shards"].items():
        for name, checksum in entry["sha256"].items():
            file = cache / f"{name}-{int(shard):05d}.npy"
            if not file.is_file() or hashlib.sha256(file.read_bytes()).hexdigest() != checksum:
                problems.append(f"{file.name} is listed in the manifest but damaged")
    return problems


def cache_differences(cache: Path, reference: Path) -> list[str]:
    """The finished cache must hold the uninterrupted one's files, byte for byte, and nothing else."""
    names = sorted(p.name for p in cache.iterdir()) if cache.is_dir() else []
    want = sorted(p.name for p in reference.iterdir())
    if names != want:
        return [f"the cache holds {names}, expected {want}"]
    return [f"{name} differs" for name in want if (cache / name).read_bytes() != (reference / name).read_bytes()]


# ----- the two commands and their uninterrupted runs -----


@dataclass
class Reference:
    """An uninterrupted run: its folder, the write events in order, and the seconds of work after imports."""

    folder: Path
    events: list[list[str]]
    seconds: float


def _reference(where: Path, argv: list[str], plan: dict) -> Reference:
    code, err = launch(where, argv, {**plan, "trace": str(where / "trace.json")})
    assert code == 0, err
    trace = json.loads((where / "trace.json").read_text())
    return Reference(where, trace["events"], trace["seconds"])


def train_argv(where: Path) -> list[str]:
    argv = ["train", str(where / "run.yaml"), *TRAIN]
    # as after `--resume` answers "holds no run to resume": a kill before the run was recorded starts it afresh
    return [*argv, "--resume"] if (where / "runs" / "tiny" / "config.yaml").exists() else argv


def play_train(reference: Reference) -> Callable[[Path, list[dict]], Outcome]:
    def play(where: Path, kills: list[dict]) -> Outcome:
        write_config(where / "run.yaml", TINY_RUN.format(out="runs"))
        run_dir = where / "runs" / "tiny"
        outcome = crash_then_finish(where, lambda: train_argv(where), kills, lambda: run_damage(run_dir))
        if not outcome.stuck:
            outcome.differences = run_differences(run_dir, reference.folder / "runs" / "tiny")
            outcome.litter = leftovers(run_dir)
        return outcome

    return play


@pytest.fixture(scope="module")
def train_reference(tmp_path_factory) -> Reference:
    where = tmp_path_factory.mktemp("train-reference")
    write_config(where / "run.yaml", TINY_RUN.format(out="runs"))
    return _reference(where, train_argv(where), {})


def cache_text(teacher_weights: Path) -> str:
    return TINY_RUN.format(out="runs").replace(
        "teacher: {model: mlp, args: {hidden: [32]}}",
        f"teacher: {{model: mlp, args: {{hidden: [32]}}, weights: {teacher_weights}, cache: cache}}",
    )


def play_cache(reference: Reference) -> Callable[[Path, list[dict]], Outcome]:
    def play(where: Path, kills: list[dict]) -> Outcome:
        write_config(where / "run.yaml", (reference.folder / "run.yaml").read_text())
        argv = ["cache", str(where / "run.yaml"), *CACHE]  # every start resumes: there is no flag to choose
        outcome = crash_then_finish(where, lambda: argv, kills, lambda: cache_damage(where / "cache"))
        if not outcome.stuck:
            outcome.differences = cache_differences(where / "cache", reference.folder / "cache")
        return outcome

    return play


@pytest.fixture(scope="module")
def cache_reference(tmp_path_factory) -> Reference:
    where = tmp_path_factory.mktemp("cache-reference")
    torch.manual_seed(0)
    save_weights(mlp((1, 8, 8), 10, hidden=(32,)), where / "teacher.safetensors")
    write_config(where / "run.yaml", cache_text(where / "teacher.safetensors"))
    reference = _reference(where, ["cache", str(where / "run.yaml"), *CACHE], {"shard_rows": SHARD_ROWS})
    assert len(json.loads((where / "cache" / "manifest.json").read_text())["shards"]) == 3
    return reference


# ----- the default run: one kill at each kind of moment -----

TRAIN_POINTS = {
    "inside a checkpoint's state.pt": ("torch.save", "student/checkpoints/.epoch-0001.tmp/state.pt", 0),
    "between a checkpoint folder's rename and last.json": ("Path.rename", "student/checkpoints/.epoch-0001.tmp", 0),
    "inside a metrics line": ("MetricsLog.write", "student/metrics.jsonl", 8),
    "inside best.json": ("Path.write_text", "student/checkpoints/.best.json", 1),
    "inside the teacher's result": ("safetensors.save_model", ".teacher.safetensors", 0),
    "inside the run's first config.yaml": ("Path.write_text", "runs/tiny/.config.yaml", 0),
    "between the last epoch's last.json and best.json": ("os.replace", "student/checkpoints/last.json", -1),
}
RANDOM = "twice at random times"


def default_cases(reference: Reference, points: dict[str, tuple[str, str, int]]) -> dict[str, list[dict]]:
    """A kill inside each of `points`' writes, and two at random times in one chain."""
    events = reference.events
    cases = {point: [kill_in(events, write_event(events, *where))] for point, where in points.items()}
    rng = random.Random(0)
    cases[RANDOM] = [{"after_s": rng.uniform(0.1, 0.9) * reference.seconds} for _ in range(2)]
    return cases


@pytest.fixture(scope="module")
def train_outcomes(train_reference, tmp_path_factory) -> dict[str, Outcome]:
    """The default kill points of `distill train`, played side by side, each in a folder of its own."""
    cases = default_cases(train_reference, TRAIN_POINTS)
    return run_cases(cases, play_train(train_reference), tmp_path_factory.mktemp("train-kills"))


@pytest.mark.parametrize("point", [*TRAIN_POINTS, RANDOM])
def test_train_killed_resumes_exactly(train_outcomes, point):
    outcome = train_outcomes[point]
    assert outcome.kills == 1 if point != RANDOM else outcome.kills >= 1  # a timer may fire after the end
    assert outcome.problems() == []


CACHE_POINTS = {
    "inside a shard": ("numpy.save", "logits-00001", 0),
    "between a shard's two arrays": ("os.replace", "cache/logits-00001.npy", 0),
    "inside the manifest": ("Path.write_text", "cache/.manifest.json", 1),
}


@pytest.fixture(scope="module")
def cache_outcomes(cache_reference, tmp_path_factory) -> dict[str, Outcome]:
    cases = default_cases(cache_reference, CACHE_POINTS)
    return run_cases(cases, play_cache(cache_reference), tmp_path_factory.mktemp("cache-kills"))


@pytest.mark.parametrize("point", [*CACHE_POINTS, RANDOM])
def test_cache_killed_resumes_to_the_same_files(cache_outcomes, point):
    outcome = cache_outcomes[point]
    assert outcome.kills == 1 if point != RANDOM else outcome.kills >= 1  # a timer may fire after the end
    assert outcome.problems() == []


def test_the_checks_see_damage(train_reference, cache_reference, tmp_path):
    """The checks above can fail: a torn checkpoint, a repeated metrics line, other weights and a listed
    shard that was changed are all seen."""
    reference = train_reference.folder / "runs" / "tiny"
    run_dir = Path(shutil.copytree(reference, tmp_path / "tiny"))
    assert run_differences(run_dir, reference) == []
    pointer = json.loads((run_dir / "student" / "checkpoints" / "last.json").read_text())
    state = run_dir / "student" / "checkpoints" / pointer["dir"] / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    metrics = run_dir / "student" / "metrics.jsonl"
    lines = metrics.read_text().splitlines(keepends=True)
    metrics.write_text("".join(lines[:3] + lines[2:]))
    save_weights(mlp((1, 8, 8), 10, hidden=(8,)), run_dir / "student.safetensors")
    found = "\n".join(run_differences(run_dir, reference))
    assert "differ from their checksums" in found and "student/metrics.jsonl: logged steps repeat" in found
    assert "student.safetensors: fc.weight differs" in found
    cache = Path(shutil.copytree(cache_reference.folder / "cache", tmp_path / "cache"))
    assert cache_damage(cache) == [] and cache_differences(cache, cache_reference.folder / "cache") == []
    shard = cache / "logits-00002.npy"
    shard.write_bytes(shard.read_bytes()[:-1])
    assert cache_damage(cache) == ["logits-00002.npy is listed in the manifest but damaged"]


# ----- what cannot be trusted is refused: exit 2, one line -----


def assert_refused(code: int, err: str, fragment: str) -> None:
    """Exit 2 and one error line, no traceback (after a kill, a notice about the dead process's lock may precede
    it)."""
    lines = err.splitlines()
    assert code == 2, err
    assert lines[-1].startswith("distill: error: ") and all(line.startswith("distill: ") for line in lines), err
    assert sum(line.startswith("distill: error: ") for line in lines) == 1, err
    assert fragment in lines[-1], err


@pytest.mark.parametrize(
    ("file", "damage", "fragment"),
    [
        ("logits-00001.npy", "flip", "logits-00001.npy is missing or damaged"),
        ("logits-00002.npy", "truncate", "logits-00002.npy is missing or damaged"),
        ("feature.hidden1-00000.npy", "flip", "feature.hidden1-00000.npy is missing or damaged"),
        ("manifest.json", "truncate", "manifest.json is damaged"),
    ],
)
def test_a_damaged_cache_is_refused_when_training_reads_it(cache_reference, tmp_path, capsys, file, damage, fragment):
    cache = Path(shutil.copytree(cache_reference.folder / "cache", tmp_path / "cache"))
    data = bytearray((cache / file).read_bytes())
    if damage == "flip":
        data[-1] ^= 0x01  # the last byte: an array value, which parses fine
    else:
        del data[len(data) // 2 :]
    (cache / file).write_bytes(bytes(data))
    config = write_config(tmp_path / "run.yaml", (cache_reference.folder / "run.yaml").read_text())
    argv = ["train", str(config), "--set", f"teacher.cache={cache}", "--set", f"out_dir={tmp_path / 'runs'}"]
    code = main(argv)
    assert_refused(code, capsys.readouterr().err, fragment)
    assert not (tmp_path / "runs").exists()


@pytest.fixture(scope="module")
def interrupted_run(train_reference, tmp_path_factory) -> Path:
    """A run killed in the student's third epoch: its last checkpoint is the student's second."""
    where = tmp_path_factory.mktemp("interrupted")
    index = write_event(train_reference.events, "MetricsLog.write", "student/metrics.jsonl", 12)
    write_config(where / "run.yaml", TINY_RUN.format(out="runs"))
    code, err = launch(where, train_argv(where), {"kill_at": index, "how": "after"})
    assert code == -signal.SIGKILL, err
    assert json.loads((where / "runs" / "tiny" / "student" / "checkpoints" / "last.json").read_text())["epoch"] == 1
    return where


@pytest.mark.parametrize(
    ("file", "fragment"),
    [
        ("epoch-0001/state.pt", "state.pt changed on disk after it was written (checksum); the previous complete"),
        ("epoch-0001/model.safetensors", "model.safetensors changed on disk after it was written (checksum)"),
        ("last.json", "last.json is corrupt"),
    ],
)
def test_a_truncated_checkpoint_is_refused_on_resume(interrupted_run, tmp_path, capsys, monkeypatch, file, fragment):
    where = Path(shutil.copytree(interrupted_run, tmp_path / "run"))
    damaged = where / "runs" / "tiny" / "student" / "checkpoints" / file
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    monkeypatch.chdir(where)
    assert_refused(main(["train", "run.yaml", *TRAIN, "--resume"]), capsys.readouterr().err, fragment)


# ----- the sweep: every write of a whole run, and random times -----


def _sweep(reference: Reference, play, random_points: int, tmp_path: Path, capsys, title: str) -> None:
    cases = {
        f"write {i} ({name} {target})": [kill_in(reference.events, i)]
        for i, (name, target) in enumerate(reference.events, 1)
    }
    rng = random.Random(title)
    for k in range(random_points):  # each killed twice: the run, then its resume
        cases[f"random {k}"] = [{"after_s": rng.uniform(0.0, 1.0) * reference.seconds} for _ in range(2)]
    outcomes = run_cases(cases, play, tmp_path)
    report = f"{title}: {figures(outcomes)}"
    (tmp_path / "figures.txt").write_text(report + "\n")
    with capsys.disabled():
        print(f"\n{report}")
    assert not [label for label, o in outcomes.items() if label.startswith("write") and o.kills != 1]
    assert sum(bool(o.kills) for o in outcomes.values()) >= 30
    assert sum(len(o.corruptions) for o in outcomes.values()) == 0, report
    assert all(not o.problems() for o in outcomes.values()), report


@pytest.mark.slow
def test_sweep_train(train_reference, tmp_path, capsys):
    _sweep(train_reference, play_train(train_reference), 12, tmp_path, capsys, "distill train")


@pytest.mark.slow
def test_sweep_cache(cache_reference, tmp_path, capsys):
    _sweep(cache_reference, play_cache(cache_reference), 6, tmp_path, capsys, "distill cache")
