"""distill export and distill eval PATH of language-model runs: a Hugging Face student as the folder transformers
loads, our GPT as ONNX, TorchScript or torch.export; each equal to the run's student on its test sequences and
evaluated to the summary's test perplexity. Tiny models and tokenizers built here (no downloads)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch

from conftest import write_config
from distill.cli import main
from distill.pipeline import open_run

transformers = pytest.importorskip("transformers")

TEXT = "the quick brown fox jumps over the lazy dog. a stitch in time saves nine; " * 40
END = "<|endoftext|>"

LM_RUN = """\
task: lm
name: {name}
out_dir: {out}
seeds: [0]
data: {{path: {data}, tokenizer: {tokenizer}, context: 32, val_fraction: 0.1, test_fraction: 0.1, batch_size: 8}}
teacher: {teacher}
student: {student}
method: {{kind: token, divergence: forward_kl, alpha: 0.5}}
train: {{epochs: 1, optimizer: adamw, lr: 0.003, progress: false}}
"""
GPT_MODELS = {
    "teacher": "{model: gpt, args: {layers: 1, heads: 2, width: 16}, epochs: 1}",
    "student": "{model: gpt, args: {layers: 1, heads: 1, width: 8}}",
}
FILES = {"onnx": "student.onnx", "torchscript": "student.torchscript.pt", "torch-export": "student.pt2"}


def _byte_level_bpe(text: str) -> transformers.PreTrainedTokenizerFast:
    """A GPT-2 style tokenizer (byte-level BPE) trained on `text`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    tokenizer.train_from_iterator(
        [text], trainers.BpeTrainer(vocab_size=300, special_tokens=[END], initial_alphabet=alphabet)
    )
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer, eos_token=END)


def _gpt2(folder: Path, tokenizer: transformers.PreTrainedTokenizerFast, width: int, seed: int) -> Path:
    """A one-layer GPT-2 of `width` saved with its tokenizer, as a Hugging Face checkpoint is."""
    end = tokenizer.convert_tokens_to_ids(END)
    config = transformers.GPT2Config(
        vocab_size=len(tokenizer), n_positions=64, n_embd=width, n_layer=1, n_head=2, bos_token_id=end, eos_token_id=end
    )
    torch.manual_seed(seed)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _train(folder: Path, name: str, **fields: str) -> Path:
    text = LM_RUN.format(name=name, out=folder / "runs", data=folder / "text.txt", **fields)
    assert main(["train", str(write_config(folder / f"{name}.yaml", text)), "-q"]) == 0
    return folder / "runs" / name


@pytest.fixture(scope="module")
def hf_folders(tmp_path_factory) -> Path:
    """text.txt, a byte-level BPE tokenizer trained on it, and a GPT-2 teacher and student that use it."""
    folder = tmp_path_factory.mktemp("hf-export")
    (folder / "text.txt").write_text(TEXT)
    tokenizer = _byte_level_bpe(TEXT)
    tokenizer.save_pretrained(folder / "tokenizer")
    _gpt2(folder / "teacher", tokenizer, width=32, seed=0)
    _gpt2(folder / "student", tokenizer, width=16, seed=1)
    return folder


def _hf_fields(folder: Path, student: str = "") -> dict[str, str]:
    return {
        "tokenizer": f"'hf:{folder / 'tokenizer'}'",
        "teacher": f"{{model: 'hf:{folder / 'teacher'}'}}",
        "student": f"{{model: 'hf:{folder / 'student'}'{student}}}",
    }


@pytest.fixture(scope="module")
def hf_run(hf_folders) -> Path:
    return _train(hf_folders, "hf", **_hf_fields(hf_folders))


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("gpt-export")
    (folder / "text.txt").write_text(TEXT)
    return _train(folder, "gpt", tokenizer="char", **GPT_MODELS)


def _summary_perplexity(run_dir: Path) -> str:
    """The student's test perplexity as the run's table prints it."""
    return f"{json.loads((run_dir / 'summary.json').read_text())['student']['test_perplexity']:.3f}"


def _assert_equal_to_the_student(model: torch.nn.Module, run_dir: Path) -> None:
    """`model`'s logits (a transformers model) equal the run's student's on every batch of its test split."""
    run = open_run(run_dir)
    student = run.net("student").eval()
    for batch in run.exp.test_loader:
        with torch.inference_mode():
            got, expected = model(input_ids=batch["input"]).logits, student(batch["input"])
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() <= 1e-4


# --- a Hugging Face student ------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_a_hugging_face_student_is_a_folder_transformers_loads_equal_to_the_run(hf_run, capsys):
    assert main(["export", str(hf_run)]) == 0
    assert "transformers" in capsys.readouterr().out
    folder = hf_run / "export" / "student"
    _assert_equal_to_the_student(transformers.AutoModelForCausalLM.from_pretrained(folder).eval(), hf_run)
    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)  # the run's tokenizer ships beside the model
    assert tokenizer.encode(TEXT[:60]) == open_run(hf_run).exp.tokenizer.encode(TEXT[:60])
    recorded = json.loads((hf_run / "export" / "export.json").read_text())
    assert recorded["task"] == "lm" and recorded["hf"]["file"] == "student/"
    assert recorded["hf"]["max_abs_diff"] <= 1e-4 and recorded["hf"]["top1_agreement"] == 1.0
    assert f"{recorded['hf']['test_perplexity']:.3f}" == _summary_perplexity(hf_run)
    meta = json.loads((folder / "distill.json").read_text())
    assert meta["config"] == (hf_run / "config.yaml").read_text() and meta["run"] == "hf"
    assert main(["eval", str(folder)]) == 0
    assert f"test perplexity {_summary_perplexity(hf_run)} on the " in capsys.readouterr().out
    assert main(["eval", str(hf_run), "-q"]) == 0  # the run folder itself is still re-measured, not exported


@pytest.mark.e2e
def test_a_lora_student_ships_merged(hf_folders, capsys):
    pytest.importorskip("peft")
    lora = ", lora: {r: 2, targets: [c_attn, c_fc]}"
    run_dir = _train(hf_folders, "lora", **_hf_fields(hf_folders, lora))
    assert main(["export", str(run_dir), "--format", "hf", "-q"]) == 0
    folder = run_dir / "export" / "student"
    from safetensors.torch import load_file

    assert not any("lora" in key for key in load_file(folder / "model.safetensors"))  # one plain model
    _assert_equal_to_the_student(transformers.AutoModelForCausalLM.from_pretrained(folder).eval(), run_dir)
    capsys.readouterr()
    assert main(["eval", str(folder)]) == 0
    assert f"test perplexity {_summary_perplexity(run_dir)} on the " in capsys.readouterr().out


# --- our GPT ---------------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_gpt_as_onnx_has_dynamic_batch_and_sequence_axes_and_equals_the_student(gpt_run, capsys):
    assert main(["export", str(gpt_run)]) == 0
    assert "ONNX Runtime fp32" in capsys.readouterr().out
    path = gpt_run / "export" / "student.onnx"
    model = onnx.load(str(path))
    assert all(dim.dim_param for dim in model.graph.input[0].type.tensor_type.shape.dim)  # (batch, sequence)
    meta = {p.key.removeprefix("distill.json."): p.value for p in model.metadata_props}
    assert meta["task"] == "lm" and meta["config"] == (gpt_run / "config.yaml").read_text()
    assert meta["alphabet"] == "".join(sorted(set(TEXT))) and json.loads(meta["context"]) == 32
    run = open_run(gpt_run)
    ids, student = run.exp.splits.test.ids, run.net("student").eval()
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for inputs in (ids, ids[:1], ids[:3, :7]):  # the whole split, one sequence, shorter sequences
        with torch.inference_mode():
            expected = student(inputs)
        got = torch.from_numpy(session.run(None, {"input": inputs.numpy()})[0])
        assert got.shape == expected.shape and (got - expected).abs().max().item() <= 1e-4
    recorded = json.loads((gpt_run / "export" / "export.json").read_text())["onnx"]
    assert recorded["max_abs_diff"] <= 1e-4 and recorded["top1_agreement"] == 1.0
    assert f"{recorded['test_perplexity']:.3f}" == _summary_perplexity(gpt_run)


@pytest.mark.e2e
@pytest.mark.parametrize("fmt", list(FILES))
def test_an_exported_gpt_evaluates_to_the_summarys_test_perplexity(gpt_run, fmt, capsys):
    assert main(["export", str(gpt_run), "--format", fmt, "-q"]) == 0
    capsys.readouterr()
    assert main(["eval", str(gpt_run / "export" / FILES[fmt])]) == 0
    out = capsys.readouterr().out
    assert f"test perplexity {_summary_perplexity(gpt_run)} on the " in out and "of run gpt" in out


@pytest.mark.e2e
def test_gpt_int8_is_scored_beside_fp32(gpt_run, capsys):
    assert main(["export", str(gpt_run), "--int8"]) == 0
    assert "ONNX Runtime int8" in capsys.readouterr().out
    recorded = json.loads((gpt_run / "export" / "export.json").read_text())
    row = recorded["int8"]
    assert row["test_perplexity_change"] == pytest.approx(row["test_perplexity"] - recorded["onnx"]["test_perplexity"])
    assert row["size_bytes"] < recorded["onnx"]["size_bytes"]
    assert main(["eval", str(gpt_run / "export" / "student.int8.onnx"), "-q"]) == 0


# --- bad input -------------------------------------------------------------------------------------------------


def _one_line(capsys, expected: str) -> None:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err


def test_a_folder_that_is_neither_a_run_nor_an_export(tmp_path, capsys):
    assert main(["export", str(tmp_path)]) == 2
    _one_line(capsys, "no config.yaml")
    assert main(["eval", str(tmp_path)]) == 2
    _one_line(capsys, "not a run directory")
    (tmp_path / "distill.json").write_text("{not json")
    assert main(["eval", str(tmp_path)]) == 2
    _one_line(capsys, "distill.json: damaged")
    assert not (tmp_path / "export").exists()


@pytest.mark.e2e
def test_an_unfinished_run_is_refused_and_nothing_written(gpt_run, tmp_path, capsys):
    copy = shutil.copytree(gpt_run, tmp_path / "gpt", ignore=shutil.ignore_patterns("export", "student.safetensors"))
    assert main(["export", str(copy)]) == 2
    _one_line(capsys, "no finished teacher and student")
    assert not (copy / "export").exists()


@pytest.mark.e2e
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--format", "torchscript"], "ships as its save_pretrained folder (--format hf), not as torchscript"),
        (["--int8"], "export it without --int8"),
    ],
)
def test_what_a_hugging_face_student_cannot_be_is_one_line(hf_run, tmp_path, args, expected, capsys):
    copy = shutil.copytree(hf_run, tmp_path / "hf", ignore=shutil.ignore_patterns("export"))
    assert main(["export", str(copy), *args]) == 2
    _one_line(capsys, expected)
    assert not (copy / "export").exists()


@pytest.mark.e2e
def test_a_hugging_face_student_on_a_char_tokenizer_is_refused(hf_run, tmp_path, capsys):
    copy = shutil.copytree(hf_run, tmp_path / "hf", ignore=shutil.ignore_patterns("export"))
    config = copy / "config.yaml"
    config.write_text(config.read_text().replace(f"hf:{hf_run.parent.parent / 'tokenizer'}", "char"))
    assert "tokenizer: char" in config.read_text()
    assert main(["export", str(copy)]) == 2
    _one_line(capsys, "data.tokenizer is 'char', which transformers cannot load")
    assert not (copy / "export").exists()


@pytest.mark.e2e
def test_gpt_bad_formats_and_parity_past_the_tolerance(gpt_run, capsys):
    assert main(["export", str(gpt_run), "--format", "hf"]) == 2
    _one_line(capsys, "use --format onnx, torchscript or torch-export")
    main(["export", str(gpt_run), "-q"])
    good = gpt_run / "export" / "student.onnx"
    before = good.read_bytes()
    capsys.readouterr()
    assert main(["export", str(gpt_run), "--atol", "1e-12"]) == 2
    _one_line(capsys, "above --atol 1e-12")
    assert (gpt_run / "export" / "student.onnx.failed").exists() and good.read_bytes() == before
