"""distill report of a language-model run: perplexities as summary.json holds them, the verdict, what each model
writes after the same held-out prompts, what generating costs (PyTorch with its key-value cache, ONNX Runtime
without), and the training curves; in report.html and report.md alike."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import torch

from conftest import write_config
from distill.cli import main
from distill.data.text import UNLABELLED
from distill.export import onnx_available
from distill.models.gpt import GPT
from distill.report import figures, lm_document
from distill.report.blocks import Samples, markdown, to_html
from distill.report.evidence import Curve
from distill.report.lm_evidence import _prompt_end, _token_seconds

PNG = b"\x89PNG\r\n\x1a\n"
MODELS = ("teacher", "student alone", "student (distilled)")  # as summary.json lists them
COLUMNS = ("held-out text", "teacher", "student (distilled)", "student alone")  # of each prompt's completions

# Lines of code-like text with <, > and & in them: what the report shows of it must come out escaped.
TEXT = "".join(
    f'    if count{i % 7} < limit and flags & {i % 5}: return "<b>{word}</b>" + name[{i % 3}:]\n'
    for i, word in enumerate(["alpha", "beta", "gamma", "delta", "omega", "sigma"] * 18)
)

LM_RUN = """\
task: lm
name: x
out_dir: {out}
seeds: [0]
data: {{path: {data}, tokenizer: char, context: 32, val_fraction: 0.1, test_fraction: 0.1, batch_size: 8}}
teacher: {{model: gpt, args: {{layers: 1, heads: 2, width: 16}}, epochs: 1}}
student: {{model: gpt, args: {{layers: 1, heads: 1, width: 8}}}}
method: {{kind: token, alpha: 0.5}}
train: {{epochs: 1, optimizer: adamw, lr: 0.003, progress: false}}
"""


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny LM run, its student exported to ONNX fp32 and int8 (where onnx is installed), then reported."""
    folder = tmp_path_factory.mktemp("report-lm")
    (folder / "text.txt").write_text(TEXT)
    config = write_config(folder / "x.yaml", LM_RUN.format(out=folder / "runs", data=folder / "text.txt"))
    assert main(["train", str(config), "-q"]) == 0
    run_dir = folder / "runs" / "x"
    if onnx_available():
        assert main(["export", str(run_dir), "--int8", "-q"]) == 0
    assert main(["report", str(run_dir), "-q"]) == 0
    return run_dir


def _text(html: str) -> str:
    return re.sub(r"<[^>]+>", " ", re.sub(r"<(script|style)>.*?</\1>", "", html, flags=re.S))


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip("|").split("|")] if line.startswith("| ") else []


def _printed(row: dict) -> tuple[str, str]:
    """A summary row's val and test perplexity as the terminal prints them."""
    test = f"{row['test_perplexity']:.3f}"
    if row["seeds"] > 1:
        test += f" ±{row['test_perplexity_std']:.3f}"
    return f"{row['val_perplexity']:.3f}", test


@pytest.mark.e2e
def test_the_html_holds_each_perplexity_of_the_summary_and_the_verdict(run_dir):
    html = (run_dir / "report.html").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    for name, shown in zip(("teacher", "scratch", "student"), MODELS, strict=True):
        val, test = _printed(summary[name])
        assert f"<tr><td>{shown}</td><td>1</td><td>{val}</td><td>{test}</td>" in html
    text = _text(html)
    diagnosis = summary["diagnosis"]
    low, high = diagnosis["interval"]
    assert f"by {diagnosis['margin']:+.4f} nats per token on test (95% interval {low:+.4f} to {high:+.4f}" in text
    assert text.index("Diagnosis") < text.index("The models on the test text") < text.index("The payoff")


@pytest.mark.e2e
def test_the_html_shows_three_completions_per_held_out_prompt_escaped(run_dir):
    html = (run_dir / "report.html").read_text()
    samples = re.findall(r"<table class=samples>(.*?)</table>", html, flags=re.S)
    assert len(samples) >= 3
    for table in samples:
        assert tuple(re.findall(r"<th>(.*?)</th>", table)) == COLUMNS
        assert len(re.findall(r"<td><pre>", table)) == 4
    assert len(re.findall(r"<pre class=prompt>", html)) == len(samples)
    assert "<b>" not in html and ("&lt;" in html or "&amp;" in html)  # the text's markup shown, not applied


@pytest.mark.e2e
def test_the_html_shows_what_generating_costs(run_dir):
    text = _text((run_dir / "report.html").read_text())
    for column in ("params", "size", "peak memory", "ms/token b=1", "p95", "tokens/s b=8"):
        assert column in text
    numbers = r"[\d,]+ +[\d.]+ K?B +{memory} +[\d.]+ ms +[\d.]+ ms +[\d,]+"  # params, size, ..., tokens/s
    for name in MODELS:
        cached = rf"{re.escape(name)} +PyTorch \(key-value cache\) +"
        assert re.search(cached + numbers.format(memory=r"[\d.]+ K?B"), text)
    if onnx_available():
        for runtime in ("ONNX Runtime fp32", "ONNX Runtime int8"):
            uncached = rf"student \(distilled\) +{runtime} \(no cache: a full forward per token\) +"
            assert re.search(uncached + numbers.format(memory="-"), text)  # no allocation record: no peak
    assert "thread" in text and "key-value cache" in text  # on what and how it was timed


@pytest.mark.e2e
def test_the_curves_are_inside_and_nothing_loads_from_outside(run_dir):
    html = (run_dir / "report.html").read_text()
    images = re.findall(r'<img src="([^"]+)" alt="([^"]+)"', html)
    assert [alt for _, alt in images] == [f"training curves of {stage}" for stage in ("teacher", "scratch", "student")]
    assert all(src.startswith("data:image/png;base64,") for src, _ in images)
    assert not re.search(r"(src|href)=\"(https?:|//|file:)", html)


@pytest.mark.e2e
def test_the_markdown_says_the_same(run_dir):
    markdown_text = (run_dir / "report.md").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    table = {cells[0]: cells for line in markdown_text.splitlines() if len(cells := _cells(line)) == 5}
    for name, shown in zip(("teacher", "scratch", "student"), MODELS, strict=True):
        assert table[shown][2:4] == list(_printed(summary[name]))
    prompts = markdown_text.count("**Prompt ")
    assert prompts >= 3
    for label in ("held-out text", *MODELS):
        assert markdown_text.count(f"_{label}:_") == prompts
    assert re.search(r"\| student \(distilled\) \| PyTorch \(key-value cache\) \|", markdown_text)
    links = re.findall(r"!\[[^]]*\]\(([^)]+)\)", markdown_text)
    assert {Path(link).name for link in links} == {f"curves_{s}.png" for s in ("teacher", "scratch", "student")}
    for link in links:
        assert (run_dir / link).read_bytes().startswith(PNG)


# --- bad input -------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_an_unfinished_run_is_one_line_and_nothing_is_written(run_dir, tmp_path, capsys):
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    assert main(["report", str(unfinished)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no summary.json" in err and "--resume" in err
    (unfinished / "summary.json").write_text((run_dir / "summary.json").read_text())  # but no model saved
    assert main(["report", str(unfinished)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no finished teacher and student" in err
    assert sorted(p.name for p in unfinished.iterdir()) == ["config.yaml", "summary.json"]


# --- the parts -------------------------------------------------------------------------------------------------


def test_samples_are_escaped_in_html_and_fenced_in_markdown():
    block = Samples("Prompt 1", 'if a < b:\n    print("<i>', [("teacher", 'x & y</i>")\n```\n'), ("student", "")])
    html = to_html("run", [block])
    assert "<i>" not in html and "&lt;i&gt;" in html and "x &amp; y&lt;/i&gt;" in html
    assert "<span class=prompt>    print(&quot;&lt;i&gt;</span>" in html  # the prompt's last line leads each column
    text = markdown("run", [block])
    assert '````text\nx & y</i>")\n```\n\n````' in text  # a fence longer than the ``` inside


def test_perplexities_of_several_seeds_show_their_spread():
    row = {
        "val_perplexity": 3.14159,
        "test_perplexity": 2.71828,
        "seeds": 3,
        "test_perplexity_std": 0.0512,
        "params": 1,
    }
    summary = {"models": ["student"], "student": row, "test_tokens": 10}
    table = lm_document._perplexity(summary)[1]
    assert table.rows == [["student (distilled)", "3", "3.142", "2.718 ±0.051", "1"]]


def test_a_prompt_ends_where_the_counted_tokens_begin():
    assert _prompt_end(torch.tensor([UNLABELLED, UNLABELLED, 5, 6, UNLABELLED]), 10) == 2  # a JSONL line: its prompt
    assert _prompt_end(torch.tensor([4, 5, 6, 7]), 3) == 3  # running text: every token counts


def test_each_new_token_after_the_first_is_timed_once():
    torch.manual_seed(0)
    model = GPT(11, context=16, layers=1, heads=1, width=8).eval()
    seconds = _token_seconds(model, torch.zeros(1, 4, dtype=torch.long), 6)
    assert len(seconds) % 5 == 0 and len(seconds) >= 5 and min(seconds) > 0  # 5 gaps a call, a call at least
    assert not model.head._forward_hooks  # the hook is gone


def test_loss_curves_alone_take_one_panel():
    from PIL import Image

    losses = Curve("student", [1, 2], {"train/loss": [2.0, 1.5], "val/loss": [2.1, None]})
    scored = Curve("student", [1, 2], {"train/loss": [2.0, 1.5], "val/accuracy": [0.5, 0.6]})
    one, two = (Image.open(io.BytesIO(figures.curves(curve))) for curve in (losses, scored))
    assert one.width < two.width
