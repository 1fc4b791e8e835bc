"""KV-cache sampling and `distill generate`: the teacher's completions, resumable after a kill, then a
sequence-level distillation run on them."""

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

from conftest import perplexity_on_test, write_config
from distill.cli import main
from distill.models.gpt import GPT

TEXT = "to be or not to be, that is the question. " * 60


def test_cached_sampling_equals_recomputing_every_step():
    torch.manual_seed(0)
    model = GPT(11, context=32, layers=2, heads=2, width=16).eval()
    prompts = torch.randint(11, (3, 5))
    ids = prompts
    for _ in range(10):  # greedy, the whole sequence through the model each time
        ids = torch.cat([ids, model(ids)[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(model.generate(prompts, 10, temperature=0), ids[:, 5:])
    assert torch.equal(model.generate(prompts, 10, top_k=1), ids[:, 5:])  # top-1 sampling is greedy
    seeded = [model.generate(prompts, 10, generator=torch.Generator().manual_seed(3)) for _ in range(2)]
    assert torch.equal(*seeded)
    with pytest.raises(ValueError, match="pass the model's context 32"):
        model.generate(prompts, 28)


GENERATE = """\
task: lm
name: teacher-run
out_dir: {out}
data: {{path: {text}, context: 48, val_fraction: 0.1, test_fraction: 0.1, batch_size: 8}}
teacher: {{model: gpt, args: {{layers: 1, heads: 2, width: 16}}, weights: {weights}}}
student: {{model: gpt, args: {{layers: 1, heads: 1, width: 8}}}}
train: {{epochs: 1, optimizer: adamw, lr: 0.01, progress: false}}
generate: {{prompts: {prompts}, output: {output}, max_new_tokens: 12, temperature: 0.8, batch_size: {batch}}}
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A trained tiny teacher, its text, and a prompt file of 300 prompts of a few lengths."""
    root = tmp_path_factory.mktemp("generate")
    (root / "text.txt").write_text(TEXT)
    config = write_config(
        root / "train.yaml",
        GENERATE.format(
            out=root / "runs", text=root / "text.txt", weights="null", prompts="p", output="o", batch=4
        ).replace("weights: null", "epochs: 1"),
    )
    assert main(["train", str(config), "--set", "scratch=false", "-q"]) == 0
    words = TEXT.split()
    lines = [json.dumps({"id": f"p{i}", "prompt": " ".join(words[i % 20 : i % 20 + 1 + i % 3])}) for i in range(300)]
    (root / "prompts.jsonl").write_text("\n".join(lines) + "\n")
    return {"root": root, "weights": root / "runs" / "teacher-run" / "teacher.safetensors"}


def _config(world: dict[str, Path], tmp_path: Path, batch: int = 4) -> Path:
    root = world["root"]
    text = GENERATE.format(
        out=tmp_path / "runs",
        text=root / "text.txt",
        weights=world["weights"],
        prompts=root / "prompts.jsonl",
        output=tmp_path / "teacher.jsonl",
        batch=batch,
    )
    return write_config(tmp_path / "generate.yaml", text)


def _ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


@pytest.mark.e2e
def test_every_prompt_gets_one_completion_and_a_student_learns_them(world, tmp_path, capsys):
    config = _config(world, tmp_path)
    assert main(["generate", str(config)]) == 0
    assert "wrote 300 completions" in capsys.readouterr().out
    output = tmp_path / "teacher.jsonl"
    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(line["id"] for line in lines) == sorted(f"p{i}" for i in range(300))
    assert all(len(line["completion"]) == 12 for line in lines)  # 12 characters: a char tokenizer
    assert main(["generate", str(config)]) == 0  # nothing left to do
    assert "wrote 0 completions" in capsys.readouterr().out
    sequence_kd = ["--set", f"data.path={output}", "--set", "method.alpha=1", "--set", "name=seqkd", "-q"]
    assert main(["train", str(config), *sequence_kd]) == 0  # the student learns the teacher's completions


@pytest.mark.e2e
def test_a_killed_generate_resumes_without_duplicated_or_missing_lines(world, tmp_path):
    config = _config(world, tmp_path, batch=1)
    output = tmp_path / "teacher.jsonl"
    command = [sys.executable, "-m", "distill", "-q", "generate", str(config)]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and (not output.exists() or output.read_text().count("\n") < 20):
        assert run.poll() is None, run.stderr.read()
        time.sleep(0.02)
    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    written = output.read_text().count("\n")
    assert 20 <= written < 300
    with open(output, "a") as f:
        f.write('{"id": "p9')  # a line torn by the kill
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    ids = _ids(output)
    assert len(ids) == len(set(ids)) == 300


@pytest.mark.e2e
def test_a_file_from_another_teacher_or_setting_is_refused(world, tmp_path, capsys):
    config = _config(world, tmp_path)
    assert main(["generate", str(config), "-q"]) == 0
    before = (tmp_path / "teacher.jsonl").read_bytes()
    assert main(["generate", str(config), "--set", "generate.temperature=0.5"]) == 2
    err = capsys.readouterr().err
    assert "written by another teacher, tokenizer, prompt file or sampling setting" in err
    assert (tmp_path / "teacher.jsonl").read_bytes() == before


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ('{"id": 1}\n', "prompts.jsonl:1: no 'prompt' string"),
        ('{"prompt": "to"}\n{"prompt": "be", "id": 1}\n', "prompts.jsonl:2: id '1' again"),
        ('{"prompt": "' + "to be " * 10 + '"}\n', "prompts.jsonl:1: 60 prompt tokens"),
    ],
)
def test_bad_prompts_are_one_line(world, tmp_path, lines, expected, capsys):
    (tmp_path / "prompts.jsonl").write_text(lines)
    config = _config(world, tmp_path)
    assert main(["generate", str(config), "--set", f"generate.prompts={tmp_path / 'prompts.jsonl'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err
    assert not (tmp_path / "teacher.jsonl").exists()


# --- on-policy distillation ------------------------------------------------------------------------------------


def _qa(path: Path) -> Path:
    words = TEXT.split()
    lines = [
        {"prompt": " ".join(words[i % 10 : i % 10 + 1 + i % 2]) + " ", "completion": words[(i + 3) % 10]}
        for i in range(60)
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    return path


def test_on_policy_batches_mask_the_prompt_and_the_teacher_grades_the_students_tokens(tmp_path):
    from distill.data.text import UNLABELLED, CharTokenizer, text_splits
    from distill.losses.token_kd import TokenKD
    from distill.modules.token import OnPolicy, TokenDistiller

    path = _qa(tmp_path / "qa.jsonl")
    tokenizer = CharTokenizer.fit(TEXT)
    data = text_splits(path, tokenizer, context=24, val_fraction=0.2, test_fraction=0.2, seed=0).train
    batch = {"input": data.ids[:8], "label": data.labels[:8], "index": torch.arange(8)}
    torch.manual_seed(0)
    student, teacher = (GPT(tokenizer.vocab_size, context=24, layers=1, heads=1, width=w) for w in (8, 16))
    distiller = TokenDistiller(student, teacher, TokenKD("reverse_kl"), vocab=tokenizer.vocab_size, fused=True)
    on_policy = OnPolicy(
        distiller, student_share=1.0, temperature=1.0, max_new_tokens=5, top_k=None, pad_id=0, context=24
    )
    torch.manual_seed(1)
    sampled = on_policy.sampled(batch)
    prompts = (batch["label"] != UNLABELLED).int().argmax(1)
    for row, length in enumerate(prompts.tolist()):
        ids, labels = sampled["input"][row], sampled["label"][row]
        assert torch.equal(ids[:length], batch["input"][row, :length])  # the prompt, kept
        assert (labels[:length] == UNLABELLED).all()  # and masked
        assert torch.equal(labels[length : length + 5], ids[length : length + 5])  # the student's 5 tokens count
        assert (labels[length + 5 :] == UNLABELLED).all()
    on_policy.train()
    torch.manual_seed(2)
    got = on_policy(batch)
    torch.manual_seed(2)  # the same draws (the coin, then the samples): the loss is the distiller's on them
    torch.rand(())
    expected = distiller(on_policy.sampled(batch))
    torch.testing.assert_close(got["loss"], expected["loss"])
    assert got["tokens"].item() == 8 * 5


@pytest.mark.e2e
def test_an_on_policy_run_trains_from_a_config(world, tmp_path, capsys):
    text = GENERATE.format(
        out=tmp_path / "runs", text=_qa(tmp_path / "qa.jsonl"), weights="null", prompts="p", output="o", batch=4
    ).replace("weights: null", "epochs: 1")
    config = write_config(
        tmp_path / "c.yaml", text + "method: {kind: on_policy, student_share: 0.5, max_new_tokens: 4}\n"
    )
    assert main(["train", str(config), "-q"]) == 0
    run_dir = tmp_path / "runs" / "teacher-run"
    summary = json.loads((run_dir / "summary.json").read_text())
    student = run_dir / "student.safetensors"
    measured = perplexity_on_test(student, tmp_path / "qa.jsonl", 48, layers=1, heads=1, width=8)  # completions
    assert summary["student"]["test_perplexity"] == pytest.approx(measured, rel=1e-5)
    plain = write_config(
        tmp_path / "t.yaml",
        text.replace(str(tmp_path / "qa.jsonl"), str(world["root"] / "text.txt")) + "method: {kind: on_policy}\n",
    )
    assert main(["train", str(plain)]) == 2
    assert "method.kind on_policy" in capsys.readouterr().err
    assert main(["train", str(config), "--set", "method.max_new_tokens=48", "--set", "name=x"]) == 2
    assert "method.max_new_tokens: 48 leaves no room for a prompt in data.context 48" in capsys.readouterr().err


def test_a_sample_counts_through_its_end_token():
    from distill.modules.token import until_end

    assert until_end([5, 6, 2, 2, 2], end_id=2) == 3  # the end token counts; the padding after it does not
    assert until_end([5, 6, 7], end_id=2) == 3
    assert until_end([5, 6, 7], end_id=None) == 3


@pytest.mark.e2e
def test_generate_refuses_an_untrained_teacher_and_a_damaged_output(world, tmp_path, capsys):
    config = _config(world, tmp_path)
    assert main(["generate", str(config), "--set", "teacher.weights=null"]) == 2
    assert "needs a trained teacher" in capsys.readouterr().err
    assert main(["generate", str(config), "-q"]) == 0
    with open(tmp_path / "teacher.jsonl", "a") as f:
        f.write("not json\n")
    assert main(["generate", str(config)]) == 2
    assert "teacher.jsonl: line 301 is damaged" in capsys.readouterr().err
