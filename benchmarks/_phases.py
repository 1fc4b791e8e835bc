"""A whole `distill train`'s fixed cost, phase by phase: library functions wrapped from outside (no timing code
in the library), a nested phase's time taken out of the one around it. Used by epoch_time.py."""

from __future__ import annotations

import functools
import importlib
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

TRAINING = "training stage (1 epoch: steps, validation, checkpoint)"
WRITE = "user code, write summary.json"
PHASES = {  # phase: the library functions it wraps, "module:name", in this version or the one before
    "read config": ["distill.config:load_config"],
    "build experiment (data, splits, loaders)": ["distill.tasks:experiment", "distill.build:build_experiment"],
    "build models, load weights": ["distill.tasks.classify:build_net", "distill.build:build_net"],
    "checks (outputs, a step on copies)": [
        "distill.tasks.classify:check_outputs_match",
        "distill.build:check_stage",
        "distill.tasks.classify:check_stage",
        "distill.build:check_outputs_match",
    ],
    "run folder (config.yaml, checks)": ["distill.rundir:prepare"],
    TRAINING: ["distill.train:fit"],
    "write weights": ["distill.weights:save_weights"],
    "outputs on validation and test": ["distill.tasks.accuracy:outputs_of"],
    "summary measurement (latency, samples/s, memory)": ["distill.measure:costs"],
    "rest of the summary (accuracy, agreement, size)": ["distill.tasks.accuracy:describe"],
    "diagnosis": ["distill.diagnosis:diagnose"],
    WRITE: ["distill.pipeline:code_that_ran", "distill.tasks.accuracy:code_that_ran", "distill._io:write_json"],
}
OUTERMOST = ("distill._io:write_json",)  # timed only where no other phase calls it (a checkpoint's: training)


class Phases:
    """Seconds in each phase, a nested phase's taken out of the one around it; when the config was first read
    and summary.json written."""

    def __init__(self):
        self.seconds, self.calls, self.stack = defaultdict(float), Counter(), []
        self.first = self.written = None

    def wrapped(self, original: Callable, phase: str, *, outermost: bool = False) -> Callable:
        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if outermost and self.stack:
                return original(*args, **kwargs)
            start = time.perf_counter()
            self.first, self.stack = self.first or start, [*self.stack, 0.0]
            try:
                return original(*args, **kwargs)
            finally:
                elapsed, nested = time.perf_counter() - start, self.stack.pop()
                self.seconds[phase] += elapsed - nested
                self.calls[phase] += 1
                if self.stack:
                    self.stack[-1] += elapsed
                if phase == WRITE and args and str(args[0]).endswith("summary.json"):
                    self.written = time.perf_counter()

        return timed


def install(phases: Phases) -> list[tuple[Any, str, Any]]:
    """Every name a loaded distill module binds to a phase's function now binds to it wrapped; the recipe's
    construction counts as building the models (the checks inside it apart). Returns what to put back."""
    offline = importlib.import_module("distill.recipes.offline").Offline
    undo = [(offline, "__init__", offline.__init__)]
    offline.__init__ = phases.wrapped(offline.__init__, "build models, load weights")
    for phase, names in PHASES.items():
        for where in names:
            module, name = where.split(":")
            try:
                original = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError):  # the other version's name
                continue
            timed = phases.wrapped(original, phase, outermost=where in OUTERMOST)
            for loaded in [m for key, m in list(sys.modules.items()) if key.split(".")[0] == "distill" and m]:
                for attr, value in list(vars(loaded).items()):
                    if value is original:
                        undo.append((loaded, attr, value))
                        setattr(loaded, attr, timed)
    return undo


def fixed_cost(config: Path, scratch: bool) -> None:
    """A one-epoch `distill train` of `config` through the CLI, its phases timed; prints the table."""
    cli = importlib.import_module("distill.cli")
    phases = Phases()
    undo = install(phases)
    try:
        code = cli.main(["train", str(config), *(["--set", "scratch=true"] if scratch else [])])
    finally:
        for owner, attr, value in reversed(undo):
            setattr(owner, attr, value)
    if code != 0 or phases.written is None:
        raise SystemExit(f"distill train failed (exit {code}): no fixed cost to show")
    span = phases.written - phases.first
    print(
        f"\nfixed cost of one `distill train` (1 epoch{', with scratch' if scratch else ''}), from the config "
        f"read to summary.json written; {torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    print(f"{'phase':56}{'seconds':>9}{'calls':>7}")
    for phase in PHASES:
        print(f"{phase:56}{phases.seconds[phase]:>9.2f}{phases.calls[phase]:>7}")
    print(f"{'other (between the phases)':56}{span - sum(phases.seconds.values()):>9.2f}")
    print(f"{'total, config read to summary.json written':56}{span:>9.2f}")
    fixed = span - phases.seconds[TRAINING]
    print(f"{'fixed cost: the total less the training stage':56}{fixed:>9.2f}   target <= 16.5 (1.5 x 11.0)")
