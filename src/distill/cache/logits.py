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
from torch import Tensor

from distill._io import file_sha256
from distill.data import Augment, Inputs, augmented, view_key
from distill.errors import DistillError, first_line

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

    def of(self, inputs: Inputs, indices: Tensor, view: int) -> Tensor:
        """View `view` of the samples `indices` whose inputs are `inputs`."""
        keys = [view_key(self.seed, view, index) for index in indices.tolist()]
        return torch.stack([augmented(inputs, i, self.augment, key) for i, key in enumerate(keys)])


def _sha256(inputs: Inputs, labels: Tensor) -> str:
    """The inputs' bytes, or the identity of inputs read as needed, and the labels'."""
    digest = hashlib.sha256()
    for part in (inputs, labels):
        if isinstance(part, Tensor):
            digest.update(part.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            digest.update(part.sha256().encode())
    return digest.hexdigest()


def fingerprint(
    teacher_sha256: str,
    inputs: Inputs,
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


def mismatch(found: dict[str, Any], expected: dict[str, Any]) -> str | None:
    differ = [key for key in expected if found.get(key) != expected[key]]
    return ", ".join(differ) if differ else None


def file_name(output: str, shard: int) -> str:
    return f"{output}-{shard:05d}.npy"


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
        if expected is not None and (differ := mismatch(self.fingerprint, expected)):
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
            file = self.path / file_name(name, shard)
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
