"""A whole experiment from a config, for every task: the recipe its `method.kind` names, trained in its run
folder once per seed, then measured and diagnosed.

runs/NAME/config.yaml              the resolved config
runs/NAME/STAGE/                   each stage's checkpoints/ and metrics.jsonl (teacher, assistant, scratch,
                                   student or student-NAME for each of several stages, online, gen1, ...;
                                   STAGE-seedS for each seed after the first)
runs/NAME/MODEL.safetensors        each model's result, written when its stage ends; student.safetensors is
                                   the deployable student (also genK for born-again generations, peerK for
                                   method.peers)
runs/NAME/summary.json             each model's figures on the test and validation splits, size and speed, and
                                   the diagnosis: did distillation pay, and why not
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from distill import rundir
from distill._io import write_json
from distill.config import Config, read_saved
from distill.errors import DistillError
from distill.models import user_code
from distill.recipes import RECIPES, Recipe, Trained
from distill.stages import Stages
from distill.tasks import Task, experiment
from distill.tasks.base import model_spec
from distill.train import parallel, resolve_device
from distill.weights import load_weights


def recipe_of(cfg: Config) -> type[Recipe]:
    return RECIPES.get(cfg.method.kind)


def run(cfg: Config, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train every stage of `cfg`, the student and scratch once per seed, and write summary.json; returns it.

    Everything is built and checked first: a bad path, weights file, shape or loss option fails before a file
    is written. One process at a time per run directory: a second is refused while the first runs.
    `overwrite` (the demo's) replaces an earlier run made with overwrite, and never any other run. In a
    data-parallel run every process trains, and the first measures and writes the summary; the others
    return an empty dict."""
    parallel.check_batch(cfg.data.batch_size)
    exp = experiment(cfg)
    recipe = recipe_of(cfg)
    resolve_device(cfg.train.device)
    seeds = cfg.run_seeds
    first = recipe(exp.seeded(seeds[0]))
    with rundir.opened(cfg, resume=resume, overwrite=overwrite):
        runs = [first.train(Stages(exp.seeded(seeds[0]), resume=resume))]
        for seed in seeds[1:]:  # one teacher: the later seeds load it
            seeded = exp.seeded(seed)
            runs.append(recipe(seeded).train(Stages(seeded, resume=resume, tag=f"seed{seed}")))
        if not parallel.is_main():
            return {}
        summary = summarize(exp, recipe, runs)
        write_json(cfg.run_dir / "summary.json", summary)
        return summary


def summarize(exp: Task, recipe: type[Recipe], runs: list[Trained]) -> dict[str, Any]:
    """summary.json: the run's name and seeds, the task's rows of every model and its verdict, the user code
    the config ran, and the recipe's own figures."""
    cfg = exp.cfg
    summary = {
        "name": cfg.name,
        "task": cfg.task,
        "stages": runs[0].stages,
        "seeds": cfg.run_seeds,
        **exp.summarize([trained.models for trained in runs], cfg.method.soft_temperature()),
        "user_code": code_that_ran(cfg, list(recipe.fields(cfg).values())),
    }
    if clash := summary.keys() & runs[0].extra.keys():
        raise RuntimeError(f"recipe '{cfg.method.kind}' reports {sorted(clash)}, which the summary has already")
    return {**summary, **runs[0].extra}


def code_that_ran(cfg: Config, fields: list[str]) -> list[dict[str, str]]:
    """The user modules that the `package.module:factory` models of the config groups `fields` imported:
    which config key, file, sha256. Nothing else in a run imports code: weights load without pickle, YAML is
    read safely."""
    ran = []
    for field in dict.fromkeys(fields):
        spec = model_spec(cfg, field)
        if spec is not None and (code := user_code(spec.model)) is not None:
            ran.append({"config": f"{field}.model", **code})
    return ran


@dataclass
class SavedRun:
    """A run read back from its folder: its experiment rebuilt from the saved config (the data split as it
    was), and the models it saved, by name, in the order the summary lists them."""

    path: Path
    exp: Task
    recipe: type[Recipe]
    fields: dict[str, str]  # model name -> its config group ("scratch" -> "student")
    names: list[str]
    seeds: list[int]

    @property
    def cfg(self) -> Config:
        return self.exp.cfg

    def net(self, name: str) -> nn.Module:
        """Model `name` (or NAME-seedS of a later seed) with its saved weights."""
        model = self.exp.net(self.fields[name.split("-seed")[0]])
        load_weights(model, self.path / f"{name}.safetensors")
        return model


def open_run(run_dir: str | Path) -> SavedRun:
    """The finished run in `run_dir`: a student saved (and the teacher, when the config has one)."""
    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if not saved.exists():
        raise DistillError(f"{run_dir} is not a run directory (no config.yaml); give the folder `distill train` made")
    cfg = read_saved(saved)
    seeds = cfg.run_seeds
    where = run_dir.resolve()  # the run may have moved since it was made: read it where it is now
    cfg = cfg.model_copy(update={"out_dir": os.path.relpath(where.parent), "name": where.name, "seeds": None})
    recipe = recipe_of(cfg)
    fields = recipe.fields(cfg)
    names = rundir.saved_models(run_dir, list(fields))
    if "student" not in names or (cfg.teacher is not None and "teacher" not in names):
        raise DistillError(f"{run_dir} has no finished teacher and student yet; finish it with --resume")
    return SavedRun(run_dir, experiment(cfg), recipe, fields, names, seeds)


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    """Re-measure the models a finished run saved (the first seed's), on its test and validation splits. Where
    each started from is the run's record (summary.json), not measured again."""
    run = open_run(run_dir)
    nets = {name: run.net(name) for name in run.names}
    summary = summarize(run.exp, run.recipe, [Trained(nets, [])])
    saved = run.path / "summary.json"
    recorded = json.loads(saved.read_text()) if saved.exists() else {}
    for name in run.names:
        summary[name]["started_from"] = (recorded.get(name) or {}).get("started_from")
    return summary
