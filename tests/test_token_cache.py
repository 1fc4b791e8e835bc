"""The top-k teacher cache for tokens: at k = vocabulary the loss is the live teacher's; it is fingerprinted."""

from __future__ import annotations

import json

import pytest
import torch

from conftest import perplexity_on_test, write_config
from distill.cache.tokens import TokenCache, cached_views, fingerprint, write_token_cache
from distill.cli import main
from distill.data.text import UNLABELLED, CharTokenizer, TokenSequences
from distill.losses.token import DIVERGENCES
from distill.losses.token_kd import TokenKD
from distill.models.gpt import GPT
from distill.modules.token import TokenDistiller
from distill.weights import save_weights

TEXT = "abcdefghij klmnop. " * 50


@pytest.fixture
def setup(tmp_path):
    tokenizer = CharTokenizer.fit(TEXT)
    ids = torch.tensor(tokenizer.encode(TEXT[: 16 * 20])).view(16, 20)
    labels = ids.clone()
    labels[::3, :5] = UNLABELLED  # some prompts
    train = TokenSequences(ids, labels)
    torch.manual_seed(0)
    teacher = GPT(tokenizer.vocab_size, context=20, layers=1, heads=2, width=16)
    save_weights(teacher, tmp_path / "teacher.safetensors")
    return tokenizer, train, teacher, tmp_path


def _cache(setup, top_k: int, dtype: str = "float16") -> TokenCache:
    tokenizer, train, teacher, tmp_path = setup
    meta = fingerprint(str(tmp_path / "teacher.safetensors"), tokenizer, train, top_k, dtype)
    write_token_cache(tmp_path / f"cache{top_k}", teacher, train, meta, vocab=tokenizer.vocab_size, batch_size=5)
    return TokenCache(tmp_path / f"cache{top_k}", meta)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_a_cache_of_the_whole_vocabulary_gives_the_live_teachers_loss_and_gradient(setup, divergence):
    tokenizer, train, teacher, _ = setup
    cache = _cache(setup, tokenizer.vocab_size, "float32")
    batch = {"input": train.ids[:6], "label": train.labels[:6], "index": torch.arange(6)}
    torch.manual_seed(1)
    student = GPT(tokenizer.vocab_size, context=20, layers=1, heads=1, width=8)
    loss = TokenKD(divergence, alpha=0.3)
    results = []
    for source in (None, cache):
        distiller = TokenDistiller(student, teacher, loss, vocab=tokenizer.vocab_size, fused=False, cache=source)
        out = distiller.train()(batch)
        results.append((out["loss"], torch.autograd.grad(out["loss"], student.head.weight)[0], out["tokens"]))
    (live, live_grad, live_tokens), (cached, cached_grad, cached_tokens) = results
    torch.testing.assert_close(cached, live, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cached_grad, live_grad, rtol=1e-4, atol=1e-6)
    assert cached_tokens == live_tokens


def test_a_top_k_cache_keeps_the_tail_as_one_outcome(setup):
    tokenizer, _, _, _ = setup
    cache = _cache(setup, 4)
    logits = torch.randn(3, 20, tokenizer.vocab_size)
    student, teacher = cached_views(logits.log_softmax(-1), cache, torch.arange(3))
    assert student.shape == teacher.shape == (3, 20, 5)
    torch.testing.assert_close(student.logsumexp(-1), torch.zeros(3, 20), atol=1e-5, rtol=0)  # a distribution
    torch.testing.assert_close(teacher.logsumexp(-1), torch.zeros(3, 20), atol=2e-3, rtol=0)


LM_CACHED = """\
task: lm
name: cached
out_dir: {out}
data: {{path: {data}, context: 24, val_fraction: 0.1, test_fraction: 0.1, batch_size: 8}}
teacher: {{model: gpt, args: {{layers: 1, heads: 2, width: 16}}, weights: {weights}, cache: {cache}}}
student: {{model: gpt, args: {{layers: 1, heads: 1, width: 8}}}}
method: {{kind: token, divergence: forward_kl}}
cache: {{top_k: 8}}
train: {{epochs: 1, optimizer: adamw, lr: 0.01, progress: false}}
"""


@pytest.mark.e2e
def test_distill_cache_then_train_from_it_and_a_stale_cache_is_refused(tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT * 2)
    torch.manual_seed(0)
    teacher = GPT(CharTokenizer.fit(TEXT).vocab_size, context=24, layers=1, heads=2, width=16)
    save_weights(teacher, tmp_path / "teacher.safetensors")
    config = write_config(
        tmp_path / "c.yaml",
        LM_CACHED.format(
            out=tmp_path / "runs",
            data=tmp_path / "t.txt",
            weights=tmp_path / "teacher.safetensors",
            cache=tmp_path / "cache",
        ),
    )
    assert main(["cache", str(config)]) == 0
    out = capsys.readouterr().out
    assert "bytes per token" in out and f"{8 * (2 + 2) + 4} bytes per token" in out  # k x (float16 + int16) + tail
    assert main(["train", str(config), "--set", "scratch=false", "-q"]) == 0
    summary = json.loads((tmp_path / "runs" / "cached" / "summary.json").read_text())
    student = tmp_path / "runs" / "cached" / "student.safetensors"
    measured = perplexity_on_test(student, tmp_path / "t.txt", 24, layers=1, heads=1, width=8)
    assert summary["student"]["test_perplexity"] == pytest.approx(measured, rel=1e-5)
    torch.manual_seed(5)  # another teacher
    save_weights(GPT(teacher.vocab_size, context=24, layers=1, heads=2, width=16), tmp_path / "teacher.safetensors")
    assert main(["train", str(config), "--set", "name=again"]) == 2
    assert "the cache was made with another teacher" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("override", "expected"),
    [("teacher.weights=null", "teacher.cache needs teacher.weights"), ("method.temperature=2.0", "temperature 1")],
)
def test_a_cache_needs_the_teachers_file_and_temperature_one(tmp_path, override, expected, capsys):
    (tmp_path / "t.txt").write_text(TEXT * 2)
    config = write_config(
        tmp_path / "c.yaml",
        LM_CACHED.format(
            out=tmp_path / "runs", data=tmp_path / "t.txt", weights=tmp_path / "w.safetensors", cache=tmp_path / "cache"
        ),
    )
    assert main(["train", str(config), "--set", override]) == 2
    assert expected in capsys.readouterr().err
