"""Opening a file someone sent never runs code; a config's own `module:factory` runs, and the run says so."""

import hashlib
import json
import os
import pickle
import sys

import pytest

from conftest import TINY_RUN, write_config
from distill.cli import main

pytestmark = pytest.mark.e2e

USER_MODELS = """\
from pathlib import Path

import torch

Path(__file__).with_name("imported").write_text("yes")  # proof that this module's code ran


def small(input_shape, num_classes, hidden=(8,)):
    width = hidden[0]
    layers = [torch.nn.Flatten(), torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, num_classes)]
    return torch.nn.Sequential(*layers)
"""


class Planted:
    """Unpickling this calls exit(): what an attacker would replace with anything else."""

    def __reduce__(self):
        return (sys.exit, ("code ran while loading a file",))


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """`usermodels.py` on the import path, not imported yet."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "usermodels.py").write_text(USER_MODELS)
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delitem(sys.modules, "usermodels", raising=False)
    return code / "usermodels.py"


def test_a_user_factory_runs_only_when_the_config_names_it_and_the_run_records_it(tmp_path, capsys, user_module):
    plain = write_config(tmp_path / "plain.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    assert main(["train", str(plain), "--set", "scratch=false"]) == 0
    assert "usermodels" not in sys.modules and not user_module.with_name("imported").exists()
    assert json.loads((tmp_path / "runs" / "tiny" / "summary.json").read_text())["user_code"] == []

    config = write_config(tmp_path / "user.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    assert main(["train", str(config), "--set", "name=user", "--set", "student.model=usermodels:small"]) == 0
    out = capsys.readouterr().out
    assert user_module.with_name("imported").read_text() == "yes"
    summary = json.loads((tmp_path / "runs" / "user" / "summary.json").read_text())
    sha256 = hashlib.sha256(user_module.read_bytes()).hexdigest()
    assert summary["user_code"] == [
        {"config": "student.model", "model": "usermodels:small", "file": str(user_module), "sha256": sha256}
    ]
    assert (
        f"user code run: student.model = usermodels:small from {os.path.relpath(user_module)} (sha256 {sha256[:12]})"
        in out
    )


def test_a_planted_pickle_in_a_checkpoint_is_refused_on_resume(tmp_path, capsys):
    config = write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out=tmp_path / "runs"))
    assert main(["train", str(config), "--set", "scratch=false", "--set", "train.epochs=1"]) == 0
    checkpoints = tmp_path / "runs" / "tiny" / "student" / "checkpoints"
    state = checkpoints / json.loads((checkpoints / "last.json").read_text())["dir"] / "state.pt"
    state.write_bytes(pickle.dumps(Planted(), protocol=2))  # the protocol torch.save writes
    checksums = json.loads((state.parent / "sha256.json").read_text())  # planted by one who fixes the checksums too
    checksums["state.pt"] = hashlib.sha256(state.read_bytes()).hexdigest()
    (state.parent / "sha256.json").write_text(json.dumps(checksums))
    (tmp_path / "runs" / "tiny" / "student.safetensors").unlink()  # so that resume reads the checkpoint
    code = main(["train", str(config), "--set", "scratch=false", "--set", "train.epochs=1", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and f"{state} cannot be read" in err, err
