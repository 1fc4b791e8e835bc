"""Teacher outputs on disk: computed once by `distill cache`, read by sample index while the student trains.

    CACHE/manifest.json            fingerprint, layout, and every finished shard with its checksums
    CACHE/logits-00000.npy         (rows, C) teacher logits of samples 0..rows-1, float16/bfloat16/float32
    CACHE/feature.layer3-00000.npy tapped teacher features, when asked for
    top-k caches hold, instead of logits, topk_values (rows, k), topk_indices (rows, k) and logsumexp (rows,)
    CACHE/view2.logits-00000.npy   with `views`, the same arrays again for each augmented view of the samples

Shards are written whole (temporary file, then rename) and listed in the manifest only once complete, so an
interrupted `distill cache` resumes at the first missing shard, and a half-written shard is never read. The
fingerprint names the teacher's weights, the data (identity and order), its augmentation and views, the
dtype, k and the features: a cache that does not match the run that reads it is refused.

An augmented cache ("fast knowledge distillation", Shen & Xing 2022) records the teacher on K views of every
sample, view v of sample i drawn from (seed, v, i) alone; training replays view `epoch mod K`, so the student
sees the very pixels the teacher's stored outputs are of.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from distill._io import atomic_path, file_sha256, remove_temporaries, write_json
from distill.data import Augment, view_key
from distill.errors import DistillError, first_line
from distill.taps import check_paths, run_tapped
from distill.train import parallel

MANIFEST = "manifest.json"
_VIEW = re.compile(r"view(\d+)\.")  # the prefix of an augmented view's arrays
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Views:
    """`count` augmented views of every sample: view v of sample i is `augment(input, view_key(seed, v, i))`."""

    augment: Augment
    count: int
    seed: int

    def describe(self) -> dict[str, Any]:
        return {"augment": self.augment.name, **self.augment.params(), "count": self.count, "seed": self.seed}

    def of(self, inputs: Tensor, indices: Tensor, view: int) -> Tensor:
        """View `view` of the samples `indices` whose inputs are `inputs`."""
        keys = [view_key(self.seed, view, index) for index in indices.tolist()]
        return torch.stack([self.augment(x, key) for x, key in zip(inputs, keys, strict=True)])


def _sha256(*tensors: Tensor) -> str:
    digest = hashlib.sha256()
    for tensor in tensors:
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def state_sha256(state: dict[str, Tensor]) -> str:
    """A weights fingerprint: the tensors of a state dict in key order."""
    return _sha256(*(state[key] for key in sorted(state)))


def fingerprint(
    teacher_sha256: str,
    inputs: Tensor,
    labels: Tensor,
    *,
    data: str,
    augment: str,
    dtype: str,
    top_k: int | None,
    features: Sequence[str],
    views: Views | None = None,
) -> dict[str, Any]:
    """Everything a cache's contents depend on; two caches with equal fingerprints hold the same numbers."""
    return {
        "views": views.describe() if views else None,
        "teacher_sha256": teacher_sha256,
        "data": data,
        "data_sha256": _sha256(inputs, labels),  # identity and order of the samples
        "num_samples": len(labels),
        "augment": augment,
        "dtype": dtype,
        "top_k": top_k,
        "features": list(features),
    }


def _mismatch(found: dict[str, Any], expected: dict[str, Any]) -> str | None:
    differ = [key for key in expected if found.get(key) != expected[key]]
    return ", ".join(differ) if differ else None


def _file_name(output: str, shard: int) -> str:
    return f"{output}-{shard:05d}.npy"


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
    inputs: Tensor,
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
) -> dict[str, Any]:
    """Run `teacher` once over every sample, in index order, and store its outputs in shards under `path`; with
    `views`, over each augmented view of every sample as well.

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
        num_classes = run_tapped(teacher, inputs[:1].to(device), ())[0].shape[-1]
    if top_k is not None and not 1 <= top_k <= num_classes:
        raise DistillError(f"cache.top_k={top_k} must lie in [1, {num_classes}]: the teacher has {num_classes} classes")
    new = {"fingerprint": expected, "shard_rows": shard_rows, "num_classes": num_classes, "shards": {}}
    manifest = _resumed(path, expected) or new
    if parallel.is_main():
        remove_temporaries(path)  # of shards a kill interrupted: they are written again, and would stay for good
    parallel.barrier()
    n_shards = -(-len(labels) // manifest["shard_rows"])
    rows = manifest["shard_rows"]
    todo = [shard for shard in range(n_shards) if str(shard) not in manifest["shards"]]
    show = progress and parallel.is_main()
    bar = tqdm(total=n_shards, initial=n_shards - len(todo), unit="shard", disable=None if show else True)
    for turn in range(0, len(todo), parallel.world()):  # each process one shard a turn
        mine = todo[turn + parallel.rank()] if turn + parallel.rank() < len(todo) else None
        entry = None
        if mine is not None:
            indices = torch.arange(mine * rows, min((mine + 1) * rows, len(labels)))
            clean, checksums = inputs[indices], {}
            for view in (None, *range(views.count if views else 0)):  # the samples as they are, then each view
                prefix, part = ("", clean) if view is None else (f"view{view}.", views.of(clean, indices, view))
                batches = [
                    _teacher_outputs(teacher, part[i : i + batch_size].to(device), features, top_k, DTYPES[dtype])
                    for i in range(0, len(part), batch_size)
                ]
                for name in batches[0]:
                    output = torch.cat([b[name] for b in batches])
                    checksums[prefix + name] = _write_array(path / _file_name(prefix + name, mine), output)
            entry = {"rows": len(indices), "sha256": checksums}
        for shard, done in parallel.gathered((mine, entry)):  # in process order: in shard order
            if shard is not None:
                manifest["shards"][str(shard)] = done
                bar.update(1)
        if parallel.is_main():
            write_json(path / MANIFEST, manifest)  # its shards count only from here on
    bar.close()
    parallel.barrier()
    return manifest


def _resumed(path: Path, expected: dict[str, Any]) -> dict[str, Any] | None:
    """The manifest of an unfinished cache of the same fingerprint, whose finished shards stay; None when there
    is no cache yet. A cache of anything else is refused, never touched."""
    if not (path / MANIFEST).exists():
        return None
    found = read_manifest(path)
    differ = _mismatch(found["fingerprint"], expected)
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


def read_manifest(path: Path) -> dict[str, Any]:
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise DistillError(f"{path} holds no teacher cache; make one with `distill cache CONFIG`") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problem = str(e)
    else:
        problem = _manifest_problem(manifest)
    if problem:
        raise DistillError(f"{path / MANIFEST} is damaged ({problem}); delete the cache and run `distill cache` again")
    return manifest


def _manifest_problem(manifest: Any) -> str | None:
    """What keeps a parsed manifest from describing a cache, or None: an edited or foreign file fails here, once."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("fingerprint"), dict):
        return "no fingerprint"
    found = manifest["fingerprint"]
    if found.get("dtype") not in DTYPES:
        return f"dtype {found.get('dtype')!r} is none of {', '.join(DTYPES)}"
    if found.get("top_k") is not None and not _positive_int(found["top_k"]):
        return f"top_k {found['top_k']!r} is not a positive integer"
    if not isinstance(found.get("features"), list):
        return "features is not a list"
    views = found.get("views")
    if views is not None and not (isinstance(views, dict) and _positive_int(views.get("count"))):
        return "views has no positive count"
    counts = {"num_samples": found.get("num_samples"), **{k: manifest.get(k) for k in ("shard_rows", "num_classes")}}
    for key, value in counts.items():
        if not _positive_int(value):
            return f"{key} {value!r} is not a positive integer"
    shards = manifest.get("shards")
    if not isinstance(shards, dict) or not all(
        isinstance(entry, dict) and _positive_int(entry.get("rows")) and isinstance(entry.get("sha256"), dict)
        for entry in shards.values()
    ):
        return "shards must map each shard to its rows and checksums"
    return None


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


class TeacherCache:
    """A finished cache, opened for reading: shards memory-mapped, checksums verified, rows by sample index."""

    def __init__(self, path: str | Path, expected: dict[str, Any] | None = None, *, verify: bool = True):
        self.path = Path(path)
        manifest = read_manifest(self.path)
        self.fingerprint = manifest["fingerprint"]
        if expected is not None and (differ := _mismatch(self.fingerprint, expected)):
            raise DistillError(
                f"teacher.cache {self.path} is stale: its {differ} differ from this run's; run `distill cache` again"
            )
        self.rows = manifest["shard_rows"]
        n_shards = -(-self.fingerprint["num_samples"] // self.rows)
        missing = [s for s in range(n_shards) if str(s) not in manifest["shards"]]
        if missing:
            raise DistillError(
                f"teacher.cache {self.path} is unfinished ({len(missing)} of {n_shards} shards "
                "missing); run `distill cache` again to complete it"
            )
        self.top_k = self.fingerprint["top_k"]
        self.views: dict[str, Any] | None = self.fingerprint.get("views")  # caches made before views had none
        self.num_classes = manifest["num_classes"]
        self.dtype = DTYPES[self.fingerprint["dtype"]]
        self.shards = [self._open(s, manifest["shards"][str(s)], verify) for s in range(n_shards)]

    def __deepcopy__(self, memo: dict) -> TeacherCache:
        return self  # read-only: copies of a Distiller (the dry run before training) read the same files

    def _open(self, shard: int, entry: dict[str, Any], verify: bool) -> dict[int | None, dict[str, np.ndarray]]:
        """The shard's arrays by view (None: the samples as they are), each by its name within the view."""
        arrays: dict[str, np.ndarray] = {}
        for name, checksum in entry["sha256"].items():
            file = self.path / _file_name(name, shard)
            if verify and (not file.exists() or file_sha256(file) != checksum):
                raise DistillError(f"{file} is missing or damaged (checksum); run `distill cache` again")
            try:
                arrays[name] = np.load(file, mmap_mode="r")
            except (OSError, ValueError) as e:
                raise DistillError(f"{file} cannot be read ({first_line(e)}); run `distill cache` again") from e
            shape, logits = arrays[name].shape, _VIEW.sub("", name) == "logits"
            if shape[:1] != (entry["rows"],) or (logits and shape[1:] != (self.num_classes,)):
                expected = f"{entry['rows']} rows" + (f" of {self.num_classes} logits" if logits else "")
                raise DistillError(
                    f"{file} is damaged (shaped {shape}, listed as {expected}); run `distill cache` again"
                )
        views: dict[int | None, dict[str, np.ndarray]] = {}
        for name, array in arrays.items():
            of_view = _VIEW.match(name)
            view, base = (int(of_view[1]), name[of_view.end() :]) if of_view else (None, name)
            views.setdefault(view, {})[base] = array
        return views

    def read(self, index: Tensor, view: int | None = None) -> dict[str, Tensor]:
        """The stored rows of samples `index` (B,), as float32 tensors (indices as int64): the teacher's outputs
        on the samples as they are, or on their augmented view `view`."""
        index = index.cpu().numpy()
        if view not in self.shards[0]:
            raise DistillError(f"teacher.cache {self.path} holds no view {view} of the samples")
        if len(self.shards) == 1:  # the common small cache: one gather per array
            return {name: self._tensor(name, array[index]) for name, array in self.shards[0][view].items()}
        shard_of, row_of = np.divmod(index, self.rows)
        out: dict[str, np.ndarray] = {}
        for shard in np.unique(shard_of):
            picked = shard_of == shard
            for name, array in self.shards[shard][view].items():
                if name not in out:
                    out[name] = np.empty((len(index), *array.shape[1:]), dtype=array.dtype)
                out[name][picked] = array[row_of[picked]]
        return {name: self._tensor(name, array) for name, array in out.items()}

    def _tensor(self, name: str, array: np.ndarray) -> Tensor:
        tensor = torch.from_numpy(array)
        if name == "topk_indices":
            return tensor.long()
        if self.dtype == torch.bfloat16 and tensor.dtype == torch.uint16:
            tensor = tensor.view(torch.bfloat16)
        return tensor.float()


def topk_logits(values: Tensor, indices: Tensor, logsumexp: Tensor, num_classes: int) -> Tensor:
    """Full (B, C) logits from a top-k cache: the k stored logits exactly, and the probability the teacher
    left outside them spread evenly over the other classes. At T = 1 its softmax gives each top-k class its
    true probability and the rest together their true total."""
    k = values.shape[-1]
    top_mass = (values - logsumexp[:, None]).exp().sum(-1)  # (B,)
    rest = (1.0 - top_mass).clamp(min=1e-12) / max(num_classes - k, 1)
    logits = (rest.log() + logsumexp)[:, None].expand(-1, num_classes).clone()  # (B, C)
    return logits.scatter(-1, indices, values)
