"""The `distill` command end to end: happy paths on the bundled digits, and every user mistake as one line, exit 2."""

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import TINY_RUN, stopped_after_an_epoch, write_config
from distill import losses
from distill.cli import main
from distill.pipeline import evaluate_run, open_run
from distill.report import format_summary

SUMMARY_KEYS = {"accuracy", "agreement", "params", "size_bytes", "latency_ms", "throughput"}


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_user_error(code, err, *fragments):
    assert code == 2, err
    assert err.startswith("distill: error: ") and err.count("\n") == 1, err  # one line, no traceback
    for fragment in fragments:
        assert fragment in err, err


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def accuracy_on_test(run, *names: str) -> float:
    """Accuracy on the run's test split of the saved models `names`, their softmax probabilities averaged."""
    nets = [run.net(name).eval() for name in names]
    right = total = 0
    with torch.no_grad():
        for batch in run.exp.test_loader:
            probs = torch.stack([net(batch["input"]).softmax(-1) for net in nets]).mean(0)
            right += (probs.argmax(-1) == batch["label"]).sum().item()
            total += len(batch["label"])
    return right / total


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One tiny run shared by the tests that only read it."""
    tmp = tmp_path_factory.mktemp("run")
    config = write_config(tmp / "tiny.yaml", TINY_RUN.format(out=tmp / "runs"))
    assert main(["train", str(config)]) == 0
    return config, tmp / "runs" / "tiny"


@pytest.mark.e2e
def test_train_writes_the_summary_and_every_stage(finished_run):
    _, run_dir = finished_run
    summary = json.loads((run_dir / "summary.json").read_text())
    run = open_run(run_dir)
    for role in ("teacher", "student", "scratch"):
        assert set(summary[role]) >= SUMMARY_KEYS
        assert summary[role]["accuracy"] == pytest.approx(accuracy_on_test(run, role))  # the saved model's
        assert summary[role]["size_bytes"] == (run_dir / f"{role}.safetensors").stat().st_size
    assert summary["student"]["params"] < summary["teacher"]["params"]
    assert summary["teacher"]["accuracy"] > 0.5  # two epochs already learn the digits
    assert (run_dir / "config.yaml").exists() and (run_dir / "student" / "metrics.jsonl").exists()


@pytest.mark.e2e
def test_eval_re_measures_a_run(finished_run, capsys):
    _, run_dir = finished_run
    code, out, _ = run_cli(capsys, "eval", run_dir)
    saved = json.loads((run_dir / "summary.json").read_text())
    assert code == 0
    assert f"{saved['student']['accuracy']:.2%}" in out and "student / teacher" in out


@pytest.mark.e2e
def test_resume_of_a_finished_run_retrains_nothing(finished_run, capsys):
    config, run_dir = finished_run
    before = snapshot(run_dir / "student")
    code, out, _ = run_cli(capsys, "train", config, "--resume")
    assert code == 0 and "] training " not in out
    assert snapshot(run_dir / "student") == before


@pytest.mark.e2e
def test_a_second_run_never_overwrites_the_first(finished_run, capsys):
    config, run_dir = finished_run
    before = snapshot(run_dir)
    code, _, err = run_cli(capsys, "train", config)
    assert_user_error(code, err, "already holds a run", "--resume")
    assert snapshot(run_dir) == before


@pytest.mark.e2e
def test_resume_with_changed_settings_is_refused(finished_run, capsys):
    config, _ = finished_run
    code, _, err = run_cli(capsys, "train", config, "--resume", "--set", "method.assistant={model: mlp}")
    assert_user_error(code, err, "--resume: method.assistant is {'model': 'mlp'", "but the run started with None")
    code, _, err = run_cli(capsys, "train", config, "--resume", "--set", "train.lr=0.5")
    assert_user_error(code, err, "train.lr is 0.5 but the run started with 0.01")


@pytest.mark.e2e
def test_teacher_weights_and_an_interrupted_student_resume(tmp_path, finished_run, capsys):
    _, first = finished_run
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    teacher = first / "teacher.safetensors"
    args = ["train", config, "--set", f"teacher.weights={teacher}", "--set", "scratch=false"]
    code, out, _ = run_cli(capsys, *args)
    assert code == 0 and "training teacher" not in out
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["scratch"] is None
    assert summary["teacher"]["accuracy"] == json.loads((first / "summary.json").read_text())["teacher"]["accuracy"]


@pytest.mark.e2e
def test_demo_prints_its_table(tmp_path, capsys):
    code, out, _ = run_cli(
        capsys, "demo", "--set", f"out_dir={tmp_path}", "--set", "train.epochs=1", "--set", "teacher.epochs=1"
    )
    assert code == 0
    assert "student (distilled)" in out and "student alone" in out and "student / teacher" in out
    assert out.strip().splitlines()[-1].startswith(f"report: wrote {tmp_path / 'demo' / 'report.html'}")
    assert (tmp_path / "demo" / "report.html").exists()
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert {"teacher", "student", "scratch"} <= set(summary)


# ----- user mistakes: one line, exit code 2, nothing written -----


@pytest.mark.parametrize(
    ("edit", "fragments"),
    [
        (["--set", "train.epocs=3"], ["train.epocs: unknown key", "did you mean 'epochs'"]),
        (["--set", "teacher.model=cnnn"], ["teacher: unknown model 'cnnn'", "did you mean 'cnn'"]),
        (["--set", "student.args={hidden: [8], num_classes: 4}"], ["student.model outputs shape (1, 4)", "10 classes"]),
        (["--set", "student.args={widths: [8]}"], ["student.args", "'widths'"]),
        (["--set", "teacher.weights=missing.safetensors"], ["missing.safetensors does not exist"]),
        (["--set", "data.name=idx", "--set", "data.path=nowhere"], ["nowhere"]),
        (["--set", "data.name=digts"], ["did you mean 'digits'"]),
        (["--set", "student.model=nomodule_xyz:make"], ["cannot import nomodule_xyz"]),
        (["--set", "train.device=tpu"], ["train.device"]),
        (["--set", "student.args={hidden: [0]}"], ["hidden must be positive integers, got [0]"]),
        (["--set", "student.model=:f"], ["':f' is not a model name"]),
        (
            ["--set", "train.monitor=val/acc"],
            ["train.monitor: 'val/acc' is not reported by method.terms", "val/accuracy"],
        ),
    ],
)
def test_bad_settings(tmp_path, capsys, edit, fragments):
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    code, _, err = run_cli(capsys, "train", config, *edit)
    assert_user_error(code, err, *fragments)
    assert not (tmp_path / "runs" / "tiny" / "summary.json").exists()


@pytest.mark.e2e
def test_a_failed_start_can_be_run_again_fixed(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    code, _, err = run_cli(capsys, "train", config, "--set", "train.monitor=val/acc")
    assert code == 2
    code, _, err = run_cli(capsys, "train", config, "--set", "train.epochs=1")
    assert code == 0, err


def test_demo_never_deletes_a_folder_it_did_not_make(tmp_path, capsys):
    precious = tmp_path / "demo" / "notes.txt"
    precious.parent.mkdir()
    precious.write_text("mine")
    code, _, err = run_cli(capsys, "demo", "--set", f"out_dir={tmp_path}", "--set", "train.epochs=1")
    assert_user_error(code, err, "holds other files")
    assert precious.read_text() == "mine"


def test_paths_that_cannot_be_used(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    (tmp_path / "afile").write_text("")
    code, _, err = run_cli(capsys, "train", config, "--set", f"out_dir={tmp_path / 'afile'}")
    assert_user_error(code, err, "afile")
    code, _, err = run_cli(capsys, "train", config, "--set", f"teacher.weights={tmp_path}")
    assert_user_error(code, err, "is a folder; give a weights file (.safetensors or .pt) inside it")


def test_a_user_model_that_rejects_the_inputs(tmp_path, capsys, monkeypatch):
    (tmp_path / "user_nets.py").write_text(
        "from torch import nn\ndef wrong(num_classes):\n    return nn.Linear(5, num_classes)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    code, _, err = run_cli(
        capsys, "train", config, "--set", "student.model=user_nets:wrong", "--set", "student.args={}"
    )
    assert_user_error(code, err, "student.model cannot take the data's inputs of shape (1, 8, 8)")


@pytest.mark.e2e
def test_teacher_checkpoint_of_another_architecture(tmp_path, finished_run, capsys):
    _, first = finished_run
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    wrong = first / "student.safetensors"  # an MLP of another width
    code, _, err = run_cli(capsys, "train", config, "--set", f"teacher.weights={wrong}")
    assert_user_error(code, err, "student.safetensors was saved from another architecture")
    assert not (tmp_path / "runs").exists()


class _RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "teacher.pt"
    evil.write_bytes(pickle.dumps({"weight": _RunsCode()}))
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    code, _, err = run_cli(capsys, "train", config, "--set", f"teacher.weights={evil}")
    assert_user_error(code, err, "cannot be loaded safely")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.e2e
def test_a_plain_pt_state_dict_loads(tmp_path, finished_run, capsys):
    _, first = finished_run
    from safetensors.torch import load_file

    torch.save(load_file(first / "teacher.safetensors"), tmp_path / "teacher.pt")
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    code, _, err = run_cli(
        capsys,
        "train",
        config,
        "--set",
        f"teacher.weights={tmp_path / 'teacher.pt'}",
        "--set",
        "scratch=false",
        "--set",
        "train.epochs=1",
    )
    assert code == 0, err


def test_csv_mistakes(tmp_path, capsys):
    good = "a,b,kind\n" + "1,2,x\n3,4,y\n" * 10
    csv = tmp_path / "t.csv"
    csv.write_text(good)
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    base = ["train", config, "--set", "data.name=csv", "--set", f"data.path={csv}"]
    code, _, err = run_cli(capsys, *base, "--set", "data.label_column=knid")
    assert_user_error(code, err, "t.csv", "knid", "did you mean 'kind'")
    csv.write_text(good + "nan,2,x\n")
    code, _, err = run_cli(capsys, *base, "--set", "data.label_column=kind")
    assert_user_error(code, err, "t.csv", "column 'a'")
    csv.write_text(good + "NA,2,x\n")
    code, _, err = run_cli(capsys, *base, "--set", "data.label_column=kind")
    assert_user_error(code, err, "t.csv, row 21 (line 22): column 'a' is numeric but has 'NA'")


@pytest.mark.e2e
def test_a_csv_run_trains(tmp_path, capsys):
    rows = ["x1,x2,color,label"] + [f"{i % 7},{(i * 3) % 5},{'red' if i % 2 else 'blue'},{i % 2}" for i in range(80)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    code, _, err = run_cli(
        capsys,
        "train",
        config,
        "--set",
        "data.name=csv",
        "--set",
        f"data.path={tmp_path / 't.csv'}",
        "--set",
        "data.label_column=label",
        "--set",
        "teacher.epochs=20",
    )
    assert code == 0, err
    assert json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())["teacher"]["accuracy"] > 0.95


def test_missing_and_broken_config_files(tmp_path, capsys):
    code, _, err = run_cli(capsys, "train", tmp_path / "nope.yaml")
    assert_user_error(code, err, "nope.yaml does not exist")
    code, _, err = run_cli(capsys, "train", write_config(tmp_path / "b.yaml", "name: [unclosed\n"))
    assert_user_error(code, err, "b.yaml: invalid YAML at line")
    code, _, err = run_cli(capsys, "eval", tmp_path)
    assert_user_error(code, err, "not a run directory")


@pytest.mark.e2e
def test_python_dash_m_prints_no_traceback(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "distill", "train", str(tmp_path / "nope.yaml")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "does not exist" in result.stderr


FITNETS = """
method:
  kind: offline
  stages:
  - name: hint
    epochs: 1
    terms: [{loss: hint, student: hidden1, teacher: hidden1, weight: 1.0}]
    train: {lr: 0.02}
  - name: kd
    epochs: 2
    terms: [{loss: kd, temperature: 4.0, alpha: 0.5}]
"""


def staged(tmp_path):
    """The tiny run with the FitNets stages in place of its method.terms."""
    plain = "\n".join(line for line in TINY_RUN.splitlines() if not line.startswith("method:"))
    return plain.format(out=tmp_path / "runs") + FITNETS


@pytest.mark.e2e
def test_a_two_stage_fitnets_run(tmp_path, capsys):
    from safetensors.torch import load_file

    from distill.models import build_model

    config = write_config(tmp_path / "c.yaml", staged(tmp_path))
    code, out, err = run_cli(capsys, "train", config)
    assert code == 0, err
    run_dir = tmp_path / "runs" / "tiny"
    assert "training student-hint for 1 epochs" in out and "training student-kd for 2 epochs" in out
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stages"] == ["hint", "kd"]
    after_hint, final = load_file(run_dir / "student-hint.safetensors"), load_file(run_dir / "student.safetensors")
    assert all(torch.equal(final[k], v) for k, v in load_file(run_dir / "student-kd.safetensors").items())
    torch.manual_seed(0)  # the run's train.seed: the student's initial weights
    initial = build_model("mlp", input_shape=(1, 8, 8), num_classes=10, args={"hidden": [8]}).state_dict()
    assert not torch.equal(after_hint["hidden1.0.weight"], initial["hidden1.0.weight"])  # trained up to the hint
    assert torch.equal(after_hint["fc.weight"], initial["fc.weight"])  # and nothing after it
    scratch_epochs = [json.loads(line)["epoch"] for line in (run_dir / "scratch" / "metrics.jsonl").open()]
    assert max(scratch_epochs) == 3  # the baseline gets the stages' whole budget


def test_a_bad_tap_path_fails_before_anything_is_written(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", staged(tmp_path))
    code, _, err = run_cli(capsys, "train", config, "--set", "method.stages.0.terms.0.student=hiden1")
    assert_user_error(code, err, "student has no module 'hiden1'; close: hidden1")
    assert not (tmp_path / "runs").exists()


def test_an_adapter_that_cannot_be_inferred_fails_before_the_teacher_trains(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", staged(tmp_path))
    cnn_teacher = ["--set", "teacher.model=cnn", "--set", "teacher.args={channels: [4]}"]
    code, out, err = run_cli(capsys, "train", config, *cnn_teacher, "--set", "method.stages.0.terms.0.teacher=block1")
    assert_user_error(code, err, "loss term 'hint' (hidden1 -> block1)", "cannot map the student's (8, 8)")
    assert "] training " not in out and not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "train, message",
    [
        ("{lr: -1}", "method.stages.1.train.lr: Input should be greater than 0, got -1"),
        ("{schedule: multistep}", "schedule 'multistep' needs train.milestones"),
        ("{milestones: [5]}", "train.milestones must lie in [1, epochs=2), got [5]"),
    ],
)
def test_a_stage_override_is_checked_with_the_train_group(tmp_path, capsys, train, message):
    config = write_config(tmp_path / "c.yaml", staged(tmp_path))
    code, out, err = run_cli(capsys, "train", config, "--set", f"method.stages.1.train={train}")
    assert_user_error(code, err, message)
    assert "] training " not in out and not (tmp_path / "runs").exists()


@pytest.mark.e2e
def test_a_run_interrupted_in_its_second_stage_resumes_exactly(tmp_path, capsys, monkeypatch):
    from safetensors.torch import load_file

    from distill import stages as _stages

    straight = write_config(tmp_path / "a.yaml", staged(tmp_path / "a"))
    assert run_cli(capsys, "train", straight, "--set", "scratch=false")[0] == 0

    real_fit = _stages.fit
    broken = write_config(tmp_path / "b.yaml", staged(tmp_path / "b"))
    monkeypatch.setattr(_stages, "fit", stopped_after_an_epoch(real_fit, "student-kd"))
    assert run_cli(capsys, "train", broken, "--set", "scratch=false")[0] == 130
    monkeypatch.setattr(_stages, "fit", real_fit)
    code, _, err = run_cli(capsys, "train", broken, "--set", "scratch=false", "--resume")
    assert code == 0, err

    a = load_file(tmp_path / "a" / "runs" / "tiny" / "student.safetensors")
    b = load_file(tmp_path / "b" / "runs" / "tiny" / "student.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture
def distiller_pairs(monkeypatch):
    """(student, teacher) of every Distiller the recipes build to train, in order."""
    from distill.modules import self_distiller as selfdistill
    from distill.recipes import offline

    pairs = []
    real = offline.Distiller

    def recording(student, teacher, *args, **kwargs):
        pairs.append((student, teacher))
        return real(student, teacher, *args, **kwargs)

    monkeypatch.setattr(offline, "Distiller", recording)
    monkeypatch.setattr(selfdistill, "Distiller", recording)  # born-again generations
    return pairs


@pytest.mark.e2e
def test_a_teacher_assistant_chain(tmp_path, capsys, distiller_pairs):
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    code, out, err = run_cli(capsys, "train", config, "--set", "method.assistant={model: mlp, args: {hidden: [16]}}")
    assert code == 0, err
    assert out.index("training teacher") < out.index("training assistant") < out.index("training student")
    assert "teacher assistant" in out
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["assistant"]["params"] < summary["teacher"]["params"]
    assistant_training, student_training = distiller_pairs[-2:]
    assert student_training[1] is assistant_training[0]  # the student learns from the trained assistant
    code, _, err = run_cli(capsys, "train", config, "--set", "name=x", "--set", "method.assistant={modle: mlp}")
    assert_user_error(code, err, "method.assistant.modle: unknown key (did you mean 'model'?)")


@pytest.mark.e2e
def test_online_peers_each_have_an_optimizer_a_checkpoint_and_a_row(tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", staged(tmp_path).split("method:")[0])
    online = "method={kind: online, mutual: true, peers: [{model: mlp, args: {hidden: [12]}}]}"
    code, out, err = run_cli(capsys, "train", config, "--set", online, "--set", "scratch=false")
    assert code == 0, err
    assert "training online for 2 epochs" in out and "training teacher" not in out and "peer 1" in out
    run_dir = tmp_path / "runs" / "tiny"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stages"] == ["online"] and summary["models"] == ["teacher", "peer1", "student"]
    for name in summary["models"]:
        assert set(summary[name]) >= SUMMARY_KEYS
    assert summary["peer1"]["params"] == 64 * 12 + 12 + 12 * 10 + 10  # method.peers.0: digits, one hidden layer of 12
    records = [json.loads(line) for line in (run_dir / "online" / "metrics.jsonl").open()]
    assert {"val/student/accuracy", "val/teacher/accuracy", "val/peer1/accuracy", "val/agreement"} <= set(records[-1])
    checkpoint = (
        run_dir / "online" / "checkpoints" / json.loads((run_dir / "online/checkpoints/last.json").read_text())["dir"]
    )
    assert {p.name for p in checkpoint.glob("*.safetensors")} == {f"{n}.safetensors" for n in summary["models"]}
    optimizers = torch.load(checkpoint / "state.pt", weights_only=True)["optimizer"]
    assert set(optimizers) == {"student", "teacher", "peer1"}  # one optimizer state per peer
    assert format_summary(json.loads(json.dumps(evaluate_run(run_dir)))).count("\n") == format_summary(summary).count(
        "\n"
    )
    before = snapshot(run_dir)
    assert run_cli(capsys, "train", config, "--set", online, "--set", "scratch=false", "--resume")[0] == 0
    assert {k: v for k, v in snapshot(run_dir).items() if k.endswith(".safetensors")} == {
        k: v for k, v in before.items() if k.endswith(".safetensors")
    }


CLASHES = [
    # keys of two ways of distilling in one method: named with the kind that does not have them
    ("method: {kind: online, terms: [{loss: kd}]}", "method.terms: not a key of method.kind 'online'"),
    ("method: {kind: born_again, stages: []}", "method.stages: not a key of method.kind 'born_again'"),
    ("method: {kind: self_distill, taps: [block1], assistant: {model: mlp}}", "method.assistant: not a key of"),
    ("method: {kind: online, tmperature: 2}", "method.tmperature: not a key of method.kind 'online' (did you mean"),
    # the teacher's keys that a way of distilling would ignore, or a teacher it has no use for
    ("method: {kind: online}\nteacher: {model: mlp, cache: c, weights: w}", "teacher.cache: method.kind 'online'"),
    ("method: {kind: online}\nteacher: {model: mlp, epochs: 3}", "teacher.epochs: method.kind 'online' does not"),
    ("method: {kind: self_distill, taps: [hidden1]}\nteacher: {model: mlp}", "teacher: method.kind 'self_distill'"),
    ("method: {kind: offline}\nteacher: null", "teacher: missing; method.kind 'offline' needs one"),
    # the old spellings, and a kind that does not exist
    ("online: {mutual: true}", "online: unknown key; the way of distilling is chosen as method: {kind: online"),
    ("distill: {terms: [{loss: kd}]}", "distill: unknown key; terms and label_smoothing are keys of method"),
    ("method: {kind: onlin}", "method.kind: 'onlin' is not one of born_again, offline, online, self_distill"),
    ("method: {terms: [{loss: kd}]}", "method.kind: missing; give one of born_again, offline, online"),
]


@pytest.mark.parametrize("method, message", CLASHES)
def test_a_clash_of_ways_of_distilling_is_one_line_naming_both_keys(tmp_path, capsys, method, message):
    plain = [line for line in TINY_RUN.format(out=tmp_path / "runs").splitlines() if not line.startswith("method:")]
    plain = [line for line in plain if not line.startswith("teacher:") or "teacher" not in method]
    text = "\n".join([*plain, method])
    code, _, err = run_cli(capsys, "train", write_config(tmp_path / "c.yaml", text))
    assert_user_error(code, err, message)
    assert not (tmp_path / "runs").exists()


@pytest.mark.e2e
def test_born_again_generations_from_the_command_line(tmp_path, capsys, distiller_pairs):
    plain = "\n".join(line for line in TINY_RUN.splitlines() if not line.startswith(("method:", "student:")))
    config = write_config(
        tmp_path / "c.yaml", plain.format(out=tmp_path / "runs") + "\nstudent: {model: mlp, args: {hidden: [32]}}\n"
    )
    code, out, err = run_cli(capsys, "train", config, "--set", "method={kind: born_again, generations: 2}")
    assert code == 0, err
    assert "training gen1" in out and "training gen2" in out and "generation 2" in out and "ensemble" in out
    summary = json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())
    assert summary["stages"] == ["gen1", "gen2"] and summary["models"] == ["teacher", "gen1", "gen2", "student"]
    for name in ("gen1", "gen2"):  # a full row per generation
        assert set(summary[name]) >= SUMMARY_KEYS and summary[name]["params"] == summary["teacher"]["params"]
    run = open_run(tmp_path / "runs" / "tiny")  # the ensemble: mean probabilities of the teacher and generations
    assert summary["born_again"]["ensemble_accuracy"] == pytest.approx(accuracy_on_test(run, "teacher", "gen1", "gen2"))
    assert summary["student"]["accuracy"] == summary["gen2"]["accuracy"]  # the last generation is the student
    (gen1, _), (_, teacher_of_gen2) = distiller_pairs
    assert teacher_of_gen2 is gen1  # generation 2 learns from generation 1
    code, _, err = run_cli(
        capsys,
        "train",
        write_config(tmp_path / "d.yaml", TINY_RUN.format(out=tmp_path / "r2")),
        "--set",
        "method={kind: born_again}",
    )
    assert_user_error(code, err, "student: method.kind 'born_again' trains generations of the teacher's architecture")
    weights = ["--set", "method={kind: born_again}", "--set", "student.weights=w.safetensors", "--set", "name=w"]
    code, _, err = run_cli(capsys, "train", config, *weights)
    assert_user_error(code, err, "student.weights: method.kind 'born_again' starts every generation afresh")


SELF_DISTILL = """\
name: sd
out_dir: {out}
data: {{name: digits, val_fraction: 0.25, batch_size: 128}}
student: {{model: cnn, args: {{channels: [8, 16], hidden: 16}}}}
method: {{kind: self_distill, taps: [block1]}}
train: {{epochs: 2, optimizer: adamw, lr: 0.01, progress: false}}
"""


@pytest.mark.e2e
def test_deep_self_distillation_from_a_config_needs_no_teacher(tmp_path, capsys):
    config = write_config(tmp_path / "sd.yaml", SELF_DISTILL.format(out=tmp_path / "runs"))
    code, out, err = run_cli(capsys, "train", config)
    assert code == 0, err
    run_dir = tmp_path / "runs" / "sd"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["teacher"] is None and summary["ratios"] is None and summary["models"] == ["scratch", "student"]
    assert summary["student"]["agreement"] is None and "diagnosis: " in out and "self-distillation" in out
    records = [json.loads(line) for line in (run_dir / "student" / "metrics.jsonl").open()]
    assert "val/head0_accuracy" in records[-1]  # the auxiliary head trained beside the student
    exported = load_file(str(run_dir / "student.safetensors"))
    assert not any(key.startswith(("heads", "model.")) for key in exported)  # the bare student, heads dropped
    assert summary["student"]["params"] == summary["scratch"]["params"]


@pytest.mark.parametrize(
    "override, message",
    [
        ("method.taps=[blok1]", "method: model has no module 'blok1'"),
        ("teacher={model: mlp}", "teacher: method.kind 'self_distill' trains without a teacher; drop teacher"),
        ("method={kind: offline}", "teacher: missing; method.kind 'offline' needs one"),
    ],
)
def test_self_distillation_mistakes_are_one_line(tmp_path, capsys, override, message):
    config = write_config(tmp_path / "sd.yaml", SELF_DISTILL.format(out=tmp_path / "runs"))
    code, _, err = run_cli(capsys, "train", config, "--set", override)
    assert_user_error(code, err, message)
    assert not (tmp_path / "runs").exists()


# --- a user's mistake (exit 2) or a failure (exit 1) ---------------------------------------------------------------


@pytest.mark.parametrize(
    "error, exit_code, says",
    [
        (RuntimeError("an internal error of torch\nwith more lines"), 1, "internal error: RuntimeError"),
        (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"), 1, "out of memory: OutOfMemoryError"),
        (KeyError("a bug of ours"), 1, "internal error: KeyError"),
        (
            losses.LossInputError("kd: student_logits must be 2-d"),
            2,
            "error: method.terms: loss term 'kd': kd: student",
        ),
    ],
)
def test_a_loss_term_that_fails_is_a_user_error_only_when_it_refuses_its_inputs(
    tmp_path, capsys, monkeypatch, error, exit_code, says
):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(losses.KD, "forward", fail)
    monkeypatch.delenv("DISTILL_DEBUG", raising=False)
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    code, _, err = run_cli(capsys, "train", config)
    assert code == exit_code and says in err and "Traceback" not in err, err
    if exit_code == 1:
        assert "not a problem with your configuration" in err and "--debug" in err
    assert not (tmp_path / "runs").exists()  # the stage check failed before anything was written


def test_an_internal_error_shows_its_traceback_on_request(tmp_path, capsys, monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("an internal error of torch")

    monkeypatch.setattr(losses.KD, "forward", fail)
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    code, _, err = run_cli(capsys, "--debug", "train", config)
    assert code == 1 and "Traceback (most recent call last)" in err and "in fail" in err
    monkeypatch.setenv("DISTILL_DEBUG", "1")
    code, _, err = run_cli(capsys, "train", config)
    assert code == 1 and "Traceback (most recent call last)" in err


@pytest.mark.e2e
def test_quiet_and_verbose(finished_run, tmp_path, capsys):
    config = write_config(tmp_path / "c.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    code, out, _ = run_cli(capsys, "--quiet", "train", config, "--set", "scratch=false")
    assert code == 0 and "] training " not in out and "student (distilled)" in out  # the result, not the chatter
    code, out, _ = run_cli(capsys, "train", config, "--set", "name=again", "--set", "scratch=false")
    assert code == 0 and "[again] training teacher for 2 epochs" in out
    code, out, _ = run_cli(capsys, "train", config, "--set", "name=after", "--set", "scratch=false", "-q")
    assert code == 0 and "] training " not in out  # the options work after the command too
