"""A config's teacher cache: opened for a run (refused when stale), or made by `distill cache`."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill._lock import FolderLock
from distill.build import Experiment, build_experiment, build_net
from distill.cache import TeacherCache, fingerprint, state_sha256, write_cache
from distill.errors import ConfigError, DistillError
from distill.train import resolve_device
from distill.weights import read_state_dict

if TYPE_CHECKING:
    from distill.config import Config


def _identity(exp: Experiment) -> tuple[str, dict[str, Any]]:
    """The teacher weights' hash (from the file: no teacher is built) and what a cache must match."""
    teacher_sha256 = state_sha256(read_state_dict(exp.cfg.teacher.weights))
    expected = fingerprint(
        teacher_sha256,
        exp.data.inputs,
        exp.data.labels,
        data=exp.data.description,
        augment=exp.cfg.data.augment,
        dtype=exp.cfg.cache.dtype,
        top_k=exp.cfg.cache.top_k,
        features=exp.cfg.cache.features,
    )
    return teacher_sha256, expected


def open_cache(exp: Experiment) -> TeacherCache:
    """The run's teacher cache, refused when stale: another teacher, other data or order, other augmentation."""
    _, expected = _identity(exp)
    identity = {key: expected[key] for key in ("teacher_sha256", "data", "data_sha256", "num_samples", "augment")}
    cache = TeacherCache(exp.cfg.teacher.cache, identity)
    if cache.num_classes != exp.splits.num_classes:
        raise DistillError(f"teacher.cache holds {cache.num_classes} classes, the data has {exp.splits.num_classes}")
    return cache


def make_cache(cfg: Config) -> dict[str, Any]:
    """`distill cache`: run the teacher once over every sample and store its outputs in teacher.cache."""
    if cfg.teacher is None or cfg.teacher.cache is None or cfg.teacher.weights is None:
        raise ConfigError("distill cache needs teacher.weights (a trained teacher) and teacher.cache (the folder)")
    exp = build_experiment(cfg)
    teacher = build_net(exp, "teacher", cfg.teacher.weights)
    teacher_sha256, expected = _identity(exp)
    start = time.perf_counter()
    with FolderLock(cfg.teacher.cache):
        manifest = write_cache(
            cfg.teacher.cache,
            teacher,
            exp.data.inputs,
            exp.data.labels,
            teacher_sha256=teacher_sha256,
            data=expected["data"],
            augment=expected["augment"],
            dtype=cfg.cache.dtype,
            top_k=cfg.cache.top_k,
            features=cfg.cache.features,
            batch_size=cfg.cache.batch_size,
            device=resolve_device(cfg.train.device),
            progress=cfg.train.progress,
        )
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
