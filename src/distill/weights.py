"""Model weights on disk: safetensors by default; `.pt`/`.pth` state dicts only with `weights_only=True`."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_model
from torch import Tensor, nn

from distill._io import atomic_path, existing
from distill.errors import DistillError, first_line


def save_weights(module: nn.Module, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """Write `module`'s state dict as safetensors, atomically."""
    with atomic_path(path) as tmp:
        write_safetensors(module, tmp, metadata)


def write_safetensors(module: nn.Module, file: Path, metadata: dict[str, str] | None = None) -> None:
    """safetensors' `save_model`, whose write errors (a full disk, a file size limit) become the OSError they
    are, naming `file`, instead of a SafetensorError quoting Rust."""
    try:
        save_model(module, str(file), metadata=metadata)
    except SafetensorError as e:
        code = re.search(r"(?:code: |os error )(\d+)", str(e))  # the errno, as Rust's io::Error prints it
        number = int(code[1]) if code else errno.EIO
        raise OSError(number, os.strerror(number), str(file)) from None
    if metadata and len(metadata) > 1:
        _sort_metadata(file)


def _sort_metadata(file: Path) -> None:
    """Rewrite the header of a safetensors file with its metadata keys in sorted order.

    safetensors keeps metadata in a hash map whose order changes from process to process, so the same weights
    would give files that differ in a few header bytes. Sorted keys make the same run write the same bytes.
    The keys only move: the header keeps its length, and no tensor byte moves."""
    with open(file, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")  # the header's length, then the header as JSON
        header = json.loads(f.read(size))
        metadata = dict(sorted(header.pop("__metadata__").items()))
        text = json.dumps({"__metadata__": metadata, **header}, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) > size:  # cannot happen for a header safetensors wrote: the same JSON, keys reordered
            raise OSError(errno.EIO, "the safetensors header grew when its metadata was sorted", str(file))
        f.seek(8)
        f.write(text.ljust(size, b" "))  # safetensors pads its header with spaces too


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a weights file. Never runs code: safetensors, or `torch.load(weights_only=True)`."""
    path = existing(path, "a weights file (.safetensors or .pt)", kind="file")
    if path.suffix == ".safetensors":
        try:
            return load_file(path)
        except (SafetensorError, OSError) as e:
            raise DistillError(f"{path} is not a readable safetensors file ({first_line(e)})") from e
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # includes pickles that would run code: weights_only refuses them
        reason = first_line(e)[:200]
        raise DistillError(f"{path} cannot be loaded safely as weights ({reason}); save it as safetensors") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]  # the common {"state_dict": ...} wrapping
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise DistillError(f"{path} holds no state dict of tensors")
    return state


def load_weights(module: nn.Module, path: str | Path) -> None:
    """Load a weights file into `module` strictly; a file made for another architecture is a clear error."""
    _load(module, read_state_dict(path), path)


def load_fitting(module: nn.Module, path: str | Path) -> list[str]:
    """Load a weights file into `module`, where the final classifier (the last module holding parameters) may
    have another class count in the file. Every other tensor loads strictly; the head's tensors whose first
    dimension differs stay as the module made them, and their keys are returned (empty when all fit). Any other
    difference is a DistillError naming the key."""
    state = read_state_dict(path)
    expected = module.state_dict()
    head = final_layer(module)
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    new = [k for k in wrong if k.rpartition(".")[0] == head and state[k].shape[1:] == expected[k].shape[1:]]
    if outside := [k for k in wrong if k not in new]:
        k = outside[0]
        raise DistillError(
            f"{path} was saved from another architecture: {k} is {tuple(state[k].shape)} in the file, "
            f"{tuple(expected[k].shape)} in the model (only the final classifier, {head}, may differ in its classes)"
        )
    _load(module, {k: v for k, v in state.items() if k not in new}, path, new=new)
    return new


def final_layer(module: nn.Module) -> str:
    """The path of `module`'s final classifier: the last of its modules that holds parameters itself."""
    holders = [name for name, part in module.named_modules() if next(part.parameters(recurse=False), None) is not None]
    return holders[-1] if holders else ""


def _load(module: nn.Module, state: dict[str, Tensor], path: str | Path, new: Collection[str] = ()) -> None:
    """Load `state` strictly, but for the keys `new`, which the module keeps as it made them."""
    expected = module.state_dict()
    # save_model stores tied tensors once: a key missing from the file is fine when its storage is loaded by another
    loaded_storage = {expected[k].data_ptr() for k in state if k in expected}
    absent = set(expected) - set(state) - set(new)
    missing = sorted(k for k in absent if expected[k].data_ptr() not in loaded_storage)
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        details = []
        if missing:
            details.append(f"missing {missing[:3]}{'...' if len(missing) > 3 else ''}")
        if unexpected:
            details.append(f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}")
        if wrong:
            k = wrong[0]
            details.append(f"{k} is {tuple(state[k].shape)} in the file, {tuple(expected[k].shape)} in the model")
        raise DistillError(f"{path} was saved from another architecture: {'; '.join(details)}")
    module.load_state_dict(state, strict=False)  # strictness checked above, tied tensors allowed


@dataclass(frozen=True)
class Start:
    """Where a model's weights came from before this run trained it: what the summary's `started_from` says,
    e.g. "hf:vit (pretrained; new head for 10 classes)", "t.safetensors sha256 0123456789ab",
    "random (train.seed=0)", "fine-tuned from hf:vit (pretrained; new head for 10 classes) for 3 epochs"."""

    source: str  # a model name, a file and its weights hash, "random"
    notes: tuple[str, ...] = ()  # "pretrained", "weights=DEFAULT", "train.seed=0"
    pretrained: bool = False  # trained before this run: a stage that trains it fine-tunes it
    new_head: int | None = None  # the data's class count, when the saved head had another and a new one was made

    def __str__(self) -> str:
        notes = [*self.notes, *([f"new head for {self.new_head} classes"] if self.new_head else [])]
        return f"{self.source} ({'; '.join(notes)})" if notes else self.source

    def fine_tuned(self, epochs: int) -> Start:
        """This start, after `epochs` epochs on the data's labels."""
        return Start(f"fine-tuned from {self} for {epochs} epochs", pretrained=True)

    @classmethod
    def of_file(cls, path: str | Path, new_head: int | None = None) -> Start:
        """A weights file, named with the first 12 hex digits of its `weights_sha256`."""
        return cls(f"{path} sha256 {weights_sha256(path)[:12]}", pretrained=True, new_head=new_head)


def mark_start(model: nn.Module, start: Start) -> nn.Module:
    """Record on `model` where its weights came from (`start_of` reads it); returns `model`."""
    model.started_from = start
    return model


def start_of(model: nn.Module) -> Start | None:
    """Where `model`'s weights came from, as `mark_start` recorded; None when nothing did."""
    start = getattr(model, "started_from", None)
    return start if isinstance(start, Start) else None


def state_sha256(state: dict[str, Tensor]) -> str:
    """The weights' fingerprint: each tensor's name and bytes, in name order. A file's metadata (the stage that
    wrote it) is left out, so the same weights always give the same hash, however they were saved."""
    digest = hashlib.sha256()
    for name in sorted(state):
        digest.update(name.encode())
        digest.update(state[name].detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def weights_sha256(path: str | Path) -> str:
    """`state_sha256` of a weights file's tensors."""
    return state_sha256(read_state_dict(path))
