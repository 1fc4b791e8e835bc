"""A whole experiment from a config: the recipe its `method.kind` names, trained in its run folder once per seed,
then measured and diagnosed.

runs/NAME/config.yaml              the resolved config
runs/NAME/STAGE/                   each stage's checkpoints/ and metrics.jsonl (teacher, assistant, scratch,
                                   student or student-NAME for each of several stages, online, gen1, ...;
                                   STAGE-seedS for each seed after the first)
runs/NAME/MODEL.safetensors        each model's result, written when its stage ends; student.safetensors is
                                   the deployable student (also genK for born-again generations, peerK for
                                   method.peers)
runs/NAME/summary.json             test and validation accuracy, agreement, size and speed of every model,
                                   and the diagnosis: did distillation pay, and why not
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from distill import rundir
from distill._io import write_json
from distill.build import Experiment, build_experiment, build_net
from distill.config import Config, read_saved, read_yaml
from distill.diagnosis import diagnose
from distill.errors import DistillError
from distill.recipes import RECIPES, Recipe, Trained
from distill.stages import Stages
from distill.summary import code_that_ran, describe, outputs_of
from distill.train import parallel, resolve_device


def recipe_of(cfg: Config) -> type[Recipe]:
    return RECIPES.get(cfg.method.kind)


def _seeded(exp: Experiment, seed: int) -> Experiment:
    """The experiment with train.seed = `seed`: the same data, splits and loaders."""
    train = exp.cfg.train.model_copy(update={"seed": seed})
    return dataclasses.replace(exp, cfg=exp.cfg.model_copy(update={"train": train}))


def run(cfg: Config, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Train every stage of `cfg`, the student and scratch once per seed, and write summary.json; returns it.

    Everything is built and checked first: a bad path, weights file, shape or loss option fails before a file
    is written. One process at a time per run directory: a second is refused while the first runs.
    `overwrite` (the demo's) replaces an earlier run made with overwrite, and never any other run. In a
    data-parallel run every process trains, and the first measures and writes the summary; the others
    return an empty dict."""
    parallel.check_batch(cfg.data.batch_size)
    exp = build_experiment(cfg)
    recipe = recipe_of(cfg)
    resolve_device(cfg.train.device)
    seeds = cfg.run_seeds
    first = recipe(_seeded(exp, seeds[0]))
    with rundir.opened(cfg, resume=resume, overwrite=overwrite):
        runs = [first.train(Stages(_seeded(exp, seeds[0]), resume=resume))]
        for seed in seeds[1:]:  # one teacher: the later seeds load it
            seeded = _seeded(exp, seed)
            runs.append(recipe(seeded).train(Stages(seeded, resume=resume, tag=f"seed{seed}")))
        if not parallel.is_main():
            return {}
        summary = _summarize(exp, recipe, runs)
        write_json(cfg.run_dir / "summary.json", summary)
        return summary


def _summarize(exp: Experiment, recipe: type[Recipe], runs: list[Trained]) -> dict[str, Any]:
    cfg = exp.cfg
    models = [trained.models for trained in runs]
    outputs = outputs_of(exp, models)
    summary = {
        "name": cfg.name,
        "stages": runs[0].stages,
        "seeds": cfg.run_seeds,
        **describe(exp, models, outputs),
        "user_code": code_that_ran(cfg, list(recipe.fields(cfg).values())),
    }
    if "scratch" in outputs:
        labels = exp.splits.val.labels, exp.splits.test.labels
        summary["diagnosis"] = diagnose(outputs, *labels, temperature=cfg.method.soft_temperature())
    if clash := summary.keys() & runs[0].extra.keys():
        raise RuntimeError(f"recipe '{cfg.method.kind}' reports {sorted(clash)}, which the summary has already")
    return {**summary, **runs[0].extra}


@dataclass
class SavedRun:
    """A run read back from its folder: its experiment rebuilt from the saved config (the data split as it
    was), and the models it saved, by name, in the order the summary lists them."""

    path: Path
    exp: Experiment
    recipe: type[Recipe]
    fields: dict[str, str]  # model name -> its config group ("scratch" -> "student")
    names: list[str]
    seeds: list[int]

    def net(self, name: str) -> nn.Module:
        """Model `name` (or NAME-seedS of a later seed) with its saved weights."""
        return build_net(self.exp, self.fields[name.split("-seed")[0]], self.path / f"{name}.safetensors")


def open_run(run_dir: str | Path) -> SavedRun:
    """The run in `run_dir`, with at least a student saved (and the teacher, when the config has one)."""
    run_dir = Path(run_dir)
    saved = run_dir / "config.yaml"
    if not saved.exists():
        raise DistillError(f"{run_dir} is not a run directory (no config.yaml); give the folder `distill train` made")
    if read_yaml(saved).get("task") == "lm":
        raise DistillError(f"{run_dir} is a language-model run: its figures are in summary.json; eval, report "
                           "and export read image runs so far")  # fmt: skip
    cfg = read_saved(saved)
    seeds = cfg.run_seeds
    where = run_dir.resolve()  # the run may have moved since it was made: read it where it is now
    cfg = cfg.model_copy(update={"out_dir": os.path.relpath(where.parent), "name": where.name, "seeds": None})
    recipe = recipe_of(cfg)
    fields = recipe.fields(cfg)
    names = rundir.saved_models(run_dir, list(fields))
    if "student" not in names or (cfg.teacher is not None and "teacher" not in names):
        raise DistillError(f"{run_dir} has no finished teacher and student yet; finish it with --resume")
    return SavedRun(run_dir, build_experiment(cfg), recipe, fields, names, seeds)


def evaluate_run(run_dir: str | Path) -> dict[str, Any]:
    """Re-measure the models a finished run saved (the first seed's), on its test and validation splits."""
    run = open_run(run_dir)
    nets = {name: run.net(name) for name in run.names}
    return _summarize(run.exp, run.recipe, [Trained(nets, [])])
