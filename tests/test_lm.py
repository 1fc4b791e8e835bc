"""Language models: our GPT, text and JSONL data, the vocabulary check, accumulation in the loop, and a whole
`task: lm` run from the command line on tiny models built here (no downloads)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from conftest import write_config
from distill.cli import main
from distill.data.text import UNLABELLED, CharTokenizer, TokenSequences, text_splits
from distill.errors import DistillError
from distill.losses.token_kd import TokenKD
from distill.models.gpt import GPT
from distill.models.lm import check_vocabularies
from distill.modules.token import NextToken, TokenDistiller
from distill.train import TrainOptions, fit
from distill.weights import load_weights

TEXT = "the quick brown fox jumps over the lazy dog. " * 40
VOCAB = len(set(TEXT))  # 28 characters: a uniform guess scores a perplexity of 28


def test_gpt_hidden_states_and_head_give_its_logits_and_it_is_causal():
    torch.manual_seed(0)
    model = GPT(11, context=16, layers=2, heads=2, width=8).eval()
    ids = torch.randint(11, (2, 10))
    logits = model(ids)
    assert logits.shape == (2, 10, 11)
    torch.testing.assert_close(model.head(model.hidden(ids)), logits)
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 11
    torch.testing.assert_close(model(changed)[:, :6], logits[:, :6])  # the future does not leak back
    with pytest.raises(ValueError, match="longer than the model's context 16"):
        model(torch.zeros(1, 17, dtype=torch.long))


def test_text_is_cut_into_sequences_and_split_contiguously(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    tokenizer = CharTokenizer.fit(TEXT)
    splits = text_splits(tmp_path / "t.txt", tokenizer, context=32, val_fraction=0.1, test_fraction=0.1, seed=0)
    rows = len(TEXT) // 32
    assert len(splits.train) + len(splits.val) + len(splits.test) == rows
    assert tokenizer.decode(splits.test.ids[-1].tolist()) == TEXT[(rows - 1) * 32 : rows * 32]  # the text's end
    assert splits.train.tokens == len(splits.train) * 31


def test_jsonl_counts_the_completion_only(tmp_path):
    lines = [{"prompt": "2+2=", "completion": "4"}, {"prompt": "say hi: ", "completion": "hi there"}] * 5
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    tokenizer = CharTokenizer.fit("".join(line["prompt"] + line["completion"] for line in lines))
    splits = text_splits(tmp_path / "qa.jsonl", tokenizer, context=20, val_fraction=0.2, test_fraction=0.2, seed=0)
    for part in (splits.train, splits.val, splits.test):
        for ids, labels in zip(part.ids, part.labels, strict=True):
            counted = tokenizer.decode(ids[labels != UNLABELLED].tolist())
            assert counted in ("4", "hi there")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ('{"prompt": "a", "completion": "b"}\n{"prompt": "a"}\n', "qa.jsonl:2: no 'completion'"),
        ('{"prompt": "a", "completion": "b"}\nnot json\n', "qa.jsonl:2: not valid JSON"),
        ('{"prompt": "a", "completion": "' + "b" * 40 + '"}\n', "qa.jsonl:1: 41 tokens, longer than the model's"),
        ("", "the file is empty"),
        ('{"prompt": "a", "completion": ""}\n' * 10, "part has no completion token to count"),
        (b"caf\xe9", "not UTF-8 text"),
    ],
)
def test_bad_text_data_is_one_line_naming_the_line(tmp_path, content, expected, capsys):
    (tmp_path / "qa.jsonl").write_bytes(content if isinstance(content, bytes) else content.encode())
    config = write_config(tmp_path / "lm.yaml", LM_RUN.format(out=tmp_path / "runs", data=tmp_path / "qa.jsonl"))
    assert main(["train", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err
    assert not (tmp_path / "runs").exists()


def test_a_char_tokenizer_fitted_on_another_file(tmp_path):
    from distill.models.lm import tokenizer_for

    (tmp_path / "wide.txt").write_text("abcdefgh")
    assert tokenizer_for(f"char:{tmp_path / 'wide.txt'}", "abc").vocab_size == 8
    assert tokenizer_for("char", "abc").vocab_size == 3


def test_the_vocabulary_check():
    one = CharTokenizer("abc")
    assert check_vocabularies(one, CharTokenizer("abc"), one, 3, 3, shared=False) == 3
    with pytest.raises(DistillError, match="the data's tokenizer and the teacher's differ"):
        check_vocabularies(one, one, CharTokenizer("abd"), 3, 3, shared=False)
    with pytest.raises(DistillError, match="padded vocabularies. Set method.shared_vocab"):
        check_vocabularies(one, one, one, 5, 8, shared=False)
    assert check_vocabularies(one, one, one, 5, 8, shared=True) == 3  # the tokenizer's ids
    with pytest.raises(DistillError, match="fewer than the tokenizer's 4 tokens"):
        check_vocabularies(CharTokenizer("abcd"), CharTokenizer("abcd"), CharTokenizer("abcd"), 3, 8, shared=True)


# --- accumulation in the training loop -------------------------------------------------------------------------


def _uneven_sequences() -> TokenSequences:
    """Four sequences counting 15, 3, 9 and 1 tokens: batches of two differ in their count."""
    torch.manual_seed(0)
    ids = torch.randint(7, (4, 16))
    labels = ids.clone()
    for row, kept in enumerate((15, 3, 9, 1)):
        labels[row, : 16 - kept] = UNLABELLED
    return TokenSequences(ids, labels)


@pytest.mark.parametrize("distilled", [False, True])
def test_accumulating_two_batches_takes_the_step_of_their_union(distilled):
    data = _uneven_sequences()

    def one_step(batch_size: int, accumulate: int) -> torch.Tensor:
        torch.manual_seed(1)
        student = GPT(7, context=16, layers=1, heads=1, width=8)
        if distilled:
            torch.manual_seed(2)
            teacher = GPT(7, context=16, layers=1, heads=1, width=12)
            module = TokenDistiller(student, teacher, TokenKD("reverse_kl", alpha=0.3), vocab=7, fused=True)
        else:
            module = NextToken(student)
        options = TrainOptions(
            epochs=1,
            optimizer="sgd",
            momentum=0.0,
            weight_decay=0.0,
            lr=1.0,
            grad_accum=accumulate,
            schedule="constant",
            progress=False,
            monitor="val/loss",
        )
        fit(module, DataLoader(data, batch_size=batch_size), DataLoader(data, batch_size=4), options)
        return student.blocks[0].mlp[0].weight.detach().clone()

    whole, accumulated = one_step(4, 1), one_step(2, 2)
    torch.testing.assert_close(accumulated, whole, rtol=1e-5, atol=1e-6)


# --- a whole run -----------------------------------------------------------------------------------------------

LM_RUN = """\
task: lm
name: tiny-lm
out_dir: {out}
data: {{path: {data}, context: 32, val_fraction: 0.1, test_fraction: 0.1, batch_size: 8}}
teacher: {{model: gpt, args: {{layers: 1, heads: 2, width: 16}}, epochs: 2}}
student: {{model: gpt, args: {{layers: 1, heads: 1, width: 8}}}}
method: {{kind: token, divergence: reverse_kl}}
train: {{epochs: 1, optimizer: adamw, lr: 0.01, progress: false}}
"""


@pytest.fixture(scope="module")
def text_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("text") / "t.txt"
    path.write_text(TEXT * 3)
    return path


STUDENTS = ("scratch", "student")  # the student alone and the distilled one


@pytest.mark.e2e
@pytest.mark.parametrize("fused", [True, False])
def test_a_run_reports_perplexity_speed_and_a_verdict(tmp_path, text_file, fused, capsys):
    config = write_config(tmp_path / "lm.yaml", LM_RUN.format(out=tmp_path / "runs", data=text_file))
    assert main(["train", str(config), "--set", f"method.fused={str(fused).lower()}", "--set", "seeds=[0, 1]"]) == 0
    out = capsys.readouterr().out
    assert "test ppl" in out and "student (distilled)" in out and "diagnosis:" in out
    summary = json.loads((tmp_path / "runs" / "tiny-lm" / "summary.json").read_text())
    for name in ("teacher", "scratch", "student"):
        row = summary[name]
        assert 1 < row["test_perplexity"] < VOCAB and row["tokens_per_second"] > 0  # below a uniform guess's
    assert summary["teacher"]["test_perplexity"] < min(summary[name]["test_perplexity"] for name in STUDENTS)
    assert summary["student"]["seeds"] == 2 and len(summary["student"]["test_perplexities"]) == 2
    assert summary["student"]["params"] < summary["teacher"]["params"]
    diagnosis = summary["diagnosis"]
    low, high = diagnosis["interval"]
    assert low <= diagnosis["margin"] <= high
    assert diagnosis["verdict"] == ("helped" if low > 0 else "negative_transfer" if high < 0 else "no_difference")
    # every test sequence counts 31 tokens: the margin (nats per token) is the log-perplexities' difference
    log_ppl = {name: statistics.fmean(map(math.log, summary[name]["test_perplexities"])) for name in STUDENTS}
    assert diagnosis["margin"] == pytest.approx(log_ppl["scratch"] - log_ppl["student"], rel=1e-4)
    assert diagnosis["verdict"] == "helped"  # a teacher at a quarter of the student alone's perplexity
    metrics = (tmp_path / "runs" / "tiny-lm" / "student" / "metrics.jsonl").read_text()
    assert "train/kd" in metrics and "val/loss" in metrics
    assert main(["train", str(config)]) == 2  # a finished run is not overwritten
    assert "already holds a run" in capsys.readouterr().err
    again = ["--set", f"method.fused={str(fused).lower()}", "--set", "seeds=[0, 1]", "--resume", "-q"]
    assert main(["train", str(config), *again]) == 0  # every stage done: loaded, measured again
    resumed = json.loads((tmp_path / "runs" / "tiny-lm" / "summary.json").read_text())
    assert resumed["student"]["test_perplexities"] == summary["student"]["test_perplexities"]


@pytest.mark.e2e
def test_a_bfloat16_teacher_teaches(tmp_path, text_file):
    config = write_config(tmp_path / "lm.yaml", LM_RUN.format(out=tmp_path / "runs", data=text_file))
    assert main(["train", str(config), "--set", "teacher.dtype=bfloat16", "--set", "scratch=false", "-q"]) == 0
    summary = json.loads((tmp_path / "runs" / "tiny-lm" / "summary.json").read_text())
    assert 1 < summary["student"]["test_perplexity"] < VOCAB  # below a uniform guess's
    assert summary["teacher"]["test_perplexity"] < summary["student"]["test_perplexity"]  # measured in bfloat16


def test_a_context_longer_than_a_models_is_refused_before_anything_is_written(tmp_path, text_file, capsys):
    config = write_config(tmp_path / "lm.yaml", LM_RUN.format(out=tmp_path / "runs", data=text_file))
    small = "student.args={layers: 1, heads: 1, width: 8, context: 16}"
    assert main(["train", str(config), "--set", small]) == 2
    assert "data.context 32 is longer than student's context 16" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.e2e
def test_the_lm_demo_then_eval_report_and_export_agree_on_its_perplexities(tmp_path, capsys):
    small = [
        "teacher.args={layers: 1, heads: 2, width: 16}",
        "teacher.epochs=1",
        "train.epochs=1",
        "seeds=[0]",
        "data.path=stdlib:bisect,heapq",
        f"out_dir={tmp_path}",
    ]
    assert main(["demo", "--task", "lm", *[arg for s in small for arg in ("--set", s)]]) == 0
    out = capsys.readouterr().out
    assert "teacher" in out and "student alone" in out and "student (distilled)" in out and "tokens/s" in out
    assert "diagnosis: " in out and "report: wrote" in out
    run = tmp_path / "lm-demo"
    summary = json.loads((run / "summary.json").read_text())
    assert main(["eval", str(run)]) == 0  # re-measured: the same perplexities, as the table prints them
    evaluated = capsys.readouterr().out
    for name in ("teacher", "scratch", "student"):
        assert f"{summary[name]['test_perplexity']:.3f}" in evaluated
    html = (run / "report.html").read_text()
    assert f"{summary['student']['test_perplexity']:.3f}" in html and "What the models write" in html
    assert main(["export", str(run)]) == 0
    assert "max |diff|" in capsys.readouterr().out
    assert main(["eval", str(run / "export" / "student.onnx")]) == 0
    assert f"test perplexity {summary['student']['test_perplexity']:.3f}" in capsys.readouterr().out


def test_an_lm_config_key_misspelt_is_one_line(tmp_path, text_file, capsys):
    config = write_config(tmp_path / "lm.yaml", LM_RUN.format(out=tmp_path / "runs", data=text_file))
    assert main(["train", str(config), "--set", "method.divergense=tv"]) == 2
    err = capsys.readouterr().err  # the one error style of every task: the kind's keys, the closest first
    assert "method.divergense: not a key of method.kind 'token' (did you mean 'divergence'?)" in err
    assert main(["train", str(config), "--set", "method.divergence=kl"]) == 2
    assert "method.divergence" in capsys.readouterr().err


# --- Hugging Face models from a local folder --------------------------------------------------------------------


GPT_TEACHER = "teacher: {model: gpt, args: {layers: 1, heads: 2, width: 16}, epochs: 2}"


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory) -> Path:
    """A GPT-2 of one layer and a character tokenizer for TEXT, saved as a Hugging Face folder; its output layer
    padded by 5 ids past the tokenizer (as model families pad their vocabularies)."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    alphabet = sorted(set(TEXT))
    tokenizer = Tokenizer(models.WordLevel({c: i for i, c in enumerate(alphabet)}, unk_token=alphabet[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    folder = tmp_path_factory.mktemp("hf")
    transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer).save_pretrained(folder)
    config = transformers.GPT2Config(vocab_size=len(alphabet) + 5, n_positions=64, n_embd=16, n_layer=1, n_head=2)
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(config).save_pretrained(folder)
    return folder


@pytest.mark.e2e
def test_a_hugging_face_teacher_with_a_padded_vocabulary(tmp_path, text_file, hf_folder, capsys):
    text = LM_RUN.format(out=tmp_path / "runs", data=text_file).replace(
        "teacher: {model: gpt, args: {layers: 1, heads: 2, width: 16}, epochs: 2}",
        f"teacher: {{model: 'hf:{hf_folder}'}}",
    )
    config = write_config(tmp_path / "lm.yaml", text)
    assert main(["train", str(config), "--set", "scratch=false"]) == 2
    err = capsys.readouterr().err
    assert "padded vocabularies" in err and "method.shared_vocab: true" in err
    shared = ["--set", "scratch=false", "--set", "method.shared_vocab=true"]
    assert main(["train", str(config), *shared, "-q"]) == 0
    summary = json.loads((tmp_path / "runs" / "tiny-lm" / "summary.json").read_text())
    # the untrained teacher's perplexity, recomputed here over its 33 outputs, padding included
    test = text_splits(text_file, CharTokenizer.fit(TEXT), context=32, val_fraction=0.1, test_fraction=0.1, seed=0).test
    teacher = pytest.importorskip("transformers").AutoModelForCausalLM.from_pretrained(hf_folder).eval()
    with torch.no_grad():
        logits = teacher(test.ids).logits[:, :-1]  # position i predicts token i + 1
    targets = test.labels[:, 1:].flatten()
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), targets, ignore_index=UNLABELLED)
    assert summary["teacher"]["test_perplexity"] == pytest.approx(math.exp(loss.item()), rel=1e-5)
    attention = ["--set", "method.attention_weight=0.5", "--set", "method.hidden_weight=0.5", "--set", "name=att"]
    assert main(["train", str(config), *shared, *attention, "-q"]) == 0  # the eager kernel, loaded for it


def test_a_teacher_whose_tokenizer_maps_tokens_elsewhere_is_refused(tmp_path, text_file, hf_folder, capsys):
    other = TEXT.replace("q", "")  # an alphabet without 'q': every later character gets another id
    path = tmp_path / "other.txt"
    path.write_text(other * 3)
    text = LM_RUN.format(out=tmp_path / "runs", data=path).replace(
        "teacher: {model: gpt, args: {layers: 1, heads: 2, width: 16}, epochs: 2}",
        f"teacher: {{model: 'hf:{hf_folder}'}}",
    )
    config = write_config(tmp_path / "lm.yaml", text)
    assert main(["train", str(config), "--set", "method.shared_vocab=true"]) == 2
    assert "the data's tokenizer and the teacher's differ" in capsys.readouterr().err


# --- hidden states, attention maps, LoRA ------------------------------------------------------------------------


def test_gpt_attention_maps_are_causal_distributions_and_leave_the_output_unchanged():
    torch.manual_seed(0)
    model = GPT(11, context=16, layers=2, heads=2, width=8).eval()
    ids = torch.randint(11, (2, 9))
    hidden, maps = model.hidden_and_attention(ids)
    assert maps.shape == (2, 2, 9, 9)
    torch.testing.assert_close(maps.sum(-1), torch.ones(2, 2, 9))
    assert maps.triu(1).abs().sum() == 0
    torch.testing.assert_close(hidden, model.hidden(ids), rtol=1e-5, atol=1e-6)  # explicit = fused kernel
    assert model.blocks[-1].attention.weights is None  # not kept after the call


@pytest.mark.e2e
def test_hidden_and_attention_terms_train_an_adapter_that_is_not_saved(tmp_path, text_file):
    config = write_config(tmp_path / "lm.yaml", LM_RUN.format(out=tmp_path / "runs", data=text_file))
    options = ["--set", "method.hidden_weight=0.5", "--set", "method.attention_weight=0.5", "--set", "scratch=false"]
    assert main(["train", str(config), *options, "-q"]) == 0
    metrics = (tmp_path / "runs" / "tiny-lm" / "student" / "metrics.jsonl").read_text()
    assert "train/hidden" in metrics and "train/attention" in metrics
    from safetensors.torch import load_file

    saved = tmp_path / "runs" / "tiny-lm" / "student.safetensors"
    student = GPT(CharTokenizer.fit(TEXT).vocab_size, context=32, layers=1, heads=1, width=8)
    assert set(load_file(saved)) <= set(student.state_dict())  # the student's own weights, no adapter
    load_weights(student, saved)


@pytest.mark.e2e
def test_a_lora_student_trains_its_adapters_only(tmp_path, text_file):
    pytest.importorskip("peft")
    config = write_config(tmp_path / "lm.yaml", LM_RUN.format(out=tmp_path / "runs", data=text_file))
    lora = "student.lora={r: 2, targets: [qkv, out]}"
    assert main(["train", str(config), "--set", lora, "--set", "scratch=false", "-q"]) == 0
    summary = json.loads((tmp_path / "runs" / "tiny-lm" / "summary.json").read_text())
    student = summary["student"]
    assert 0 < student["trainable_params"] < student["params"] / 2
    assert main(["train", str(config), "--set", "student.lora={r: 2, targets: [nowhere]}", "--set", "name=x"]) == 2
    head = "student.lora={r: 2, targets: [qkv, head]}"
    assert main(["train", str(config), "--set", head, "--set", "name=y"]) == 2  # fused reads the plain head
    assert not (tmp_path / "runs" / "y").exists()
    assert main(["train", str(config), "--set", head, "--set", "name=y", "--set", "method.fused=false", "-q"]) == 0


# --- chat data -------------------------------------------------------------------------------------------------

CHAT_TEMPLATE = (
    "{% for m in messages %}<{{ m['role'][0] }}>{{ m['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<a>{% endif %}"
)


@pytest.fixture(scope="module")
def chat_tokenizer(tmp_path_factory) -> Path:
    """A character tokenizer with a chat template, saved as a Hugging Face folder."""
    transformers = pytest.importorskip("transformers")
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers

    alphabet = sorted(set("abcdefghijklmnopqrstuvwxyz <>\n?"))
    tokenizer = Tokenizer(models.WordLevel({c: i for i, c in enumerate(alphabet)}, unk_token=alphabet[0]))
    tokenizer.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tokenizer)
    fast.chat_template = CHAT_TEMPLATE
    folder = tmp_path_factory.mktemp("chat")
    fast.save_pretrained(folder)
    return folder


def test_chat_data_counts_the_assistant_turns_only(tmp_path, chat_tokenizer):
    from distill.models.lm import HFTokenizer

    chat = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "ok?"},
        {"role": "assistant", "content": "no"},
    ]
    (tmp_path / "chat.jsonl").write_text("\n".join(json.dumps({"messages": chat}) for _ in range(10)))
    tokenizer = HFTokenizer(str(chat_tokenizer))
    splits = text_splits(tmp_path / "chat.jsonl", tokenizer, context=40, val_fraction=0.2, test_fraction=0.2, seed=0)
    ids, labels = splits.train.ids[0], splits.train.labels[0]
    assert tokenizer.decode(ids[labels != UNLABELLED].tolist()).replace(" ", "") == "yo\nno\n"  # each turn and its end
    rendered = tokenizer.render_chat(chat)
    assert ids[: len(rendered)].tolist() == rendered  # the template's rendering, then padding
    assert tokenizer.decode(rendered).replace(" ", "") == "<u>hi\n<a>yo\n<u>ok?\n<a>no\n"


def test_chat_without_a_template_or_assistant_turn_is_one_line(tmp_path, chat_tokenizer, capsys):
    lines = {"messages": [{"role": "user", "content": "hi"}]}
    (tmp_path / "chat.jsonl").write_text(json.dumps(lines) + "\n")
    base = LM_RUN.format(out=tmp_path / "runs", data=tmp_path / "chat.jsonl")
    config = write_config(tmp_path / "lm.yaml", base)
    assert main(["train", str(config)]) == 2  # the char tokenizer has no chat template
    assert "chat.jsonl:1: a chat needs a tokenizer with a chat template" in capsys.readouterr().err
    assert main(["train", str(config), "--set", f"data.tokenizer={chat_tokenizer}"]) == 2
    assert "chat.jsonl:1: no assistant turn" in capsys.readouterr().err
    (tmp_path / "chat.jsonl").write_text('{"messages": [{"role": "user"}]}\n')
    assert main(["train", str(config)]) == 2
    assert "chat.jsonl:1: 'messages' must be a list" in capsys.readouterr().err
