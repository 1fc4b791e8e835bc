"""`distill tune`: search the soft loss, its temperature and weights, and the learning rate, on the validation
split, with Optuna (`pip install -e ".[tune]"`).

The teacher is trained (or its cache opened) once for every trial, and the student alone (scratch) once, as the
reference a setting must beat. Each trial distils the same student initialisation with one setting and is
judged by its validation accuracy, pruned early when it trails the others. The study lives in the run folder
(`study.db`, SQLite), so a killed search resumes without repeating its finished trials; a trial that diverges
is recorded as failed and the search goes on. The best setting is written as `best.yaml`, ready for
`distill train`, whose run then reports on the test split.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from torch import nn

from distill import rundir
from distill._io import write_text
from distill._lock import FolderLock
from distill.build import build_experiment, build_net, build_terms
from distill.modules.distiller import Distiller
from distill.errors import ConfigError, DistillError, TrainingDiverged
from distill.recipes import RECIPES
from distill.stages import Stages, train_scratch, train_teacher
from distill.schema import TermConfig
from distill.summary import logits_on
from distill.train import fit, resolve_device

if TYPE_CHECKING:
    import optuna

    from distill.build import Experiment
    from distill.config import Config

logger = logging.getLogger(__name__)

STUDY = "study.db"
FINISHED = ("COMPLETE", "PRUNED")


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise DistillError('distill tune needs Optuna: pip install -e ".[tune]"') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def suggest(trial: optuna.Trial, cfg: Config) -> tuple[list[TermConfig], float]:
    """One setting of the search space: the loss terms and the learning rate."""
    space = cfg.tune
    loss = trial.suggest_categorical("loss", space.losses)
    temperature = trial.suggest_float("temperature", *space.temperature, log=True)
    if loss == "kd":
        alpha = trial.suggest_float("alpha", *space.alpha)
        terms = [TermConfig(loss="kd", temperature=temperature, alpha=alpha)]
    else:  # dkd and dist carry no cross-entropy of their own: kd at alpha 1 is it
        weight = trial.suggest_float("weight", *space.weight, log=True)
        terms = [TermConfig(loss="kd", alpha=1.0), TermConfig(loss=loss, temperature=temperature, weight=weight)]
    low, high = space.lr or (cfg.train.lr / 3, cfg.train.lr * 3)
    return terms, trial.suggest_float("lr", low, high, log=True)


class _Pruning:
    """A fit callback: report each epoch's validation accuracy, stop a trial that trails the others."""

    def __init__(self, trial: optuna.Trial, optuna: Any):
        self.trial, self.optuna = trial, optuna

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        self.trial.report(record["val/accuracy"], record["epoch"])
        if self.trial.should_prune():
            raise self.optuna.TrialPruned()


def _objective(exp: Experiment, recipe: Any, optuna: Any) -> Any:
    """Distil the student with one trial's setting; its validation accuracy (the selected epoch's)."""
    cfg = exp.cfg

    def objective(trial: optuna.Trial) -> float:
        specs, lr = suggest(trial, cfg)
        terms = build_terms(exp, specs, "tune", label_smoothing=cfg.method.label_smoothing)
        student = build_net(exp, "student", cfg.student.weights)  # every trial starts from the same weights
        options = cfg.train.model_copy(update={"lr": lr, "progress": False})
        try:
            distiller = Distiller(student, recipe.teacher, terms, teacher_dtype=recipe.dtype)
            pruning = [_Pruning(trial, optuna)]
            history = fit(distiller, exp.train_loader, exp.val_loader, options, callbacks=pruning)
        except TrainingDiverged as e:
            trial.set_user_attr("failed", str(e))
            raise
        chosen = history.best if options.select == "best" else None
        return chosen["value"] if chosen else history.epochs[-1]["val/accuracy"]

    return objective


def tune(cfg: Config, trials: int) -> dict[str, Any]:
    """Run `trials` trials in all (counting those a killed search finished); return the study's summary."""
    optuna = _optuna()
    if cfg.method.kind != "offline" or cfg.method.stages or cfg.method.assistant:
        raise ConfigError("distill tune searches the terms of method.kind offline, in one stage, without an assistant")
    exp = build_experiment(cfg)
    recipe = RECIPES.get("offline")(exp)  # everything built and checked before a file is written
    with FolderLock(cfg.run_dir):
        # a search always continues what it finds of itself: the teacher, scratch, the study
        rundir.prepare(cfg, resume=(cfg.run_dir / "config.yaml").exists(), overwrite=False, search=True)
        stages = Stages(exp, resume=True)
        if not recipe.cached:
            train_teacher(stages, recipe.teacher)
        scratch = _val_accuracy(exp, train_scratch(stages, epochs=cfg.train.epochs))
        study = optuna.create_study(
            storage=f"sqlite:///{cfg.run_dir / STUDY}",
            study_name="distill",
            direction="maximize",
            load_if_exists=True,
            sampler=optuna.samplers.TPESampler(seed=cfg.tune.seed),
            pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        )
        for trial in study.trials:  # a killed search left its trial running: it counts as failed, and runs again
            if trial.state.name == "RUNNING":
                study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
        todo = trials - sum(_counts(trial) for trial in study.trials)
        objective = _objective(exp, recipe, optuna)
        progress = _Progress(trials, scratch)
        study.optimize(objective, n_trials=max(todo, 0), catch=(TrainingDiverged,), callbacks=[progress])
        return _finish(cfg, study, scratch)


def _counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts toward the number asked for: finished, or failed on its own (not killed)."""
    return trial.state.name in FINISHED or (trial.state.name == "FAIL" and "failed" in trial.user_attrs)


def _val_accuracy(exp: Experiment, net: nn.Module) -> float:
    logits = logits_on(net, exp.val_loader, resolve_device(exp.cfg.train.device))
    return (logits.argmax(-1) == exp.splits.val.labels).float().mean().item()


class _Progress:
    """A line per trial as it ends."""

    def __init__(self, trials: int, scratch: float):
        self.trials, self.scratch = trials, scratch

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        value = "-" if trial.value is None else f"{trial.value:.2%}"
        logger.info(
            "trial %d/%d %s: %s: val accuracy %s (best %s, student alone %.2f%%)",
            trial.number + 1,
            self.trials,
            trial.state.name.lower(),
            _setting(trial.params),
            value,
            f"{study.best_value:.2%}" if _any_complete(study) else "-",
            self.scratch * 100,
        )


def _any_complete(study: optuna.Study) -> bool:
    return any(trial.state.name == "COMPLETE" for trial in study.trials)


def _setting(params: dict[str, Any]) -> str:
    keys = ("temperature", "alpha", "weight", "lr")
    return f"{params['loss']} " + " ".join(f"{key}={params[key]:.3g}" for key in keys if key in params)


def _finish(cfg: Config, study: optuna.Study, scratch: float) -> dict[str, Any]:
    """The trials table, and best.yaml when a trial completed."""
    rows = [{"trial": t.number + 1, "state": t.state.name.lower(), "value": t.value, **t.params} for t in study.trials]
    summary: dict[str, Any] = {"name": cfg.name, "scratch_val_accuracy": scratch, "trials": rows, "best": None}
    if _any_complete(study):
        best = study.best_trial
        summary["best"] = {"trial": best.number + 1, "value": best.value, **best.params}
        summary["best_yaml"] = str(cfg.run_dir / "best.yaml")
        summary["beats_scratch"] = best.value > scratch
        write_text(cfg.run_dir / "best.yaml", best_config(cfg, best))
    return summary


def best_config(cfg: Config, best: optuna.trial.FrozenTrial) -> str:
    """The config with the best trial's terms and learning rate, learning from the teacher the search trained."""

    class Fixed:  # the trial's choices, replayed
        params = best.params

        def suggest_categorical(self, name: str, choices: list[str]) -> str:
            return self.params[name]

        def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
            return self.params[name]

    terms, lr = suggest(Fixed(), cfg)
    resolved = yaml.safe_load(cfg.to_yaml())
    resolved["name"] = f"{cfg.name}-best"
    resolved["method"]["terms"] = [term.model_dump(exclude_none=True) for term in terms]
    resolved["train"]["lr"] = lr
    if cfg.teacher.weights is None:  # trained by the search: the run reuses it
        resolved["teacher"].update(weights=str(Path(cfg.run_dir) / "teacher.safetensors"), epochs=None)
    header = (
        f"# distill train {Path(cfg.run_dir) / 'best.yaml'}\n"
        f"# the best setting of `distill tune`: trial {best.number + 1}, validation accuracy {best.value:.4f}\n"
    )
    return header + yaml.safe_dump(resolved, sort_keys=False)
