"""Runs the `distill` command with every file write counted, and dies by SIGKILL inside a chosen one.

    python _driver.py PLAN_JSON train CONFIG [--resume] [--set KEY=VALUE ...]

PLAN_JSON holds (each optional):
    kill_at     1-based index of the write event to die in
    how         "before" the call, "after" it returns, or "inside" (the default): a write with half its
                bytes on disk, a rename or an fsync (all or nothing) just done
    expect      name the event at kill_at must have: a changed order of writes fails loudly (exit 3)
    trace       file that receives {"events": [[name, target], ...], "seconds": work time} at the end
    ready       file created once the imports are done, for a timer in the parent to start from

The patches live only in this process: the product has no fault hooks.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path

import numpy as np
import safetensors.torch
import torch

import distill.cli
from distill.train.metrics import MetricsLog

PLAN: dict = {}  # from the command line, in main()
EVENTS: list[list[str]] = []
_inside = False  # a primitive that calls another (save_model calls save_file) is one event


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _path_of(target: object) -> object:
    """The path of a path, or of an open file (np.save writes to one)."""
    return target if isinstance(target, (str, os.PathLike)) else getattr(target, "name", target)


def _relative(target: object) -> str:
    if isinstance(target, int):  # a file descriptor (os.fsync)
        try:
            target = os.readlink(f"/proc/self/fd/{target}")
        except OSError:
            return f"fd {target}"
    target = _path_of(target)
    try:
        return str(Path(target).resolve().relative_to(Path.cwd()))
    except (TypeError, ValueError):
        return str(target)


def _size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else 0


def _half(name: str, real, args: tuple, kwargs: dict, target: object) -> None:
    """Run the write, then cut what it added in half: the file a kill mid-write leaves behind."""
    path = Path(_path_of(target))
    if name == "shutil.rmtree":  # half a deletion: one file gone
        files = sorted(p for p in path.rglob("*") if p.is_file())
        if files:
            files[0].unlink()
        return
    before = _size(path)
    real(*args, **kwargs)
    if hasattr(target, "flush"):
        target.flush()
    after = _size(path)
    if after > before:
        os.truncate(path, before + (after - before) // 2)


def _counted(name: str, real, target_of):
    @functools.wraps(real)
    def wrapper(*args, **kwargs):
        global _inside
        if _inside:
            return real(*args, **kwargs)
        target = target_of(args, kwargs)
        EVENTS.append([name, _relative(target)])
        if len(EVENTS) != PLAN.get("kill_at"):
            _inside = True
            try:
                return real(*args, **kwargs)
            finally:
                _inside = False
        if PLAN.get("expect") not in (None, name):
            print(f"driver: event {len(EVENTS)} is {name}, not {PLAN['expect']}", file=sys.stderr)
            os._exit(3)
        _inside = True
        how = PLAN.get("how", "inside")
        if how == "inside" and name in WRITES:
            _half(name, real, args, kwargs, target)
        elif how in ("inside", "after"):
            real(*args, **kwargs)
        _die()

    return wrapper


def _arg(i: int, key: str):
    return lambda args, kwargs: args[i] if len(args) > i else kwargs.get(key)


# (name, owner, attribute, where the written path is among the arguments)
PRIMITIVES = [
    ("torch.save", torch, "save", _arg(1, "f")),
    ("safetensors.save_model", safetensors.torch, "save_model", _arg(1, "filename")),
    ("safetensors.save_file", safetensors.torch, "save_file", _arg(1, "filename")),
    ("numpy.save", np, "save", _arg(0, "file")),
    ("os.replace", os, "replace", _arg(1, "dst")),
    ("os.rename", os, "rename", _arg(1, "dst")),
    ("os.fsync", os, "fsync", _arg(0, "fd")),
    ("shutil.rmtree", shutil, "rmtree", _arg(0, "path")),
    ("Path.rename", Path, "rename", _arg(0, "self")),
    ("Path.write_text", Path, "write_text", _arg(0, "self")),
    ("Path.write_bytes", Path, "write_bytes", _arg(0, "self")),
    ("MetricsLog.write", MetricsLog, "write", lambda args, kwargs: args[0].path),
]
WRITES = {"torch.save", "safetensors.save_model", "safetensors.save_file", "numpy.save", "shutil.rmtree"}
WRITES |= {"Path.write_text", "Path.write_bytes", "MetricsLog.write"}  # the others are all or nothing
_REAL = {name: getattr(owner, attribute) for name, owner, attribute, _ in PRIMITIVES}


def install() -> None:
    """Wrap each primitive where it lives and wherever the product imported it by name."""
    product = [m for name, m in sys.modules.items() if name == "distill" or name.startswith("distill.")]
    for name, owner, attribute, target_of in PRIMITIVES:
        real = _REAL[name]
        wrapper = _counted(name, real, target_of)
        setattr(owner, attribute, wrapper)
        for module in product:
            if getattr(module, attribute, None) is real:
                setattr(module, attribute, wrapper)


def main() -> None:
    PLAN.update(json.loads(sys.argv[1]))
    install()
    if "ready" in PLAN:
        Path(PLAN["ready"]).touch()
    start = time.perf_counter()
    code = distill.cli.main(sys.argv[2:])
    if "trace" in PLAN:
        with open(PLAN["trace"], "w") as f:  # not through the counted writes
            json.dump({"events": EVENTS, "seconds": time.perf_counter() - start}, f)
    sys.exit(code)


if __name__ == "__main__":
    main()
