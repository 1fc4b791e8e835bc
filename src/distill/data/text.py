"""Text for language models: tokenizers, and data sets of token sequences split into train, validation and test.

Two formats, told by the file's suffix:

    plain text (.txt, any other)  one stream of tokens cut into sequences of `context` tokens; the loss on
                                  every next token. The split is contiguous: the last shares of the text are
                                  validation and test, so no held-out passage was seen in training.
    JSONL (.jsonl)                one {"prompt": ..., "completion": ...} per line, one sequence each; the
                                  loss on the completion only (prompt and padding labelled -100). Lines are
                                  shuffled (seeded) into the parts.

A batch is {"input": (B, S) token ids, "label": (B, S) ids or -100, "index": (B,)}; the losses shift labels
by one (position t predicts token t+1).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor
from torch.utils.data import Dataset

from distill._io import existing
from distill.data._core import UNLABELLED
from distill.errors import DistillError


class Tokenizer(Protocol):
    name: str

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: list[int]) -> str: ...

    def vocab(self) -> dict[str, int]: ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def pad_id(self) -> int: ...


class CharTokenizer:
    """One token per character of a fixed alphabet; a character outside it is refused, named."""

    name = "char"

    def __init__(self, alphabet: str):
        self.alphabet = "".join(sorted(set(alphabet)))
        self._ids = {c: i for i, c in enumerate(self.alphabet)}

    @classmethod
    def fit(cls, text: str) -> CharTokenizer:
        return cls(text)

    def encode(self, text: str) -> list[int]:
        try:
            return [self._ids[c] for c in text]
        except KeyError as e:
            raise DistillError(
                f"character {e.args[0]!r} is not in the tokenizer's alphabet; fit it on this text"
            ) from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.alphabet[i] for i in ids)

    def vocab(self) -> dict[str, int]:
        return dict(self._ids)

    @property
    def vocab_size(self) -> int:
        return len(self.alphabet)

    @property
    def pad_id(self) -> int:
        return 0  # padding is never counted (label -100), so any id serves


class TokenSequences(Dataset):
    """(N, S) token ids and (N, S) labels; sample i is {"input", "label", "index"}."""

    def __init__(self, ids: Tensor, labels: Tensor):
        self.ids, self.labels = ids, labels

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"input": self.ids[i], "label": self.labels[i], "index": torch.tensor(i)}

    @property
    def tokens(self) -> int:
        """Tokens the loss counts (after the shift)."""
        return int((self.labels[:, 1:] != UNLABELLED).sum())


@dataclass
class TextSplits:
    train: TokenSequences
    val: TokenSequences
    test: TokenSequences
    description: str


STDLIB = "stdlib:"  # data.path "stdlib:argparse,csv": the source of those standard-library modules, concatenated


def read_text(path: str | Path) -> str:
    """The file's text; for `stdlib:NAMES`, the source of those standard-library modules, which every Python
    installation has (the LM demo's text: no download)."""
    if str(path).startswith(STDLIB):
        return _stdlib_source(str(path).removeprefix(STDLIB).split(","))
    file = existing(path, "a text or JSONL file", kind="file")
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DistillError(f"{file}: not UTF-8 text (byte {e.start}); convert it to UTF-8") from None
    if not text.strip():
        raise DistillError(f"{file}: the file is empty; give it some text")
    return text


def tokenizer_text(path: str | Path) -> str:
    """The text a tokenizer is fitted on: the file's, or a JSONL file's prompts and completions as decoded."""
    if not str(path).endswith(".jsonl"):
        return read_text(path)
    return "".join("".join(record["texts"]) for _, record in _records(Path(path)))


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Each non-blank line's number and record, checked (an error names the line)."""
    for number, line in enumerate(read_text(path).splitlines(), start=1):
        if line.strip():
            yield number, _fields(path, number, line)


def _stdlib_source(names: list[str]) -> str:
    texts = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            raise DistillError(f"data.path: '{name}' is not a standard-library module with Python source")
        texts.append(Path(spec.origin).read_text(encoding="utf-8"))
    return "\n".join(texts)


def text_splits(
    path: str | Path, tokenizer: Tokenizer, *, context: int, val_fraction: float, test_fraction: float, seed: int
) -> TextSplits:
    """The file at `path` as sequences of at most `context` tokens, in train, validation and test parts."""
    if str(path).endswith(".jsonl"):
        return _jsonl_splits(Path(path), tokenizer, context, val_fraction, test_fraction, seed)
    text = read_text(path)
    ids = torch.tensor(tokenizer.encode(text), dtype=torch.long)
    rows = len(ids) // context
    needed = 3 * context
    if rows < 3:
        raise DistillError(
            f"{path}: {len(ids)} tokens make fewer than 3 sequences of {context} (need {needed}); "
            "give more text or lower data.context"
        )
    sequences = ids[: rows * context].view(rows, context)
    n_test, n_val = max(1, round(rows * test_fraction)), max(1, round(rows * val_fraction))
    n_train = rows - n_val - n_test
    if n_train < 1:
        raise DistillError(f"{path}: {rows} sequences leave none for training; lower the val and test fractions")
    parts = sequences[:n_train], sequences[n_train : n_train + n_val], sequences[n_train + n_val :]
    train, val, test = (TokenSequences(part, part.clone()) for part in parts)
    description = (
        f"{path} ({len(ids)} {tokenizer.name} tokens): {n_train} train / {n_val} val / {n_test} test sequences of "
        f"{context}, contiguous"
    )
    return TextSplits(train, val, test, description)


def _jsonl_splits(
    path: Path, tokenizer: Tokenizer, context: int, val_fraction: float, test_fraction: float, seed: int
) -> TextSplits:
    ids, labels = [], []
    for number, record in _records(path):
        if "messages" in record:
            row_ids, row_labels = chat_tokens(tokenizer, record["messages"], f"{path}:{number}")
        else:
            prompt_ids, completion_ids = tokenizer.encode(record["prompt"]), tokenizer.encode(record["completion"])
            row_ids, row_labels = prompt_ids + completion_ids, [UNLABELLED] * len(prompt_ids) + completion_ids
        if len(row_ids) > context:
            raise DistillError(
                f"{path}:{number}: {len(row_ids)} tokens, longer than the model's context {context}; "
                "shorten the line or raise data.context"
            )
        pad = context - len(row_ids)
        ids.append(row_ids + [tokenizer.pad_id] * pad)
        labels.append(row_labels + [UNLABELLED] * pad)
    ids, labels = torch.tensor(ids, dtype=torch.long), torch.tensor(labels, dtype=torch.long)
    order = torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))
    n_test, n_val = max(1, round(len(ids) * test_fraction)), max(1, round(len(ids) * val_fraction))
    if len(ids) - n_val - n_test < 1:
        raise DistillError(f"{path}: {len(ids)} lines leave none for training; add lines or lower the fractions")
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    parts = [TokenSequences(ids[rows], labels[rows]) for rows in (train, val, test)]
    for name, part in zip(("training", "validation", "test"), parts, strict=True):
        if part.tokens == 0:
            raise DistillError(
                f"{path}: the {name} part has no completion token to count; add lines with "
                "completions or change data.seed"
            )
    description = (
        f"{path} ({len(ids)} lines, {tokenizer.name} tokens, padded to {context}): "
        f"{len(train)} train / {len(val)} val / {len(test)} test, seed={seed}"
    )
    return TextSplits(*parts, description)


def _fields(path: Path, number: int, line: str) -> dict[str, Any]:
    """A line's record: {"messages": [{"role", "content"}, ...]} (chat) or {"prompt", "completion"} strings."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        raise DistillError(f"{path}:{number}: not valid JSON ({e.msg}); one JSON object per line") from None
    if not isinstance(record, dict):
        raise DistillError(f"{path}:{number}: a JSON object with 'prompt' and 'completion' (or 'messages') expected")
    if "messages" in record:
        messages = record["messages"]
        if not isinstance(messages, list) or not all(_is_message(m) for m in messages) or not messages:
            raise DistillError(f"{path}:{number}: 'messages' must be a list of {{'role', 'content'}} strings")
        return {"messages": messages, "texts": [m["content"] for m in messages]}
    for key in ("prompt", "completion"):
        if not isinstance(record.get(key), str):
            raise DistillError(
                f"{path}:{number}: no '{key}' string; each line needs 'prompt' and 'completion', or 'messages'"
            )
    return {
        "prompt": record["prompt"],
        "completion": record["completion"],
        "texts": [record["prompt"], record["completion"]],
    }


def _is_message(message: object) -> bool:
    return (
        isinstance(message, dict) and isinstance(message.get("role"), str) and isinstance(message.get("content"), str)
    )


def chat_tokens(tokenizer: Tokenizer, messages: list[dict[str, str]], where: str) -> tuple[list[int], list[int]]:
    """A conversation rendered with the tokenizer's chat template, and its labels: the assistant turns' tokens
    (their closing tokens included, so the model learns to stop), every other token -100. Each assistant turn
    is found as the tokens between the conversation before it (with the generation prompt) and through it."""
    render = getattr(tokenizer, "render_chat", None)
    if render is None:
        raise DistillError(
            f"{where}: a chat needs a tokenizer with a chat template; data.tokenizer "
            f"'{tokenizer.name}' has none (give a Hugging Face tokenizer's folder)"
        )
    ids = render(messages, generation_prompt=False)
    labels = [UNLABELLED] * len(ids)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start, through = len(render(messages[:i], generation_prompt=True)), render(messages[: i + 1])
        if ids[: len(through)] != through:
            raise DistillError(
                f"{where}: the chat template renders a conversation's start differently from the "
                "whole; its assistant turns cannot be found"
            )
        labels[start : len(through)] = ids[start : len(through)]
    if all(label == UNLABELLED for label in labels):
        raise DistillError(f"{where}: no assistant turn to learn from; each conversation needs one")
    return ids, labels


def tokenizer_sha256(tokenizer: Tokenizer) -> str:
    """A tokenizer's fingerprint: its vocabulary, token by id."""
    vocab = json.dumps(sorted(tokenizer.vocab().items()), ensure_ascii=False).encode()
    return hashlib.sha256(vocab).hexdigest()
