"""distill export and distill eval FILE: the student out of PyTorch, equal to it on the test inputs."""

from __future__ import annotations

import builtins
import hashlib
import json
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch

from conftest import TINY_RUN, write_config
from distill.cli import main
from distill.export import Deployable, load_exported
from distill.pipeline import open_run

STUDENTS = {
    "mlp": "{model: mlp, args: {hidden: [8]}}",
    "cnn": "{model: cnn, args: {channels: [4, 8], hidden: 16}}",
    "resnet8": "{model: resnet8}",  # a zoo model: batch norm, residual adds, pooling
}


def _train(folder: Path, student: str, name: str) -> Path:
    text = TINY_RUN.format(out=folder / "runs").replace("name: tiny", f"name: {name}")
    text = text.replace("student: {model: mlp, args: {hidden: [8]}}", f"student: {student}")
    config = write_config(folder / f"{name}.yaml", text.replace("epochs: 2", "epochs: 1"))
    assert main(["train", str(config), "-q"]) == 0
    return folder / "runs" / name


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("export")
    return {name: _train(folder, student, name) for name, student in STUDENTS.items()}


def _pytorch_logits(run_dir: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    run = open_run(run_dir)
    test = run.exp.splits.test
    with torch.inference_mode():
        return Deployable(run.net("student")).eval()(test.inputs), test.inputs, test.labels


@pytest.mark.e2e
@pytest.mark.parametrize("name", list(STUDENTS))
def test_onnx_export_matches_pytorch_on_the_test_inputs(runs, name, capsys):
    assert main(["export", str(runs[name]), "-q"]) == 0
    path = runs[name] / "export" / "student.onnx"
    expected, inputs, _ = _pytorch_logits(runs[name])
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run(None, {"input": inputs.numpy()})[0])  # the whole split: batch axis dynamic
    assert (got - expected).abs().max().item() <= 1e-4
    recorded = json.loads((runs[name] / "export" / "export.json").read_text())["onnx"]
    assert recorded["max_abs_diff"] <= 1e-4 and recorded["top1_agreement"] == 1.0
    assert "ONNX Runtime fp32" in capsys.readouterr().out


@pytest.mark.e2e
def test_onnx_file_carries_what_a_user_needs(runs):
    main(["export", str(runs["mlp"]), "-q"])
    model = onnx.load(str(runs["mlp"] / "export" / "student.onnx"))
    meta = {p.key.removeprefix("distill.json."): p.value for p in model.metadata_props}
    assert json.loads(meta["classes"]) == [str(i) for i in range(10)]
    assert json.loads(meta["input_shape"]) == ["batch", 1, 8, 8]
    assert "divided by 16" in meta["preprocessing"]
    assert meta["run"] == "mlp"
    assert meta["config_sha256"] == hashlib.sha256((runs["mlp"] / "config.yaml").read_bytes()).hexdigest()
    assert meta["config"] == (runs["mlp"] / "config.yaml").read_text()  # the run's, wherever export ran
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param and not batch_dim.dim_value  # symbolic: any batch size
    student = open_run(runs["mlp"]).net("student")  # the student alone: no adapter or head weights shipped
    weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]  # not shape constants
    shipped = sum(onnx.numpy_helper.to_array(t).size for t in weights)
    assert shipped == sum(p.numel() for p in student.parameters())


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["torchscript", "torch-export"])
def test_other_formats_match_pytorch(runs, fmt):
    assert main(["export", str(runs["cnn"]), "--format", fmt, "-q"]) == 0
    path = runs["cnn"] / "export" / {"torchscript": "student.torchscript.pt", "torch-export": "student.pt2"}[fmt]
    expected, inputs, _ = _pytorch_logits(runs["cnn"])
    run, meta = load_exported(path)
    assert (run(inputs) - expected).abs().max().item() <= 1e-4
    assert meta["run"] == "cnn"


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", ["onnx", "torchscript", "torch-export"])
def test_an_exported_file_evaluates_to_the_pytorch_students_accuracy(runs, fmt, capsys):
    main(["export", str(runs["cnn"]), "--format", fmt, "-q"])
    expected, _, labels = _pytorch_logits(runs["cnn"])
    accuracy = (expected.argmax(-1) == labels).float().mean().item()
    file = {"onnx": "student.onnx", "torchscript": "student.torchscript.pt", "torch-export": "student.pt2"}[fmt]
    capsys.readouterr()
    assert main(["eval", str(runs["cnn"] / "export" / file)]) == 0
    assert f"{accuracy:.2%} test accuracy on the {len(labels)} test samples of run cnn" in capsys.readouterr().out


@pytest.mark.e2e
def test_int8_reports_accuracy_size_and_speed_before_and_after(runs, capsys):
    assert main(["export", str(runs["cnn"]), "--int8"]) == 0
    out = capsys.readouterr().out
    recorded = json.loads((runs["cnn"] / "export" / "export.json").read_text())
    for way in ("int8", "int8-static"):  # a conv net gets both
        row = recorded[way]
        assert row["accuracy_change"] == pytest.approx(row["accuracy"] - recorded["onnx"]["accuracy"])
        assert row["size_bytes"] < recorded["onnx"]["size_bytes"]
        assert row["latency_ms"] > 0 and row["latency_p95_ms"] >= row["latency_ms"]
        assert (runs["cnn"] / "export" / row["file"]).exists()
        assert f"{row['accuracy_change'] * 100:+.2f})" in out
    assert main(["eval", str(runs["cnn"] / "export" / "student.int8-static.onnx"), "-q"]) == 0


@pytest.mark.e2e
def test_an_mlp_gets_dynamic_int8_only(runs):
    assert main(["export", str(runs["mlp"]), "--int8", "-q"]) == 0
    assert (runs["mlp"] / "export" / "student.int8.onnx").exists()
    assert not (runs["mlp"] / "export" / "student.int8-static.onnx").exists()


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_parity_past_the_tolerance_keeps_the_file_aside_and_the_earlier_export(runs, capsys):
    main(["export", str(runs["mlp"]), "-q"])
    good = runs["mlp"] / "export" / "student.onnx"
    before = good.read_bytes()
    capsys.readouterr()
    assert main(["export", str(runs["mlp"]), "--atol", "1e-12"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "above --atol 1e-12" in err and "student.onnx.failed" in err
    assert (runs["mlp"] / "export" / "student.onnx.failed").exists()
    assert good.read_bytes() == before


UNSUPPORTED = """\
import torch
from torch import nn


class Running(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.head = nn.Linear(torch.Size(input_shape).numel(), num_classes)

    def forward(self, x):
        return self.head(torch.cummax(x.flatten(1), dim=1).values)


def running(input_shape, num_classes):
    return Running(input_shape, num_classes)
"""


@pytest.mark.e2e
def test_an_operator_onnx_lacks_is_named_with_a_format_that_works(tmp_path, monkeypatch, capsys):
    (tmp_path / "running_max.py").write_text(UNSUPPORTED)
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = _train(tmp_path, "{model: 'running_max:running'}", "running")
    capsys.readouterr()
    assert main(["export", str(run_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "aten.cummax" in err and "--format torch-export" in err
    assert not (run_dir / "export" / "student.onnx").exists()
    assert main(["export", str(run_dir), "--format", "torch-export", "-q"]) == 0  # the format it pointed at works


FIXED_BATCH = """\
from torch import nn


class Flat(nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.head = nn.Linear(64, num_classes)

    def forward(self, x):
        return self.head(x.reshape(len(x), 64))  # a trace records len(x) as a constant


def flat(input_shape, num_classes):
    return Flat(input_shape, num_classes)
"""


@pytest.mark.e2e
def test_a_trace_that_fixed_the_batch_size_fails_parity_and_is_kept_aside(tmp_path, monkeypatch, capsys):
    (tmp_path / "fixed_batch.py").write_text(FIXED_BATCH)
    monkeypatch.syspath_prepend(str(tmp_path))
    run_dir = _train(tmp_path, "{model: 'fixed_batch:flat'}", "flat")
    capsys.readouterr()
    assert main(["export", str(run_dir), "--format", "torchscript"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fails on a batch of another size" in err
    assert (run_dir / "export" / "student.torchscript.pt.failed").exists()
    assert main(["export", str(run_dir)]) == 2  # the ONNX exporter fixes it too
    assert "fails on a batch of another size" in capsys.readouterr().err


@pytest.mark.e2e
def test_without_onnxruntime_the_extra_to_install_is_named(runs, monkeypatch, capsys):
    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name.startswith("onnxruntime"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    assert main(["export", str(runs["mlp"])]) == 2
    assert "pip install 'distill[export]'" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--format", "torchscript", "--int8"], "use it with --format onnx"),
        (["--atol", "0"], "--atol must be above 0"),
    ],
)
def test_bad_options_are_one_line(runs, args, expected, capsys):
    assert main(["export", str(runs["mlp"]), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err


def test_a_folder_that_is_no_run_and_a_file_that_is_no_export(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err
    assert main(["eval", str(tmp_path / "notes.txt")]) == 2  # not there at all
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["eval", str(tmp_path / "notes.txt")]) == 2
    assert "nor an exported model" in capsys.readouterr().err
    for name in ("model.onnx", "model.pt2", "model.pt"):
        (tmp_path / name).write_bytes(b"\x00 not a model")
        assert main(["eval", str(tmp_path / name)]) == 2
        assert "cannot be read as" in capsys.readouterr().err
