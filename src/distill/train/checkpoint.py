"""Crash-safe checkpoints: each epoch is a complete folder, and small pointer files name the last and best.

    checkpoints/epoch-0003/model.safetensors   module weights (or one NAME.safetensors per trained part)
    checkpoints/epoch-0003/state.pt            optimizer, scheduler, RNG, epoch, step (loaded weights_only)
    checkpoints/epoch-0003/sha256.json         the checksum of each file above, as written
    checkpoints/last.json, best.json           {"epoch": 3, "step": 300, "dir": "epoch-0003", ...}

A folder is written under a temporary name and renamed when complete; a pointer is replaced
atomically only after its folder is in place. A crash at any moment leaves the previous pair intact.
The folder before the last is kept too (last.json names it "previous"): a last checkpoint whose bytes
changed on disk since they were written is refused on load, and the previous one is there to resume from.
"""

from __future__ import annotations

import json
import logging
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from distill._io import file_sha256, fsync_dir, fsync_file, write_json
from distill.errors import DistillError
from distill.train import parallel
from distill.weights import load_weights, write_safetensors

logger = logging.getLogger(__name__)
CHECKSUMS = "sha256.json"


def parts_of(module: nn.Module) -> dict[str, nn.Module]:
    """The separately trained parts of `module`: what its `trained_parts()` names (peers trained together, each
    with its own optimizer and weights file), else the module itself as "model"."""
    named = getattr(module, "trained_parts", None)
    return named() if callable(named) else {"model": module}


def rng_state() -> dict[str, Any]:
    np_kind, np_keys, np_pos, np_gauss, np_cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [np_kind, torch.from_numpy(np_keys.copy()), np_pos, np_gauss, np_cached],
        "python": random.getstate(),
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():  # as many devices as this machine shows of those saved
        for device, device_state in enumerate(state["cuda"][: torch.cuda.device_count()]):
            torch.cuda.set_rng_state(device_state, device)
    np_kind, np_keys, *rest = state["numpy"]
    np.random.set_state((np_kind, np_keys.numpy(), *rest))
    random.setstate(state["python"])


def _same(file: Path, checksum: str) -> bool:
    return file.is_file() and file_sha256(file) == checksum


def _load_pointer(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        pointer = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        problem = str(e)
    else:  # it names a folder of its own checkpoints, and nothing else
        fine = (
            isinstance(pointer, dict)
            and re.fullmatch(r"epoch-\d{4,}", str(pointer.get("dir")))
            and (pointer.get("previous") is None or re.fullmatch(r"epoch-\d{4,}", str(pointer["previous"])))
        )
        problem = None if fine and isinstance(pointer.get("epoch"), int) else "not a checkpoint pointer"
    if problem:
        raise DistillError(f"{path} is corrupt ({problem}); delete it to fall back to an older checkpoint")
    return pointer


class Checkpoints:
    """Reads and writes the checkpoints of one training run in `root`."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def pointer(self, which: str) -> dict[str, Any] | None:
        """The contents of last.json or best.json, or None when no checkpoint was written yet."""
        return _load_pointer(self.root / f"{which}.json")

    def _kept(self) -> set[str]:
        """The folders the pointers name: last, the one before it, and best."""
        last, best = self.pointer("last"), self.pointer("best")
        return {p["dir"] for p in (last, best) if p} | ({last["previous"]} if last and last.get("previous") else set())

    def save(self, module: nn.Module, state: dict[str, Any], *, epoch: int, step: int, best: dict | None) -> None:
        """Write epoch `epoch` as a complete folder, point last (and best, when given) at it, prune the rest."""
        name = f"epoch-{epoch:04d}"
        tmp, final = self.root / f".{name}.tmp", self.root / name
        named = self._kept()
        for stale in (tmp, final):  # leftovers of an interrupted attempt at this epoch; never a pointed-at folder
            if stale.name not in named:
                shutil.rmtree(stale, ignore_errors=True)
        last = self.pointer("last")
        previous = (last["dir"] if last["dir"] != name else last.get("previous")) if last else None
        try:
            self._write_folder(tmp, module, {**state, "epoch": epoch, "step": step})
            tmp.rename(final)
            fsync_dir(self.root)
            # last before best: a crash between them leaves best.json naming an older folder, which is still kept
            write_json(self.root / "last.json", {"epoch": epoch, "step": step, "dir": name, "previous": previous})
            if best is not None:
                write_json(self.root / "best.json", {**best, "epoch": epoch, "step": step, "dir": name})
        except OSError as e:  # a full disk, a folder made read-only: the pointers still name the previous one
            shutil.rmtree(tmp, ignore_errors=True)
            reason = e.strerror or str(e)
            last = self.pointer("last")
            kept = f"the last good checkpoint (epoch {last['epoch'] + 1}) is kept" if last else "no checkpoint yet"
            raise DistillError(
                f"cannot write checkpoint {final}: {reason}; {kept}; free space or fix the folder's "
                "permissions, then continue with --resume"
            ) from None
        self.prune()

    @staticmethod
    def _write_folder(folder: Path, module: nn.Module, state: dict[str, Any]) -> None:
        folder.mkdir(parents=True)
        metadata = {"epoch": str(state["epoch"]), "step": str(state["step"])}
        for part, net in parts_of(module).items():
            write_safetensors(net, folder / f"{part}.safetensors", metadata)
        with open(folder / "state.pt", "wb") as f:  # given a path, torch.save turns a failed write into a RuntimeError
            torch.save(state, f)
        for f in folder.iterdir():
            fsync_file(f)
        checksums = {f.name: file_sha256(f) for f in sorted(folder.iterdir())}
        write_json(folder / CHECKSUMS, checksums)
        fsync_dir(folder)

    def prune(self) -> None:
        """Delete every epoch folder no pointer names (a crash while pruning can leave one behind)."""
        keep = self._kept()
        for folder in self.root.glob("epoch-*"):
            if folder.name not in keep:
                shutil.rmtree(folder, ignore_errors=True)

    def load(self, which: str, module: nn.Module) -> dict[str, Any]:
        """Load the `which` checkpoint's weights into `module`; return its training state. A last checkpoint
        whose folder was deleted gives way to the previous one. In a data-parallel run every process loads it;
        the first alone checks its checksums (and tells the others) and fixes a pointer a crash left behind."""
        repair = parallel.is_main()
        pointer = self.pointer(which)
        if pointer is None:
            raise DistillError(f"{self.root} holds no '{which}' checkpoint; train without --resume to start the run")
        gone, previous = not (self.root / pointer["dir"]).exists(), pointer.get("previous")
        if which == "last" and gone and previous and (self.root / previous).exists():
            logger.warning("%s is gone; resuming from the one before it, %s", pointer["dir"], previous)
            if repair:
                self._forget_best(pointer["dir"])
            pointer = {**pointer, "dir": previous, "previous": None}
        folder = self.root / pointer["dir"]
        if not folder.is_dir():
            raise DistillError(f"{folder}, which {which}.json names, is gone; train without --resume")
        problem = self._changed(folder, pointer, which) if repair else None
        if problem := parallel.gathered(problem)[0]:
            raise DistillError(problem)
        for part, net in parts_of(module).items():
            load_weights(net, folder / f"{part}.safetensors")
        try:
            state = torch.load(folder / "state.pt", weights_only=True)
        except Exception as e:  # truncated or tampered: refuse rather than resume from garbage
            raise DistillError(
                f"{folder / 'state.pt'} cannot be read ({type(e).__name__}); the checkpoint is damaged"
            ) from None
        if which == "last" and repair:
            self._repoint_best(state, pointer)
        return state

    def _forget_best(self, gone: str) -> None:
        """best.json naming a folder that is gone names nothing to trust: it goes too, and the run picks anew."""
        best = self.pointer("best")
        if best is not None and best["dir"] == gone:
            (self.root / "best.json").unlink()
            fsync_dir(self.root)

    def _changed(self, folder: Path, pointer: dict[str, Any], which: str) -> str | None:
        """Why a checkpoint whose files changed since they were written is refused, naming the one to fall back
        to; None when its files are as written."""
        try:
            checksums = json.loads((folder / CHECKSUMS).read_text())
        except (OSError, ValueError):
            checksums = None
        if not isinstance(checksums, dict):
            changed = f"{folder / CHECKSUMS} is missing or damaged"
        else:
            files = (folder / name for name, expected in checksums.items() if not _same(folder / name, expected))
            changed = next((f"{file} changed on disk after it was written (checksum)" for file in files), None)
        if changed is None:
            return None
        previous = pointer.get("previous")
        if which != "last":
            offer = f"the {which} checkpoint cannot be trusted: delete {self.root / f'{which}.json'} and train again"
        elif previous and (self.root / previous).exists():
            epoch = int(previous.split("-")[1]) + 1
            offer = f"the previous complete checkpoint is {self.root / previous} (epoch {epoch}): "
            offer += f"delete {folder} to resume from it"
        else:
            offer = "no earlier checkpoint is kept: train without --resume"
        return f"{changed}; {offer}"

    def _repoint_best(self, state: dict[str, Any], last: dict[str, Any]) -> None:
        """A crash between last.json and best.json of a new best epoch leaves best.json naming the one before;
        the last checkpoint's own state knows it was the best. Point best.json at it again."""
        best = state.get("best")
        if best is None or best["epoch"] != state["epoch"] + 1:  # history counts epochs from 1
            return
        pointer = self.pointer("best")
        if pointer is None or pointer["dir"] != last["dir"]:
            repointed = {**best, "epoch": state["epoch"], "step": state["step"], "dir": last["dir"]}
            write_json(self.root / "best.json", repointed)
            self.prune()  # the folder best.json named before
