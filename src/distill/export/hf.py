"""Exporting a Hugging Face student (`student.model: hf:FOLDER`): a folder `save_pretrained` wrote, LoRA merged
first, with the run's tokenizer, that `transformers.AutoModelForCausalLM.from_pretrained(folder)` loads as it is.

runs/NAME/export/student/              config.json, model.safetensors, the tokenizer's files, and
runs/NAME/export/student/distill.json  the run's name, its config (what `distill eval` rebuilds the test split
                                       from) and its sha256, and the PyTorch student's test perplexity
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from distill._io import fsync_dir
from distill.config import LMConfig, validate
from distill.errors import DistillError
from distill.export._shared import folder_bytes, keep_failed, readable, run_fields
from distill.export.formats import METADATA
from distill.export.lm import (
    PARITY_SEQUENCES,
    parity_batch,
    perplexity,
    pytorch_row,
    sequence_parity,
    students,
    tokens_per_second,
)
from distill.measure import where_measured
from distill.models.lm import HF, HFCausalLM, HFTokenizer, _transformers
from distill.pipeline import SavedRun

FOLDER = "student"  # runs/NAME/export/student/


def check_servable(cfg: LMConfig) -> None:
    """A folder `from_pretrained` loads must hold the tokenizer that made the ids: refuse before anything is
    built when the run's is our character tokenizer, which transformers cannot load."""
    if cfg.data.tokenizer == "char" or cfg.data.tokenizer.startswith("char:"):
        raise DistillError(
            f"the student is a Hugging Face model but data.tokenizer is '{cfg.data.tokenizer}', which transformers "
            "cannot load: the folder would not turn text into the ids it was trained on; train with data.tokenizer "
            "set to a Hugging Face tokenizer's folder to export it"
        )


def load_folder(folder: Path) -> HFCausalLM:
    """The exported folder as a user loads it: `AutoModelForCausalLM.from_pretrained(folder)`, nothing else."""
    return HFCausalLM(_transformers().AutoModelForCausalLM.from_pretrained(str(folder))).eval()


@contextmanager
def _atomic_folder(path: Path) -> Iterator[Path]:
    """A temporary folder beside `path`, put in its place (replacing an earlier one) on success, else removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        readable(tmp)
        old = path.with_name(f".{path.name}.old.tmp")
        if path.exists():
            os.replace(path, old)
        os.replace(tmp, path)
        fsync_dir(path.parent)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _write(student: nn.Module, tokenizer: HFTokenizer, folder: Path, meta: dict[str, str]) -> None:
    student.model.save_pretrained(folder)
    tokenizer.inner.save_pretrained(folder)
    (folder / METADATA).write_text(json.dumps(meta, indent=2) + "\n")


def export_folder(run: SavedRun, atol: float) -> dict[str, Any]:
    """The Hugging Face student of `run` as a `save_pretrained` folder, reloaded as a user would and checked
    against the run's student on the test sequences, in batches of the run's test split."""
    check_servable(run.cfg)
    reference, student = students(run)
    results = {"measured_on": where_measured(), "task": "lm", "pytorch": pytorch_row(run, reference)}
    meta = {**run_fields(run), "task": "lm", "test_perplexity": results["pytorch"]["test_perplexity"]}
    ids, context, vocab = run.exp.splits.test.ids, run.cfg.data.context, run.exp.tokenizer.vocab_size
    path = run.path / "export" / FOLDER
    with _atomic_folder(path) as tmp:
        _write(student, run.exp.tokenizer, tmp, meta)
        shipped = load_folder(tmp)
        rows = parity_batch(ids, vocab, run.cfg.data.batch_size)
        parity, problem = sequence_parity(shipped, reference, ids[:PARITY_SEQUENCES], rows, atol)
        if problem:
            raise keep_failed(tmp, path, problem)
        with torch.inference_mode():
            speed = tokens_per_second(shipped, context, vocab)
        results["hf"] = {
            "file": f"{FOLDER}/",
            "test_perplexity": perplexity(shipped, run.exp.test_loader),
            "size_bytes": folder_bytes(tmp),
            "tokens_per_second": speed,
            **parity,
        }
    return results


def read_folder(folder: Path) -> tuple[HFCausalLM, LMConfig, dict[str, Any]]:
    """An exported folder's model, the run's config with the folder's own tokenizer (what ships makes the test
    ids), and its metadata."""
    try:
        meta = json.loads((folder / METADATA).read_text())
    except json.JSONDecodeError:
        meta = None
    if not isinstance(meta, dict) or "config" not in meta:
        raise DistillError(f"{folder / METADATA}: damaged, or holds no config; give a folder `distill export` wrote")
    cfg = validate(yaml.safe_load(meta["config"]), str(folder / METADATA))
    data = cfg.data.model_copy(update={"tokenizer": f"{HF}{folder}"})
    return load_folder(folder), cfg.model_copy(update={"data": data}), meta
