"""`distill cache` for a classifier: the teacher run once over every sample (and each augmented view), its
outputs written shard by shard, each shard whole or not at all (the format: `logits.py`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from distill._io import atomic_path, file_sha256, remove_temporaries, write_json
from distill.cache.logits import DTYPES, MANIFEST, Views, file_name, fingerprint, mismatch, read_manifest
from distill.data import IndexedDataset, Inputs, stacked
from distill.errors import DistillError
from distill.taps import check_paths, run_tapped
from distill.train import parallel
from distill.weights import state_sha256


def _to_numpy(tensor: Tensor) -> np.ndarray:
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: keep its bits as uint16
        return tensor.view(torch.uint16).numpy()
    return tensor.numpy()


@torch.inference_mode()
def _teacher_outputs(
    teacher: nn.Module, inputs: Tensor, features: Sequence[str], top_k: int | None, dtype: torch.dtype
) -> dict[str, Tensor]:
    """The arrays one shard stores for `inputs`, on the CPU in the cache's dtype (indices as int32)."""
    logits, tapped = run_tapped(teacher, inputs, features)
    logits = logits.float()
    if top_k is None:
        outputs = {"logits": logits.to(dtype)}
    else:
        values, indices = logits.topk(top_k, dim=-1)  # (B, k)
        outputs = {"topk_values": values.to(dtype), "topk_indices": indices.int(), "logsumexp": logits.logsumexp(-1)}
    outputs.update({f"feature.{path}": value.float().to(dtype) for path, value in tapped.items()})
    return {name: value.cpu() for name, value in outputs.items()}


def write_cache(
    path: str | Path,
    teacher: nn.Module,
    inputs: Inputs,
    labels: Tensor,
    *,
    data: str,
    augment: str = "none",
    dtype: str = "float16",
    top_k: int | None = None,
    features: Sequence[str] = (),
    shard_rows: int = 4096,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
    progress: bool = True,
    teacher_sha256: str | None = None,
    views: Views | None = None,
    workers: int = 0,
) -> dict[str, Any]:
    """Run `teacher` once over every sample, in index order, and store its outputs in shards under `path`; with
    `views`, over each augmented view of every sample as well. Inputs read as needed (image files) are read by
    `workers` DataLoader workers.

    Resumes an interrupted cache with the same fingerprint; refuses to touch one made for anything else.
    `teacher_sha256` names the weights (default: hashed from `teacher`). Returns the manifest. In a
    data-parallel run the processes take turns at the shards and the first writes the manifest: the files are
    the same, byte for byte, as one process's.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise DistillError(f"teacher.cache {path} is a file; set teacher.cache to a folder")
    try:
        check_paths(teacher, features, "teacher")
    except DistillError as e:
        raise DistillError(f"cache.features: {e}") from None
    teacher = teacher.eval().to(device)
    teacher_sha256 = teacher_sha256 or state_sha256(teacher.state_dict())
    expected = fingerprint(
        teacher_sha256,
        inputs,
        labels,
        data=data,
        augment=augment,
        dtype=dtype,
        top_k=top_k,
        features=features,
        views=views,
    )
    with torch.inference_mode():  # kept apart: the top-k form does not store the width itself
        num_classes = run_tapped(teacher, stacked(inputs[:1]).to(device), ())[0].shape[-1]
    if top_k is not None and not 1 <= top_k <= num_classes:
        raise DistillError(f"cache.top_k={top_k} must lie in [1, {num_classes}]: the teacher has {num_classes} classes")
    new = {"fingerprint": expected, "shard_rows": shard_rows, "num_classes": num_classes, "shards": {}}
    manifest = _resumed(path, expected) or new
    if parallel.is_main():
        remove_temporaries(path)  # of shards a kill interrupted: they are written again, and would stay for good
    parallel.barrier()
    shard = Shard(path, 0, teacher, features, top_k, DTYPES[dtype], batch_size, device, workers)
    _write_shards(shard, inputs, manifest, views, progress=progress and parallel.is_main())
    parallel.barrier()
    return manifest


def _write_shards(shard: Shard, inputs: Inputs, manifest: dict[str, Any], views: Views | None, progress: bool) -> None:
    """Every shard the manifest lacks, the processes taking turns; the manifest written after each turn."""
    rows, count = manifest["shard_rows"], len(inputs)
    n_shards = -(-count // rows)
    todo = [number for number in range(n_shards) if str(number) not in manifest["shards"]]
    bar = tqdm(total=n_shards, initial=n_shards - len(todo), unit="shard", disable=None if progress else True)
    for turn in range(0, len(todo), parallel.world()):  # each process one shard a turn
        mine = todo[turn + parallel.rank()] if turn + parallel.rank() < len(todo) else None
        entry = None
        if mine is not None:
            indices = torch.arange(mine * rows, min((mine + 1) * rows, count))
            checksums = dataclasses.replace(shard, number=mine).write(inputs[indices], indices, views)
            entry = {"rows": len(indices), "sha256": checksums}
        for number, done in parallel.gathered((mine, entry)):  # in process order: in shard order
            if number is not None:
                manifest["shards"][str(number)] = done
                bar.update(1)
        if parallel.is_main():
            write_json(shard.path / MANIFEST, manifest)  # its shards count only from here on
    bar.close()


def _resumed(path: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of an unfinished cache of the same fingerprint, whose finished shards stay; None when there
    is no cache yet. A cache of anything else is refused, never touched."""
    if not (path / MANIFEST).exists():
        return None
    found = read_manifest(path)
    differ = mismatch(found["fingerprint"], expected)
    if differ:
        raise DistillError(
            f"{path} holds a cache of something else ({differ} differ); delete it or set teacher.cache to a new folder"
        )
    return found


def _write_array(file: Path, values: Tensor) -> str:
    """Write `values` as a .npy file, atomically; return the file's sha256."""
    try:
        with atomic_path(file) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, _to_numpy(values))
            return file_sha256(tmp)
    except OSError as e:  # numpy's own short-write error names neither the file nor the cause
        raise DistillError(
            f"cannot write {file}: {e.strerror or e}; is the disk full? run `distill cache` again to continue"
        ) from None


@dataclass
class Shard:
    """Shard `number` of a cache at `path`: the teacher's outputs on its samples, batch by batch, written as one
    array per output (and per augmented view)."""

    path: Path
    number: int
    teacher: nn.Module
    features: Sequence[str]
    top_k: int | None
    dtype: torch.dtype
    batch_size: int
    device: torch.device | str
    workers: int = 0

    def write(self, inputs: Inputs, indices: Tensor, views: Views | None) -> dict[str, str]:
        """Each array's sha256 by name: the samples as they are, then each view."""
        checksums = {}
        for view in (None, *range(views.count if views else 0)):
            prefix = "" if view is None else f"view{view}."
            batches = [self._outputs(part) for part in self._batches(inputs, indices, views, view)]
            for name in batches[0]:
                output = torch.cat([batch[name] for batch in batches])
                checksums[prefix + name] = _write_array(self.path / file_name(prefix + name, self.number), output)
        return checksums

    def _batches(self, inputs: Inputs, indices: Tensor, views: Views | None, view: int | None) -> Iterator[Tensor]:
        """The shard's inputs (or view `view` of them) batch by batch; inputs read as needed are read by the
        workers, so memory holds a batch of them, not a shard."""
        if isinstance(inputs, Tensor):
            yield from (inputs if view is None else views.of(inputs, indices, view)).split(self.batch_size)
            return
        labels = torch.zeros(len(indices), dtype=torch.long)  # not read: the loader's items carry one
        part = IndexedDataset(inputs, labels, indices, None if view is None else views.augment)
        if view is not None:
            part.replay(views.count, views.seed)
            part.seed_epoch(views.seed, view)
        workers = {"num_workers": self.workers} if self.workers else {}
        yield from (batch["input"] for batch in DataLoader(part, batch_size=self.batch_size, **workers))

    def _outputs(self, inputs: Tensor) -> dict[str, Tensor]:
        return _teacher_outputs(self.teacher, inputs.to(self.device), self.features, self.top_k, self.dtype)
