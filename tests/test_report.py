"""distill report: report.html and report.md hold every figure of a run, from what it saved."""

from __future__ import annotations

import builtins
import json
import re
from pathlib import Path

import pytest
import torch

from conftest import TINY_RUN, write_config
from distill.cli import main
from distill.report.evidence import BINS, predictions_of

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny run with a scratch baseline over two seeds, its student exported to int8, then reported."""
    folder = tmp_path_factory.mktemp("report")
    config = write_config(folder / "tiny.yaml", TINY_RUN.format(out=folder / "runs"))
    assert main(["train", str(config), "--set", "scratch=true", "--set", "seeds=[0, 1]", "-q"]) == 0
    run_dir = folder / "runs" / "tiny"
    assert main(["export", str(run_dir), "--int8", "-q"]) == 0
    assert main(["report", str(run_dir), "-q"]) == 0
    return run_dir


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)>.*?</\1>", "", html, flags=re.S))


@pytest.mark.e2e
def test_the_html_holds_every_figure_and_loads_nothing_from_outside(run_dir):
    html = (run_dir / "report.html").read_text()
    text = _text(html)
    for heading in ("Diagnosis", "The models on the test split", "The payoff", "Training"):
        assert heading in text
    assert text.index("Diagnosis") < text.index("The payoff")  # the verdict first
    summary = json.loads((run_dir / "summary.json").read_text())
    margin = summary["diagnosis"]["margin"] * 100
    assert f"by {margin:+.2f} points on test" in text
    for column in ("test accuracy", "agreement", "KL to teacher", "ECE", "params", "size", "peak memory", "p95"):
        assert column in text
    assert "top-5" not in text  # 10 classes: top-1 says it all
    for runtime in ("PyTorch", "ONNX Runtime fp32", "ONNX Runtime int8"):
        assert runtime in text
    assert "student alone" in text and "student (distilled)" in text
    assert "thread" in text and "torch.utils.benchmark" in text  # on what, how it was timed
    images = re.findall(r'<img src="([^"]+)"', html)
    assert len(images) == 3 + 3  # reliability, per-class change, accuracy-vs-latency; curves of 3 stages
    assert all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r"(src|href)=\"(https?:|//|file:)", html)


@pytest.mark.e2e
def test_the_markdown_links_its_plots_beside_it(run_dir):
    markdown = (run_dir / "report.md").read_text()
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown)
    names = {Path(link).name for link in links}
    assert {"reliability.png", "per_class_change.png", "accuracy_vs_latency.png"} <= names
    assert {"curves_teacher.png", "curves_scratch.png", "curves_student.png"} <= names
    for link in links:
        assert (run_dir / link).read_bytes().startswith(PNG)
    assert "| student (distilled) | ONNX Runtime int8 |" in markdown


@pytest.mark.e2e
def test_the_payoff_figures_are_of_the_models_that_ship(run_dir):
    markdown = (run_dir / "report.md").read_text()
    exported = json.loads((run_dir / "export" / "export.json").read_text())
    table = [cells for line in markdown.splitlines() if len(cells := _cells(line)) > 2]
    costs = {tuple(cells[:2]): cells for cells in table if cells[2].endswith("%")}
    ratios = {tuple(cells[:2]): cells for cells in table if cells[2].endswith("x")}
    assert costs[("student (distilled)", "PyTorch")][2] == f"{exported['pytorch']['accuracy']:.2%}"
    assert costs[("student (distilled)", "ONNX Runtime int8")][2] == f"{exported['int8']['accuracy']:.2%}"
    assert set(ratios[("teacher", "PyTorch")][2:]) == {"1.000x"}  # the ratio table divides by the teacher


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")] if line.startswith("| ") else []


def test_top5_shows_past_ten_classes_and_calibration_is_measured():
    labels = torch.arange(12).repeat(10)
    sure = torch.nn.functional.one_hot(labels, 12).float() * 50  # right, and certain of it
    model = predictions_of("student", [sure], [sure], labels)
    assert model.top5 == 1.0 and model.accuracy == 1.0 and model.agreement == 1.0
    assert model.ece == pytest.approx(0.0, abs=1e-6) and model.kl_to_teacher == pytest.approx(0.0, abs=1e-6)
    wrong = torch.nn.functional.one_hot((labels + 1) % 12, 12).float() * 50  # wrong, and certain of it
    model = predictions_of("student", [wrong], [sure], labels)
    assert model.accuracy == 0.0 and model.ece == pytest.approx(1.0, abs=1e-6)
    assert [b["count"] for b in model.reliability] == [len(labels)] and len(model.per_class) == 12
    assert model.reliability[0]["low"] == (BINS - 1) / BINS


def test_per_class_change_averages_seeds():
    labels = torch.tensor([0, 0, 1, 1])
    right = torch.nn.functional.one_hot(labels, 2).float()
    half = torch.tensor([[1.0, 0], [0, 1], [0, 1], [0, 1]])  # class 0: 1 of 2, class 1: 2 of 2
    model = predictions_of("student", [right, half], None, labels)
    assert model.per_class == [0.75, 1.0] and model.agreement is None and model.kl_to_teacher is None


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_an_unfinished_run_names_what_is_missing_and_the_command(run_dir, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    assert main(["report", str(unfinished)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no summary.json" in err and "distill train" in err
    assert main(["report", str(tmp_path)]) == 2
    assert "no config.yaml" in capsys.readouterr().err


@pytest.mark.e2e
def test_without_matplotlib_the_extra_is_named_and_the_old_report_kept(run_dir, monkeypatch, capsys):
    before = (run_dir / "report.html").read_bytes()
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    assert main(["report", str(run_dir)]) == 2
    assert "pip install 'distill[report]'" in capsys.readouterr().err
    assert (run_dir / "report.html").read_bytes() == before


# --- every way of distilling -----------------------------------------------------------------------------------

KINDS = {
    "online": "{kind: online, temperature: 3.0}",
    "self_distill": "{kind: self_distill, taps: [hidden1]}",
    "born_again": "{kind: born_again, generations: 2, temperature: 2.0}",
}


@pytest.mark.e2e
@pytest.mark.parametrize("kind", list(KINDS))
def test_a_report_of_every_way_of_distilling(kind, tmp_path):
    text = TINY_RUN.format(out=tmp_path / "runs").replace(
        "method: {kind: offline, terms: [{loss: kd, temperature: 2.0, alpha: 0.5}]}", f"method: {KINDS[kind]}"
    )
    if kind == "self_distill":
        text = text.replace("teacher: {model: mlp, args: {hidden: [32]}}\n", "")
    if kind == "born_again":  # generations of the teacher's architecture, no student alone
        text = text.replace("student: {model: mlp, args: {hidden: [8]}}", "student: {model: mlp, args: {hidden: [32]}}")
        text += "scratch: false\n"
    config = write_config(tmp_path / "c.yaml", text)
    assert main(["train", str(config), "-q"]) == 0
    run_dir = tmp_path / "runs" / "tiny"
    assert main(["report", str(run_dir), "-q"]) == 0
    markdown = (run_dir / "report.md").read_text()
    rows = [line for line in markdown.splitlines() if line.startswith("| ") and "| PyTorch |" in line]
    names = [_cells(line)[0] for line in rows]
    assert len(names) == len(set(names)) * (1 + (kind != "self_distill"))  # the ratio table repeats each model
    assert ("Each against the teacher" in markdown) == (kind != "self_distill")
    if kind == "born_again":
        assert "generation 2" not in names  # the last generation is the student, shown once
        assert "ensemble of the teacher and every generation" in markdown
