"""A top-k teacher cache for tokens: `distill cache CONFIG` (task: lm, with a `cache` group) runs the teacher
once over the training sequences and keeps, per token, its k most likely next tokens' log-probabilities and
ids and the log of the probability left over (the tail); `distill train` then distills from it without the
teacher's forward on training batches (validation still runs the teacher).

    cache: {path: runs/shakespeare-cache, top_k: 32}

The loss from a top-k cache compares the two models over k + 1 outcomes: the teacher's k tokens, each with
its own probability, and "any other token", with the tail's; the student's side is its probability of those
k tokens and the sum of the rest. At k = vocabulary there is no tail and the loss is the live teacher's
exactly (up to the log-probabilities' rounding: `dtype: float32` keeps them whole). Only at loss temperature
1: the cached probabilities are the teacher's at 1, and the tail's spread over tokens, which a temperature
would reshape, is not kept.

Bytes per token: k x (2 for a float16 log-probability, 4 for float32, + 2 or 4 for an id) + 4 for the tail.
The cache is fingerprinted (teacher weights, tokenizer, data and its order, k, dtype) and refused when any of
them changed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from distill._io import write_json
from distill.data.text import Tokenizer, TokenSequences, tokenizer_sha256
from distill.errors import DistillError
from distill.weights import weights_sha256


def fingerprint(
    teacher_weights: str, tokenizer: Tokenizer, train: TokenSequences, top_k: int, dtype: str = "float16"
) -> dict[str, Any]:
    return {
        "teacher_sha256": weights_sha256(teacher_weights),
        "tokenizer_sha256": tokenizer_sha256(tokenizer),
        "data_sha256": hashlib.sha256(train.ids.numpy().tobytes() + train.labels.numpy().tobytes()).hexdigest(),
        "top_k": top_k,
        "dtype": dtype,
    }


@torch.no_grad()
def write_token_cache(
    path: Path, teacher: nn.Module, train: TokenSequences, meta: dict[str, Any], *, vocab: int, batch_size: int
) -> dict[str, Any]:
    """Run the teacher over `train` once and write the cache folder at `path` (whole, or not at all)."""
    top_k = meta["top_k"]
    rows, length = train.ids.shape
    id_type = np.int16 if vocab <= np.iinfo(np.int16).max else np.int32
    logprobs = np.zeros((rows, length, top_k), dtype=np.dtype(meta["dtype"]))
    ids = np.zeros((rows, length, top_k), dtype=id_type)
    tail = np.zeros((rows, length), dtype=np.float32)
    teacher.eval()
    for start in range(0, rows, batch_size):
        batch = slice(start, start + batch_size)
        top, top_ids, log_tail = top_k_of(teacher(train.ids[batch])[..., :vocab].float().log_softmax(-1), top_k)
        logprobs[batch], ids[batch], tail[batch] = top.numpy(), top_ids.numpy(), log_tail.numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        for name, array in (("logprobs", logprobs), ("ids", ids), ("tail", tail)):
            np.save(scratch / f"{name}.npy", array)
        write_json(scratch / "manifest.json", {**meta, "rows": rows, "length": length, "vocab": vocab})
        if path.exists():  # the old cache is moved aside, not deleted, until the new one is in place
            old = path.with_name(f".{path.name}.old.tmp")
            path.rename(old)
            scratch.rename(path)
            shutil.rmtree(old)
        else:
            scratch.rename(path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    total = logprobs.nbytes + ids.nbytes + tail.nbytes
    return {"path": path, "tokens": rows * length, "bytes": total, "bytes_per_token": total / (rows * length)}


def top_k_of(log_probs: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
    """(..., V) log-probabilities -> the top k's (..., k) log-probabilities and ids, and the log of the rest's
    total (-inf when k is the vocabulary)."""
    top, top_ids = log_probs.topk(k, dim=-1)
    rest = log_probs.scatter(-1, top_ids, -torch.inf).logsumexp(-1)
    return top, top_ids, rest


class TokenCache:
    """An opened cache, checked against what the run expects; `read(index)` gives training rows."""

    def __init__(self, path: str | Path, expected: dict[str, Any]):
        self.path = Path(path)
        manifest_file = self.path / "manifest.json"
        if not manifest_file.exists():
            raise DistillError(f"{self.path}: no token cache here (no manifest.json); make it with distill cache")
        manifest = json.loads(manifest_file.read_text())
        for key, value in expected.items():
            if manifest.get(key) != value:
                raise DistillError(
                    f"{self.path}: the cache was made with another {key.removesuffix('_sha256')} "
                    f"({key}); make it again with distill cache"
                )
        self.top_k, self.vocab = manifest["top_k"], manifest["vocab"]
        self.complete = self.top_k == self.vocab  # no tail: the loss is the live teacher's
        self.arrays = {name: np.load(self.path / f"{name}.npy", mmap_mode="r") for name in ("logprobs", "ids", "tail")}

    def __deepcopy__(self, memo: dict) -> TokenCache:
        return self  # read-only: a sharded run's copy of the distiller reads the same files

    def read(self, index: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(B,) training rows -> (B, S, k) float32 log-probabilities, (B, S, k) ids, (B, S) log tails."""
        rows = index.cpu().numpy()
        logprobs, ids, tail = (
            torch.from_numpy(np.ascontiguousarray(self.arrays[name][rows])) for name in ("logprobs", "ids", "tail")
        )
        device = index.device
        return logprobs.float().to(device), ids.long().to(device), tail.to(device)


def cached_views(student_log_probs: Tensor, cache: TokenCache, index: Tensor) -> tuple[Tensor, Tensor]:
    """The student's and the teacher's log-probabilities over the cache's k + 1 outcomes (the teacher's top k
    tokens, then the tail; just the k tokens when the cache is complete): (B, S, k [+ 1]) each, from the
    student's over the vocabulary, (B, S, V) float32."""
    teacher, ids, teacher_tail = cache.read(index)
    student_top = student_log_probs.gather(-1, ids)
    if cache.complete:
        return student_top, teacher
    student_tail = student_log_probs.scatter(-1, ids, -torch.inf).logsumexp(-1)
    return torch.cat([student_top, student_tail[..., None]], -1), torch.cat([teacher, teacher_tail[..., None]], -1)
