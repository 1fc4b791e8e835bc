"""What a language-model run's report shows besides its summary: what each model costs to generate with, and
what it writes.

Nothing trains here: the saved models (the first seed's, the files that ship) are loaded, timed generating
text after prompts from the test split, and asked to complete a few of those prompts. Generation goes through
each model's own `generate` (our GPT's and a Hugging Face model's, both with a key-value cache), the way
`distill generate` and on-policy distillation sample.
"""

from __future__ import annotations

import itertools
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor, nn
from torch.utils.benchmark.utils.common import set_torch_threads

from distill.data.text import UNLABELLED, TokenSequences
from distill.errors import DistillError, first_line
from distill.export import SHIP_BUDGET_S, load_exported, onnx_available
from distill.measure import THREADS, peak_memory, where_measured
from distill.models import count_params
from distill.models.gpt import sample
from distill.models.lm import HF
from distill.modules.token import until_end
from distill.pipeline import SavedRun
from distill.report.evidence import Curve, distinct

PROMPTS = 4  # held-out prompts every model completes
PROMPT_TOKENS = 48  # at most; a third of the context where that is less
NEW_TOKENS = 60  # at most; what the context leaves after the prompt where that is less
BATCH = 8  # the batch of the tokens/s figure
FEWEST_CALLS = 3  # generate calls timed at batch BATCH, at least (after a warm-up), however long they take
MOST_CALLS = 50
# The samples' sampling: greedy decoding loops (a small character model writes spaces after any prompt); a low
# temperature shows what a model writes, and one seed for all, the same draws, keeps the differences the models'.
TEMPERATURE = 0.7
SEED = 0
EXPORTED = {"student.onnx": "ONNX Runtime fp32", "student.int8.onnx": "ONNX Runtime int8"}  # in export/

T = TypeVar("T")


@dataclass
class GenerationCost:
    """What one model costs to generate with in one runtime."""

    name: str
    runtime: str  # "PyTorch", "ONNX Runtime fp32", ...
    cached: bool  # a key-value cache: one new position a forward; else the whole sequence every token
    params: int
    size_bytes: int
    peak_memory_bytes: int | None  # None where the runtime exposes no allocation record (ONNX Runtime)
    token_ms: float  # median seconds per new token at batch 1, in ms
    token_p95_ms: float
    tokens_per_second: float  # new tokens a second at batch BATCH


@dataclass
class Completion:
    """One held-out prompt, the text that follows it in the test split, and each model's continuation."""

    sequence: int  # its test sequence
    prompt: str
    held_out: str
    by_model: dict[str, str]


@dataclass
class LMEvidence:
    name: str
    summary: dict[str, Any]
    curves: list[Curve]
    costs: list[GenerationCost]
    completions: list[Completion]
    prompt_tokens: int  # the timed prompts' length
    new_tokens: int  # and the tokens generated after each
    measured_on: str
    notes: list[str]


def gather(run: SavedRun, summary: dict[str, Any], curves: list[Curve]) -> LMEvidence:
    """Everything the report of a finished language-model run shows (`evidence.finished` reads the first three)."""
    nets = {name: run.net(name).eval() for name in distinct(run)}
    context, test = run.cfg.data.context, run.exp.splits.test
    prompt_tokens = min(PROMPT_TOKENS, context // 3)
    new_tokens = min(NEW_TOKENS, context - prompt_tokens)
    prompts = test.ids[torch.arange(BATCH) % len(test.ids), :prompt_tokens]
    costs = [_pytorch_cost(run, name, net, prompts, new_tokens) for name, net in nets.items()]
    if run.cfg.student.model.startswith(HF):
        exported, notes = [], ["ONNX Runtime row: none; distill export ships a Hugging Face student as its own folder"]
    else:
        exported, notes = _exported(run.path / "export", count_params(nets["student"]), prompts, new_tokens)
    completions = _complete(run, nets, test, context)
    return LMEvidence(
        run.cfg.name, summary, curves, costs + exported, completions, prompt_tokens, new_tokens, where_measured(), notes
    )


# --- costs -----------------------------------------------------------------------------------------------------


def _pytorch_cost(run: SavedRun, name: str, net: nn.Module, prompts: Tensor, new: int) -> GenerationCost:
    """Model `name` generating `new` tokens after `prompts` in PyTorch, with its key-value cache."""
    with set_torch_threads(THREADS):
        memory = peak_memory(_Generating(net, prompts[:1], new), (1,))
    single = _token_seconds(net, prompts[:1], new)
    batched = _generation_rates(net, prompts, new)
    return GenerationCost(
        name,
        "PyTorch",
        True,
        count_params(net),
        (run.path / f"{name}.safetensors").stat().st_size,
        memory,
        statistics.median(single) * 1e3,
        _p95(single) * 1e3,
        statistics.median(batched),
    )


class _Generating(nn.Module):
    """`model` generating `new` tokens after `prompt` whatever it is called with: `measure.peak_memory` profiles
    a call of a module on a float batch, and generation takes token ids (the float batch of one number is
    ignored; the prompt, a buffer, is counted with the weights)."""

    def __init__(self, model: nn.Module, prompt: Tensor, new: int):
        super().__init__()
        self.model, self.new = model, new
        self.register_buffer("prompt", prompt, persistent=False)

    def forward(self, _: Tensor) -> Tensor:
        return self.model.generate(self.prompt, self.new, temperature=0)


def _token_seconds(net: nn.Module, prompt: Tensor, new: int) -> list[float]:
    """Seconds of each new token but the first (which also reads the prompt) of greedy generate calls at batch 1:
    the gaps between the calls of the output layer, which runs once per new token."""
    stamps: list[float] = []

    def call() -> list[float]:
        stamps.clear()
        net.generate(prompt, new, temperature=0)
        return [later - earlier for earlier, later in itertools.pairwise(stamps)]

    hook = net.head.register_forward_hook(lambda *_: stamps.append(time.perf_counter()))
    try:
        return [gap for gaps in _repeat(call, 1) for gap in gaps]  # one call gives new - 1 figures
    finally:
        hook.remove()


def _generation_rates(net: nn.Module, prompts: Tensor, new: int) -> list[float]:
    """New tokens a second of greedy generate calls on the batch of `prompts` (a row finished early, at a
    Hugging Face model's end token, counted as generating on: its batch still runs)."""
    steps: list[int] = []

    def call() -> float:
        steps.clear()
        start = time.perf_counter()
        net.generate(prompts, new, temperature=0)
        return len(prompts) * len(steps) / (time.perf_counter() - start)

    hook = net.head.register_forward_hook(lambda *_: steps.append(1))
    try:
        return _repeat(call, FEWEST_CALLS)
    finally:
        hook.remove()


def _repeat(call: Callable[[], T], fewest: int, budget_s: float = SHIP_BUDGET_S) -> list[T]:
    """What `call` returns, called on THREADS threads after a warm-up call (left out) while the calls fit
    `budget_s`: `fewest` at least, however long they take (a large model's), MOST_CALLS at most; as
    `measure.timing` sizes its count."""
    with set_torch_threads(THREADS), torch.inference_mode():
        call()
        start, found = time.perf_counter(), []
        while len(found) < fewest or (len(found) < MOST_CALLS and time.perf_counter() - start < budget_s):
            found.append(call())
    return found


def _exported(folder: Path, params: int, prompts: Tensor, new: int) -> tuple[list[GenerationCost], list[str]]:
    """The rows of the files `distill export` left in `folder`, and what keeps one from being measured."""
    if not (folder / "student.onnx").exists():
        return [], [f"ONNX Runtime row: none yet; make it with distill export {folder.parent}"]
    if not onnx_available():
        return [], ["ONNX Runtime rows: not measured, onnxruntime is not installed (pip install 'distill[export]')"]
    rows, notes = [], []
    for path, runtime in [(folder / file, runtime) for file, runtime in EXPORTED.items()]:
        if path.exists():
            try:
                rows.append(_onnx_cost(path, runtime, params, prompts, new))
            except (RuntimeError, DistillError) as e:  # a shape the export fixed; a file that is no ONNX
                notes.append(f"{runtime} row: not measured; {first_line(e)}")
    return rows, notes


def _onnx_cost(path: Path, runtime: str, params: int, prompts: Tensor, new: int) -> GenerationCost:
    """The exported student generating in ONNX Runtime, which keeps no key-value cache: a whole forward of the
    sequence so far for every new token."""
    predict, _ = load_exported(path, "onnx")
    single = _repeated_onnx(predict, prompts[:1], new, fewest=1)
    batched = _repeated_onnx(predict, prompts, new, fewest=FEWEST_CALLS)
    per_token = [step for run in single for step in run[1:]]  # as in PyTorch: the first token read the prompt
    rates = [len(prompts) * new / sum(run) for run in batched]
    size = path.stat().st_size + sum(p.stat().st_size for p in path.parent.glob(f"{path.name}.data"))
    return GenerationCost(
        "student",
        runtime,
        False,
        params,
        size,
        None,
        statistics.median(per_token) * 1e3,
        _p95(per_token) * 1e3,
        statistics.median(rates),
    )


def _repeated_onnx(predict: Callable[[Tensor], Tensor], prompts: Tensor, new: int, *, fewest: int) -> list[list[float]]:
    """The seconds of each new token of greedy generations, one list per call, repeated as `_repeat` does."""

    def call() -> list[float]:
        ids, seconds = prompts, []
        for _ in range(new):
            start = time.perf_counter()
            logits = predict(ids)[:, -1]
            ids = torch.cat([ids, sample(logits, temperature=0, top_k=None, generator=None)[:, None]], dim=1)
            seconds.append(time.perf_counter() - start)
        return seconds

    return _repeat(call, fewest)


def _p95(seconds: list[float]) -> float:
    return statistics.quantiles(seconds, n=20, method="inclusive")[-1] if len(seconds) > 1 else seconds[0]


# --- samples ---------------------------------------------------------------------------------------------------


def _complete(run: SavedRun, nets: dict[str, nn.Module], test: TokenSequences, context: int) -> list[Completion]:
    """PROMPTS prompts from test sequences spread over the test split, each completed by every model (up to
    NEW_TOKENS new tokens, cut at a model's end token), beside the held-out text that follows it."""
    tokenizer, found = run.exp.tokenizer, []
    for row in torch.linspace(0, len(test.ids) - 1, PROMPTS).round().long().unique().tolist():
        cut = _prompt_end(test.labels[row], min(PROMPT_TOKENS, context // 3))
        new = min(NEW_TOKENS, context - cut)
        if cut < 1 or new < 1:  # a JSONL line without a prompt, or without room after it
            continue
        prompt = test.ids[row, :cut]
        counted = (test.labels[row] != UNLABELLED).nonzero().squeeze(1)
        held_out = test.ids[row, cut : min(int(counted[-1]) + 1, cut + new)]
        by_model = {name: tokenizer.decode(_generated(net, prompt, new)) for name, net in nets.items()}
        found.append(Completion(row, tokenizer.decode(prompt.tolist()), tokenizer.decode(held_out.tolist()), by_model))
    return found


def _prompt_end(labels: Tensor, tokens: int) -> int:
    """Where a test sequence's prompt ends: a JSONL line's prompt is what the loss does not count (before its
    first counted token); running text counts every token, and its prompt is its first `tokens`."""
    first = int((labels != UNLABELLED).int().argmax())
    return first if first > 0 else tokens


@torch.inference_mode()
def _generated(net: nn.Module, prompt: Tensor, new: int) -> list[int]:
    """The ids `net` writes after `prompt`, up to its end token (left out) where it has one."""
    generator = torch.Generator().manual_seed(SEED)
    row = net.generate(prompt[None], new, temperature=TEMPERATURE, generator=generator)[0].tolist()
    end_id = getattr(net, "end_id", None)
    return row[: until_end(row, end_id) - (end_id in row)]
