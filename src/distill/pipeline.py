"""A whole experiment from a config: the recipe its `method.kind` names, trained in its run folder, then
measured.

runs/NAME/config.yaml              the resolved config
runs/NAME/STAGE/                   each stage's checkpoints/ and metrics.jsonl (teacher, assistant, scratch,
                                   student or student-NAME for each of several stages, online, gen1, ...)
runs/NAME/MODEL.safetensors        each model's result, written when its stage ends; student.safetensors is
                                   the deployable student (also genK for born-again generations, peerK for
                                   method.peers)
runs/NAME/summary.json             accuracy, agreement, size and speed of every model
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from distill import rundir
from distill._io import write_json
from distill._lock import FolderLock
from distill.build import build_experiment, build_net
from distill.config import Config, read_yaml, validate
from distill.errors import DistillError
from distill.recipes import RECIPES, Recipe
from distill.recipes._stages import Stages
from distill.summary import code_that_ran, describe
from distill.train import resolve_device


def recipe_of(cfg: Config) -> type[Recipe]:
    return RECIPES.get(cfg.method.kind)


def run(cfg: Config, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train every stage of `cfg` and write summary.json; returns the summary.

    Everything is built and checked first: a bad path, weights file, shape or loss option fails before a file
    is written. One process at a time per run directory: a second is refused while the first runs.
    `overwrite` (the demo's) replaces an earlier run made with overwrite, and never any other run."""
    exp = build_experiment(cfg)
    recipe = recipe_of(cfg)
    resolve_device(cfg.train.device)
    built = recipe(exp)
    with FolderLock(cfg.run_dir):
        rundir.prepare(cfg, resume=resume, overwrite=overwrite)
        trained = built.train(Stages(exp, resume=resume))
        fields = recipe.fields(cfg)
        summary = {
            "name": cfg.name,
            "stages": trained.stages,
            **describe(exp, trained.models),
            "user_code": code_that_ran(cfg, list(fields.values())),
        }
        if clash := summary.keys() & trained.extra.keys():
            raise RuntimeError(f"recipe '{cfg.method.kind}' reports {sorted(clash)}, which the summary has already")
        summary.update(trained.extra)
        write_json(cfg.run_dir / "summary.json", summary)
        return summary


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    """Re-measure the models a finished run saved, on its validation split."""
    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if not saved.exists():
        raise DistillError(f"{run_dir} is not a run directory (no config.yaml); give the folder `distill train` made")
    cfg = validate(read_yaml(saved), str(saved))
    where = run_dir.resolve()  # the run may have moved since it was made: read it where it is now
    cfg = cfg.model_copy(update={"out_dir": os.path.relpath(where.parent), "name": where.name})
    exp = build_experiment(cfg)
    fields = recipe_of(cfg).fields(cfg)
    names = rundir.saved_models(run_dir, list(fields))
    if "student" not in names or (cfg.teacher is not None and "teacher" not in names):
        raise DistillError(f"{run_dir} has no finished teacher and student yet; finish it with --resume")
    nets = {name: build_net(exp, fields[name], run_dir / f"{name}.safetensors") for name in names}
    return {"name": cfg.name, **describe(exp, nets), "user_code": code_that_ran(cfg, list(fields.values()))}
