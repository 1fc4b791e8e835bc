"""distill tune on a language model: the token divergence, temperature, alpha and lr searched on the student's
validation loss per token (lower is better), in the same study, folder and best.yaml as a classifier's."""

from __future__ import annotations

import math

import pytest

from conftest import write_config
from distill.cli import main
from distill.config import load_config

optuna = pytest.importorskip("optuna")

TEXT = "the quick brown fox jumps over the lazy dog. a stitch in time saves nine. " * 60  # 4.4 KB

LM_TUNE = """\
task: lm
name: x
out_dir: {out}
data: {{path: {data}, tokenizer: char, context: 32, val_fraction: 0.1, test_fraction: 0.1, batch_size: 8}}
teacher: {{model: gpt, args: {{layers: 1, heads: 2, width: 16}}, epochs: 1}}
student: {{model: gpt, args: {{layers: 1, heads: 1, width: 8}}}}
method: {{kind: token, alpha: 0.5}}
train: {{epochs: 1, optimizer: adamw, lr: 0.003, progress: false}}
"""


@pytest.fixture
def lm_config(tmp_path):
    (tmp_path / "text.txt").write_text(TEXT)
    return write_config(tmp_path / "lm.yaml", LM_TUNE.format(out=tmp_path / "runs", data=tmp_path / "text.txt"))


def study(run_dir):
    return optuna.load_study(study_name="distill", storage=f"sqlite:///{run_dir / 'study.db'}")


@pytest.mark.e2e
def test_best_yaml_holds_the_best_trial_and_trains(tmp_path, lm_config, capsys):
    assert main(["-q", "tune", str(lm_config), "--trials", "3"]) == 0
    out = capsys.readouterr().out
    run_dir = tmp_path / "runs" / "x"
    searched = study(run_dir)
    assert searched.direction.name == "MINIMIZE" and len(searched.trials) == 3
    best = searched.best_trial
    assert best.value == min(t.value for t in searched.trials if t.state.name == "COMPLETE")
    assert "validation loss per token" in out and "val loss (ppl)" in out and f"best: trial {best.number + 1}" in out
    assert f"({math.exp(best.value):.2f})" in out  # the perplexity beside the loss

    chosen = load_config(run_dir / "best.yaml")
    assert chosen.name == "x-best" and chosen.teacher.weights.endswith("teacher.safetensors")
    assert chosen.teacher.epochs is None
    assert chosen.method.divergence == best.params["divergence"]
    assert chosen.method.temperature == best.params["temperature"] and 0.5 <= chosen.method.temperature <= 4.0
    assert chosen.method.alpha == best.params["alpha"] and chosen.train.lr == best.params["lr"]
    assert 0.001 <= chosen.train.lr <= 0.009  # train.lr / 3 to train.lr * 3

    assert main(["-q", "train", str(run_dir / "best.yaml")]) == 0
    assert "student (distilled)" in capsys.readouterr().out
    assert (tmp_path / "runs" / "x-best" / "student.safetensors").exists()


@pytest.mark.e2e
def test_a_longer_search_adds_trials_and_trains_the_teacher_once(tmp_path, lm_config, capsys):
    assert main(["-q", "tune", str(lm_config), "--trials", "1"]) == 0
    run_dir = tmp_path / "runs" / "x"
    teacher, scratch = (run_dir / f"{name}.safetensors" for name in ("teacher", "scratch"))
    made = teacher.stat().st_mtime_ns, scratch.stat().st_mtime_ns
    assert main(["-q", "tune", str(lm_config), "--trials", "2"]) == 0
    assert len(study(run_dir).trials) == 2
    assert (teacher.stat().st_mtime_ns, scratch.stat().st_mtime_ns) == made  # loaded, not trained again
    assert "2 trials" in capsys.readouterr().out


@pytest.mark.parametrize(
    "override, message",
    [
        ("tune.temperature=[2, 2]", "tune.temperature: the range [2.0, 2.0] is empty or inverted"),
        ("tune.alpha=[0.5, 1.5]", "tune.alpha: must lie in [0, 1]"),
        ("tune.lr=[0, 0.01]", "tune.lr: searched on a log scale, so its range must be > 0"),
        ("tune.divergences=[]", "tune.divergences: List should have at least 1 item"),
        ("tune.divergences=[kl]", "tune.divergences.0: Input should be"),
        (
            "method={kind: on_policy, max_new_tokens: 8}",
            "distill tune searches method.kind token (off-policy), not on_policy",
        ),
    ],
)
def test_a_bad_search_is_one_line_and_writes_nothing(tmp_path, lm_config, capsys, override, message):
    assert main(["tune", str(lm_config), "--trials", "2", "--set", override]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()
