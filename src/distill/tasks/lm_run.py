"""A language-model run (`task: lm`): the teacher (trained here on the text, or loaded), the student alone and
the distilled student, each on the data set's training part; then each model's validation and test
perplexity, size and speed, and the diagnosis.

runs/NAME/config.yaml, NAME/STAGE/ (checkpoints, metrics.jsonl), MODEL.safetensors, summary.json: as an image
run's. Perplexity is exp of the mean next-token cross-entropy over the counted tokens of a part.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.benchmark import Timer
from torch.utils.data import DataLoader

from distill import rundir
from distill._io import write_json
from distill._lock import FolderLock
from distill.config import read_yaml
from distill.diagnosis import paired_interval
from distill.errors import ConfigError, DistillError
from distill.cache.tokens import TokenCache, fingerprint, write_token_cache
from distill.lm_config import LMConfig, validate_lm
from distill.data.text import IGNORE, TextSplits, Tokenizer, text_splits, tokenizer_text
from distill.models.lm import build_lm, check_vocabularies, model_tokenizer, parameters, tokenizer_for, with_lora
from distill.modules.token import NextToken, OnPolicy, TokenDistiller, check_fusable
from distill.losses.token import TokenKD, shift_for_next_token
from distill.measure import THREADS, where_measured
from distill.stages import Stages
from distill.train import parallel, resolve_device, seed_everything, shuffled
from distill.weights import load_weights

logger = logging.getLogger("distill.lm")


@dataclass
class LMExperiment:
    """The built pieces every stage of a language-model run shares."""

    cfg: LMConfig
    tokenizer: Tokenizer
    splits: TextSplits
    train_loader: DataLoader
    val_loader: DataLoader
    test_loader: DataLoader

    @property
    def run_dir(self) -> Path:
        return self.cfg.run_dir

    def log(self, message: str, *args: object) -> None:
        logger.info("[%s] " + message, self.cfg.name, *args)


def build_experiment(cfg: LMConfig) -> LMExperiment:
    d = cfg.data
    tokenizer = tokenizer_for(d.tokenizer, tokenizer_text(d.path))
    splits = text_splits(d.path, tokenizer, context=d.context, val_fraction=d.val_fraction,
                         test_fraction=d.test_fraction, seed=d.seed)  # fmt: skip
    train = shuffled(splits.train, d.batch_size)
    val, test = (DataLoader(part, batch_size=d.batch_size) for part in (splits.val, splits.test))
    return LMExperiment(cfg, tokenizer, splits, train, val, test)


def _model(exp: LMExperiment, field: str) -> nn.Module:
    cfg = exp.cfg
    spec = getattr(cfg, field)
    dtype = cfg.teacher.dtype if field == "teacher" else "float32"  # a Hugging Face teacher loads in it
    seed_everything(cfg.train.seed)
    attention = cfg.method.attention_weight > 0
    model = build_lm(spec, exp.tokenizer.vocab_size, cfg.data.context, field=field, dtype=dtype, attention=attention)
    if spec.weights is not None:
        load_weights(model, spec.weights)
    lora = getattr(spec, "lora", None)
    return model if lora is None else with_lora(model, lora)


def _seeded(exp: LMExperiment, seed: int) -> LMExperiment:
    train = exp.cfg.train.model_copy(update={"seed": seed})
    return dataclasses.replace(exp, cfg=exp.cfg.model_copy(update={"train": train}))


def run(cfg: LMConfig, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train the teacher (unless loaded), then the student alone and the distilled student once per seed;
    write summary.json and return it. Everything is built and checked before a file is written."""
    if cfg.method.kind == "on_policy" and not cfg.data.path.endswith(".jsonl"):
        raise ConfigError("method.kind on_policy: the student writes completions of prompts; give data.path a .jsonl "
                          "of prompt/completion lines")  # fmt: skip
    parallel.check_batch(cfg.data.batch_size)
    exp = build_experiment(cfg)
    resolve_device(cfg.train.device)
    teacher, probe, method = _model(exp, "teacher"), _model(exp, "student"), cfg.method  # probe: checked, not trained
    vocab = check_vocabularies(
        exp.tokenizer, model_tokenizer(cfg.student, exp.tokenizer), model_tokenizer(cfg.teacher, exp.tokenizer),
        _outputs(probe), _outputs(teacher), shared=method.shared_vocab,
    )  # fmt: skip
    loss = TokenKD(method.divergence, alpha=method.alpha, temperature=method.temperature, beta=method.beta,
                   skew=method.skew)  # fmt: skip

    cache = None
    if cfg.cache is not None:
        expected = fingerprint(cfg.teacher.weights, exp.tokenizer, exp.splits.train, cfg.cache.top_k, cfg.cache.dtype)
        cache = TokenCache(cfg.cache.path, expected)
        if cache.vocab != vocab:
            raise DistillError(f"{cfg.cache.path}: the cache covers {cache.vocab} ids, the run compares {vocab} "
                               "(method.shared_vocab); make it again or set the same vocabulary")  # fmt: skip

    def distiller_of(student: nn.Module) -> TokenDistiller:
        return TokenDistiller(student, teacher, loss, vocab=vocab, fused=method.fused, chunk_size=method.chunk_size,
                              hidden_weight=method.hidden_weight, attention_weight=method.attention_weight,
                              cache=cache)  # fmt: skip

    if method.fused:  # refused before a file is written
        check_fusable(probe, teacher)
    with rundir.opened(cfg, resume=resume, overwrite=overwrite, read=lambda path: validate_lm(read_yaml(path), path)):
        stages = Stages(exp, resume=resume)
        if cfg.teacher.weights is None and not cfg.teacher.model.startswith("hf:"):
            epochs = cfg.teacher.epochs or cfg.train.epochs
            stages.train("teacher", NextToken(teacher), teacher, cfg.train.model_copy(update={"epochs": epochs}))
        if cfg.teacher.dtype == "bfloat16":  # trained in float32 (above); it teaches in half the memory
            teacher = teacher.to(torch.bfloat16)
        runs = []
        for i, seed in enumerate(cfg.run_seeds):
            seeded = _seeded(exp, seed)
            stages = Stages(seeded, resume=resume, tag="" if i == 0 else f"seed{seed}")
            models = {"teacher": teacher}
            if cfg.scratch:
                models["scratch"] = _model(seeded, "student")
                stages.train("scratch", NextToken(models["scratch"]), models["scratch"], cfg.train)
            student = models["student"] = _model(seeded, "student")
            stages.train("student", _on_policy(distiller_of(student), cfg, exp.tokenizer), student, cfg.train)
            runs.append(models)
        if not parallel.is_main():
            return {}
        summary = summarize(exp, runs)
        write_json(cfg.run_dir / "summary.json", summary)
        return summary


def make_token_cache(cfg: LMConfig) -> dict[str, Any]:
    """`distill cache` for a language-model config: the teacher's top-k on the training sequences."""
    if cfg.cache is None:
        raise ConfigError("cache: missing; give cache: {path: FOLDER, top_k: 32} and teacher.weights")
    exp = build_experiment(cfg)
    teacher = _model(exp, "teacher")
    vocab = _outputs(teacher)
    if cfg.cache.top_k > vocab:
        raise ConfigError(f"cache.top_k: {cfg.cache.top_k} is more than the {vocab} tokens of the vocabulary")
    meta = fingerprint(cfg.teacher.weights, exp.tokenizer, exp.splits.train, cfg.cache.top_k, cfg.cache.dtype)
    path = Path(cfg.cache.path)
    with FolderLock(path):
        start = time.perf_counter()
        made = write_token_cache(path, teacher, exp.splits.train, meta, vocab=vocab, batch_size=cfg.data.batch_size)
    return {**made, "seconds": time.perf_counter() - start}


def _on_policy(distiller: TokenDistiller, cfg: LMConfig, tokenizer: Tokenizer) -> nn.Module:
    """The distiller, wrapped to sample the student's own completions when the method is on-policy."""
    method = cfg.method
    if method.kind != "on_policy":
        return distiller
    return OnPolicy(distiller, student_share=method.student_share, temperature=method.sample_temperature,
                    max_new_tokens=method.max_new_tokens, top_k=method.top_k, pad_id=tokenizer.pad_id,
                    context=cfg.data.context)  # fmt: skip


def _outputs(model: nn.Module) -> int:
    return model.head.weight.shape[0]


# --- measured after training -----------------------------------------------------------------------------------


@torch.no_grad()
def sequence_losses(model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per sequence: the summed next-token cross-entropy over its counted tokens, and their count."""
    model.eval().to(device)
    sums, counts = [], []
    for batch in loader:
        ids, labels = batch["input"].to(device), batch["label"].to(device)
        logits, targets = shift_for_next_token(model(ids).float(), labels)
        nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), targets, ignore_index=IGNORE, reduction="none")
        sums.append(nll.sum(1).cpu())
        counts.append((targets != IGNORE).sum(1).cpu())
    return torch.cat(sums), torch.cat(counts)


def tokens_per_second(model: nn.Module, batch: int, context: int, vocab: int) -> float:
    """Inference throughput on the CPU, one thread, on a batch of random ids."""
    model = model.eval().cpu()
    ids = torch.randint(vocab, (batch, context))
    timer = Timer("model(ids)", globals={"model": model, "ids": ids}, num_threads=THREADS)
    with torch.inference_mode():
        timer.timeit(1)
        seconds = timer.blocked_autorange(min_run_time=0.2).median
    return batch * context / seconds


def summarize(exp: LMExperiment, runs: list[dict[str, nn.Module]]) -> dict[str, Any]:
    cfg, device = exp.cfg, resolve_device(exp.cfg.train.device)
    test_losses: dict[str, list[tuple[Tensor, Tensor]]] = {}
    summary: dict[str, Any] = {"name": cfg.name, "task": "lm", "data": exp.splits.description,
                               "seeds": cfg.run_seeds, "models": list(runs[0])}  # fmt: skip
    for name in runs[0]:
        nets = [run[name] for run in runs] if name != "teacher" else [runs[0]["teacher"]]
        val = [sequence_losses(net, exp.val_loader, device) for net in nets]
        test_losses[name] = [sequence_losses(net, exp.test_loader, device) for net in nets]
        val_ppl = [math.exp(s.sum() / c.sum()) for s, c in val]
        test_ppl = [math.exp(s.sum() / c.sum()) for s, c in test_losses[name]]
        spread = (
            {"test_perplexity_std": statistics.stdev(test_ppl), "test_perplexities": test_ppl} if len(nets) > 1 else {}
        )
        summary[name] = {
            "val_perplexity": statistics.fmean(val_ppl),
            "test_perplexity": statistics.fmean(test_ppl),
            "seeds": len(nets),
            **spread,
            "params": parameters(nets[0]),
            **({} if name == "teacher" else {"trainable_params": parameters(nets[0], trainable=True)}),
            "tokens_per_second": tokens_per_second(nets[0], 8, cfg.data.context, exp.tokenizer.vocab_size),
        }
    summary["measured_on"] = where_measured()
    summary["test_tokens"] = exp.splits.test.tokens
    if "scratch" in test_losses:
        summary["diagnosis"] = diagnose(test_losses)
    return summary


def diagnose(test_losses: dict[str, list[tuple[Tensor, Tensor]]]) -> dict[str, Any]:
    """Did distillation lower the student's test cross-entropy below the student alone's? Per test sequence,
    the student alone's mean loss minus the student's (seeds averaged), with a paired bootstrap interval over
    sequences; in nats per token, > 0 when distillation helped."""

    counted = test_losses["student"][0][1] > 0  # a sequence without a counted token says nothing

    def per_sequence(runs: list[tuple[Tensor, Tensor]]) -> Tensor:
        return torch.stack([s[counted] / c[counted] for s, c in runs]).mean(0)

    differences = per_sequence(test_losses["scratch"]) - per_sequence(test_losses["student"])
    low, high = paired_interval(differences)
    verdict = "helped" if low > 0 else "negative_transfer" if high < 0 else "no_difference"
    causes = []
    teacher = per_sequence(test_losses["teacher"]).mean().item()
    if teacher >= per_sequence(test_losses["scratch"]).mean().item():
        causes.append("the teacher is no better than the student alone on test: it has nothing to teach; train it "
                      "longer or take a larger one")  # fmt: skip
    return {
        "verdict": verdict,
        "margin": differences.mean().item(),
        "interval": [low, high],
        "method": f"paired bootstrap over the {len(differences)} test sequences, nats per token, seeds averaged",
        "causes": causes,
    }
