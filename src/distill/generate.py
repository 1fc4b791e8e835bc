"""`distill generate CONFIG`: the teacher writes a completion for every prompt of a JSONL file, to a new JSONL
that a sequence-level distillation run then trains the student on (`data.path` set to it: the student learns
the teacher's own completions, `method.alpha: 1` for their cross-entropy alone).

    generate: {prompts: prompts.jsonl, output: teacher.jsonl, max_new_tokens: 64, temperature: 0.8, top_k: 40}

Each output line is {"id", "prompt", "completion"}: the prompt line's "id", else its line number. The file
survives a kill: lines are appended a batch at a time and synced; a resumed run drops a torn last line,
skips the ids already written and writes the rest, and refuses a file made by another teacher, tokenizer,
prompt file or sampling setting (all recorded in OUTPUT.meta.json). Prompts of one length are sampled
together, each completion with a cache of keys and values (one forward per new token).
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distill._io import existing, file_sha256, write_json
from distill._lock import FolderLock
from distill.config import LMConfig
from distill.data.text import Tokenizer, read_text, tokenizer_sha256, tokenizer_text
from distill.errors import ConfigError, DistillError
from distill.models.lm import build_lm, tokenizer_for
from distill.modules.token import until_end
from distill.weights import load_weights, weights_sha256


def generate(cfg: LMConfig) -> dict[str, Any]:
    """Write the teacher's completions of `cfg.generate.prompts` to `cfg.generate.output`; returns what it did."""
    settings = cfg.generate
    if settings is None:
        raise ConfigError("generate: missing; give generate: {prompts: FILE.jsonl, output: FILE.jsonl}")
    if cfg.teacher.weights is None and not cfg.teacher.model.startswith("hf:"):
        raise ConfigError("teacher.weights: distill generate needs a trained teacher; give its weights file")
    tokenizer = tokenizer_for(cfg.data.tokenizer, tokenizer_text(cfg.data.path))
    prompts = _prompts(Path(settings.prompts), tokenizer, settings.max_new_tokens, cfg.data.context)
    teacher = build_lm(cfg.teacher, tokenizer.vocab_size, cfg.data.context, field="teacher", dtype=cfg.teacher.dtype)
    if cfg.teacher.weights is not None:
        load_weights(teacher, cfg.teacher.weights)
    teacher.eval()
    output = Path(settings.output)
    meta = _fingerprint(cfg, tokenizer)
    with FolderLock(output):  # one writer at a time: .OUTPUT.lock beside it
        done = _resume(output, meta)
        todo = {key: ids for key, ids in prompts.items() if key not in done}
        start, written = time.perf_counter(), 0
        with open(output, "a", encoding="utf-8") as out:
            for batch in _batches(todo, settings.batch_size):
                completions = _complete(teacher, [ids for _, ids in batch], settings, tokenizer)
                for (key, ids), completion in zip(batch, completions, strict=True):
                    record = {"id": key, "prompt": tokenizer.decode(ids), "completion": completion}
                    out.write(json.dumps(record, ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
                written += len(batch)
    seconds = time.perf_counter() - start
    return {"output": output, "written": written, "already": len(done), "seconds": seconds}


def _prompts(path: Path, tokenizer: Tokenizer, max_new_tokens: int, context: int) -> dict[str, list[int]]:
    """Each prompt's id and token ids, in file order; a line without a prompt or too long is named."""
    prompts = {}
    for number, line in enumerate(read_text(existing(path, "a JSONL file of prompts", kind="file")).splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DistillError(f"{path}:{number}: not valid JSON ({e.msg}); one JSON object per line") from None
        if not isinstance(record, dict) or not isinstance(record.get("prompt"), str) or not record["prompt"]:
            raise DistillError(f"{path}:{number}: no 'prompt' string; each line needs one")
        key = str(record.get("id", number))
        if key in prompts:
            raise DistillError(f"{path}:{number}: id {key!r} again; give each prompt its own id")
        ids = tokenizer.encode(record["prompt"])
        if len(ids) + max_new_tokens > context:
            raise DistillError(
                f"{path}:{number}: {len(ids)} prompt tokens and generate.max_new_tokens "
                f"{max_new_tokens} pass the context {context}; shorten it or lower either"
            )
        prompts[key] = ids
    if not prompts:
        raise DistillError(f"{path}: no prompts; one JSON object with a 'prompt' per line")
    return prompts


def _fingerprint(cfg: LMConfig, tokenizer: Tokenizer) -> dict[str, Any]:
    """What the file's lines depend on: the teacher, the tokenizer, the prompts, the sampling settings."""

    teacher = cfg.teacher.model_dump(mode="json")
    if cfg.teacher.weights is not None:
        teacher["weights"] = weights_sha256(cfg.teacher.weights)
    sampling = cfg.generate.model_dump(mode="json", exclude={"output", "batch_size", "prompts"})
    return {
        "teacher": teacher,
        "tokenizer": tokenizer_sha256(tokenizer),
        "prompts": file_sha256(cfg.generate.prompts),
        "sampling": sampling,
    }


def _resume(output: Path, meta: dict[str, Any]) -> set[str]:
    """The ids a killed run already wrote (its torn last line dropped), after checking it was this teacher's."""
    sidecar = output.with_name(output.name + ".meta.json")
    if not output.exists():
        write_json(sidecar, meta)
        return set()
    if not sidecar.exists() or _json(sidecar, sidecar.read_text(), "the file") != meta:
        raise DistillError(
            f"{output} was written by another teacher, tokenizer, prompt file or sampling setting (see "
            f"{sidecar.name}); give generate.output a new file, or delete it to start again"
        )
    text = output.read_bytes()
    kept = text[: text.rfind(b"\n") + 1]  # a line cut by a kill has no newline yet
    if len(kept) < len(text):
        with open(output, "r+b") as f:
            f.truncate(len(kept))
    done = set()
    for number, line in enumerate(kept.decode("utf-8").splitlines(), start=1):
        record = _json(output, line, f"line {number}")
        if not isinstance(record, dict) or "id" not in record:
            raise DistillError(f"{output}:{number}: a line without an id; it was not written by distill generate")
        done.add(record["id"])
    return done


def _json(path: Path, text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        raise DistillError(f"{path}: {what} is damaged (not JSON); delete the output to start again") from None


def _batches(prompts: dict[str, list[int]], size: int):
    """Prompts of one length together (no padding), `size` at a time, in the order first seen."""
    by_length: dict[int, list[tuple[str, list[int]]]] = defaultdict(list)
    for key, ids in prompts.items():
        by_length[len(ids)].append((key, ids))
    for group in by_length.values():
        for i in range(0, len(group), size):
            yield group[i : i + size]


def _complete(teacher: nn.Module, prompts: list[list[int]], settings: Any, tokenizer: Tokenizer) -> list[str]:
    ids = torch.tensor(prompts, dtype=torch.long)
    generator = torch.Generator().manual_seed(settings.seed + sum(map(sum, prompts)))  # reproducible per batch
    new = teacher.generate(
        ids, settings.max_new_tokens, temperature=settings.temperature, top_k=settings.top_k, generator=generator
    )
    end_id = getattr(teacher, "end_id", None)
    return [tokenizer.decode(row[: until_end(row, end_id) - (end_id in row)]) for row in new.tolist()]
