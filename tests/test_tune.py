"""distill tune: a search on the validation split that survives a kill, records failures and writes best.yaml."""

import os
import signal
import sqlite3
import subprocess
import sys
import time
from contextlib import closing

import pytest

from conftest import TINY_RUN, write_config
from distill import TrainingDiverged
from distill.cli import main
from distill.config import load_config

optuna = pytest.importorskip("optuna")


def study(run_dir):
    return optuna.load_study(study_name="distill", storage=f"sqlite:///{run_dir / 'study.db'}")


def _states_so_far(run_dir) -> list[str]:
    """The study's trial states, read from its database without writing to it: optuna's own loader would set
    up the schema, racing the search that is creating it."""
    database = run_dir / "study.db"
    if not database.exists():
        return []
    try:
        with closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=1)) as connection:
            return [state for (state,) in connection.execute("SELECT state FROM trials ORDER BY number")]
    except sqlite3.OperationalError:  # no trials table yet, or the file is locked for a moment
        return []


@pytest.mark.e2e
def test_a_search_killed_in_its_second_trial_resumes_without_rerunning_the_first(tmp_path):
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    command = [sys.executable, "-m", "distill", "-q", "tune", str(config), "--trials", "3", "--set", "train.epochs=6"]
    run_dir = tmp_path / "runs" / "tiny"
    search = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait for the second trial to be under way
        states = _states_so_far(run_dir)
        if len(states) == 2 and states[1] == "RUNNING":
            break
        assert search.poll() is None, search.stderr.read()
        time.sleep(0.05)
    os.kill(search.pid, signal.SIGKILL)
    search.wait()
    first = study(run_dir).trials[0]
    assert first.state.name == "COMPLETE"

    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    trials = study(run_dir).trials
    assert trials[0].datetime_start == first.datetime_start and trials[0].params == first.params  # kept, not rerun
    assert trials[1].state.name == "FAIL"  # the killed one; a new trial takes its place
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in trials) == 3 and len(trials) == 4
    assert (run_dir / "best.yaml").exists() and "best: trial" in done.stdout


@pytest.mark.e2e
def test_a_diverging_trial_is_recorded_and_the_search_goes_on(tmp_path, capsys, monkeypatch):
    import distill.tune.study

    calls = []

    def diverge_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:  # trial 1
            raise TrainingDiverged("the loss became NaN at step 3")
        return real_fit(*args, **kwargs)

    real_fit = distill.tune.study.fit
    monkeypatch.setattr(distill.tune.study, "fit", diverge_once)
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    assert main(["-q", "tune", str(config), "--trials", "3"]) == 0
    out = capsys.readouterr().out
    trials = study(tmp_path / "runs" / "tiny").trials
    assert [t.state.name for t in trials][:1] == ["FAIL"] and len(trials) == 3  # the failure counts as a trial
    assert trials[0].user_attrs["failed"].startswith("the loss became NaN")
    assert "fail" in out and "best: trial" in out


@pytest.mark.e2e
def test_best_yaml_trains_from_the_searched_teacher(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    assert main(["-q", "tune", str(config), "--trials", "2", "--set", "tune.losses=[kd]"]) == 0
    best = load_config(tmp_path / "runs" / "tiny" / "best.yaml")
    assert best.name == "tiny-best" and best.teacher.weights.endswith("teacher.safetensors")
    assert best.method.terms[0].loss == "kd" and 1.0 <= best.method.terms[0].options["temperature"] <= 8.0
    assert main(["-q", "train", str(tmp_path / "runs" / "tiny" / "best.yaml")]) == 0
    assert "diagnosis:" in capsys.readouterr().out


@pytest.mark.parametrize(
    "override, message",
    [
        ("tune.temperature=[4, 2]", "tune.temperature: the range [4.0, 2.0] is empty or inverted"),
        ("tune.lr=[0, 0.1]", "tune.lr: searched on a log scale, so its range must be > 0"),
        ("tune.losses=[]", "tune.losses: List should have at least 1 item"),
        ("tune.losses=[hint]", "tune.losses.0: Input should be 'kd', 'dkd' or 'dist'"),
        ("method={kind: self_distill, taps: [hidden1]}", "distill tune searches the terms of method.kind offline"),
    ],
)
def test_a_bad_search_is_one_line(tmp_path, capsys, override, message):
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    extra = ["--set", "teacher=null"] if "self_distill" in override else []
    assert main(["tune", str(config), "--trials", "2", "--set", override, *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


@pytest.mark.e2e
def test_a_study_of_another_config_is_refused(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    assert main(["-q", "tune", str(config), "--trials", "1", "--set", "tune.losses=[kd]"]) == 0
    before = (tmp_path / "runs" / "tiny" / "study.db").read_bytes()
    assert main(["tune", str(config), "--trials", "2", "--set", "tune.losses=[kd, dist]"]) == 2
    err = capsys.readouterr().err
    assert "--resume: tune.losses is ['kd', 'dist'] but the run started with ['kd']" in err and err.count("\n") == 1
    assert (tmp_path / "runs" / "tiny" / "study.db").read_bytes() == before


def test_without_optuna_the_command_names_the_extra(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now raises ImportError
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    assert main(["tune", str(config)]) == 2
    assert 'pip install -e ".[tune]"' in capsys.readouterr().err
