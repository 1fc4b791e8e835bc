"""A run's teacher cache, in every task: opened for a run (refused when stale), or made by `distill cache`.
A classifier's is `logits.py`'s shards; a language model's, `tokens.py`'s top-k."""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill._lock import FolderLock
from distill.cache import tokens
from distill.cache.logits import TeacherCache, Views, fingerprint, read_manifest
from distill.cache.write import write_cache
from distill.errors import ConfigError, DistillError
from distill.train import parallel, resolve_device
from distill.weights import weights_sha256

if TYPE_CHECKING:
    from distill.tasks.base import Task
    from distill.tasks.classify import Experiment
    from distill.tasks.lm import LMExperiment


def _views(exp: Experiment) -> Views | None:
    """The augmented views a cache records (cache.views of the training augmentation, drawn with data.seed),
    or None."""
    cfg = exp.cfg
    return None if cfg.cache.views is None else Views(exp.splits.train.augment, cfg.cache.views, cfg.data.seed)


def _expected(exp: Experiment) -> dict[str, Any]:
    """What the run's cache must match."""
    return fingerprint(
        weights_sha256(exp.cfg.teacher.weights),
        exp.splits.inputs,
        exp.data.labels,
        data=exp.data.description,
        augment=exp.cfg.data.augment,
        dtype=exp.cfg.cache.dtype,
        top_k=exp.cfg.cache.top_k,
        features=exp.cfg.cache.features,
        views=_views(exp),
    )


def open_cache(exp: Experiment) -> TeacherCache:
    """The run's teacher cache, refused when stale: another teacher, other data or order, other augmentation
    or views. A cache of augmented views is replayed: every part of the training data shows, in epoch e, view
    e mod K of its samples, the pixels the teacher's stored outputs are of."""
    expected = _expected(exp)
    found = read_manifest(Path(exp.cfg.teacher.cache))["fingerprint"].get("views")
    if found != expected["views"]:
        made, asked = (_described(views) for views in (found, expected["views"]))
        raise DistillError(
            f"teacher.cache {exp.cfg.teacher.cache} was made for {made}, this run asks for {asked} (data.augment, "
            "cache.views, data.seed); run `distill cache` again, or set them as the cache was made"
        )
    identity = {key: expected[key] for key in ("teacher_sha256", "data", "data_sha256", "num_samples", "augment")}
    cache = TeacherCache(exp.cfg.teacher.cache, identity)
    if cache.num_classes != exp.splits.num_classes:
        raise DistillError(f"teacher.cache holds {cache.num_classes} classes, the data has {exp.splits.num_classes}")
    if cache.views is not None:
        for part in (exp.splits.train, exp.splits.labelled, exp.splits.teacher):
            part.replay(cache.views["count"], cache.views["seed"])
    return cache


def _described(views: dict[str, Any] | None) -> str:
    if views is None:
        return "no augmented views"
    options = ", ".join(f"{key}={value}" for key, value in views.items() if key not in ("augment", "count"))
    return f"{views['count']} views of {views['augment']} ({options})"


def make_cache(exp: Task) -> dict[str, Any]:
    """`distill cache`: run the teacher once over the data and store its outputs in teacher.cache; what it
    made (an empty dict in the processes of a parallel run but the first)."""
    cfg = exp.cfg
    if cfg.teacher is None or cfg.teacher.cache is None or cfg.teacher.weights is None:
        raise ConfigError("distill cache needs teacher.weights (a trained teacher) and teacher.cache (the folder)")
    if cfg.task == "lm":
        return make_token_cache(exp)
    return _make_logits_cache(exp)


def _make_logits_cache(exp: Experiment) -> dict[str, Any]:
    """A classifier's cache: every sample's logits (and features, views), in shards."""
    cfg = exp.cfg
    teacher = exp.net("teacher", cfg.teacher.weights)
    start = time.perf_counter()
    with FolderLock(cfg.teacher.cache) if parallel.is_main() else contextlib.nullcontext():
        manifest = write_cache(
            cfg.teacher.cache,
            teacher,
            exp.splits.inputs,
            exp.data.labels,
            teacher_sha256=weights_sha256(exp.cfg.teacher.weights),
            data=exp.data.description,
            augment=cfg.data.augment,
            dtype=cfg.cache.dtype,
            top_k=cfg.cache.top_k,
            features=cfg.cache.features,
            batch_size=cfg.cache.batch_size,
            shard_rows=cfg.cache.shard_rows,
            device=resolve_device(cfg.train.device),
            progress=cfg.train.progress,
            views=_views(exp),
            workers=exp.workers,
        )
    if not parallel.is_main():  # the first process reports
        return {}
    size = sum(f.stat().st_size for f in Path(cfg.teacher.cache).glob("*.npy"))
    samples = manifest["fingerprint"]["num_samples"]
    return {
        "path": cfg.teacher.cache,
        "samples": samples,
        "shards": len(manifest["shards"]),
        "bytes": size,
        "bytes_per_sample": size / samples,
        "seconds": time.perf_counter() - start,
    }


def _token_fingerprint(exp: LMExperiment) -> dict[str, Any]:
    """What a language model's top-k cache must match: teacher, tokenizer, training text, settings."""
    cfg = exp.cfg
    return tokens.fingerprint(cfg.teacher.weights, exp.tokenizer, exp.splits.train, cfg.cache.top_k, cfg.cache.dtype)


def open_token_cache(exp: LMExperiment, vocab: int) -> tokens.TokenCache:
    """teacher.cache of a language model, refused when made from other weights, text or settings, or for
    another vocabulary."""
    path = exp.cfg.teacher.cache
    cache = tokens.TokenCache(path, _token_fingerprint(exp))
    if cache.vocab != vocab:
        raise DistillError(
            f"{path}: the cache covers {cache.vocab} ids, the run compares {vocab} (method.shared_vocab); make it "
            "again or set the same vocabulary"
        )
    return cache


def make_token_cache(exp: LMExperiment) -> dict[str, Any]:
    """The teacher's top-k next-token distributions on the training sequences, in teacher.cache."""
    cfg = exp.cfg
    teacher = exp.net("teacher", cfg.teacher.weights)
    vocab = teacher.head.weight.shape[0]
    if cfg.cache.top_k > vocab:
        raise ConfigError(f"cache.top_k: {cfg.cache.top_k} is more than the {vocab} tokens of the vocabulary")
    path = Path(cfg.teacher.cache)
    with FolderLock(path):
        start = time.perf_counter()
        made = tokens.write_token_cache(
            path, teacher, exp.splits.train, _token_fingerprint(exp), vocab=vocab, batch_size=cfg.data.batch_size
        )
    return {**made, "seconds": time.perf_counter() - start}
