"""The study every task shares: the run folder and its lock, the Optuna study in it (`study.db`) and its
resume, the trials (trained, pruned on validation, a divergence recorded as a failure), the progress lines,
the summary and best.yaml. The task's `Search` says what a trial trains and how it is scored."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from distill import rundir
from distill._io import write_text
from distill._lock import FolderLock
from distill.config import validate
from distill.errors import DistillError, TrainingDiverged
from distill.stages import Stages
from distill.train import fit
from distill.tune.classify import ClassifySearch
from distill.tune.lm import LMSearch
from distill.tune.search import Replay, Search

if TYPE_CHECKING:
    import optuna

    from distill.config import Config
    from distill.train import History, TrainOptions

logger = logging.getLogger(__name__)

STUDY = "study.db"
FINISHED = ("COMPLETE", "PRUNED")
SEARCHES: dict[str, type[Search]] = {"classify": ClassifySearch, "lm": LMSearch}


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise DistillError('distill tune needs Optuna: pip install -e ".[tune]"') from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def tune(cfg: Config, trials: int) -> dict[str, Any]:
    """Run `trials` trials in all (counting those a killed search finished); return the study's summary."""
    optuna = _optuna()
    search = SEARCHES[cfg.task](cfg)  # everything built and checked before a file is written
    with FolderLock(cfg.run_dir):
        # a search always continues what it finds of itself: the teacher, scratch, the study
        rundir.prepare(cfg, resume=(cfg.run_dir / "config.yaml").exists(), overwrite=False, search=True)
        scratch = search.prepare(Stages(search.exp, resume=True))
        study = _study(optuna, cfg, search.direction)
        todo = trials - sum(_counts(trial) for trial in study.trials)
        progress = _Progress(search, trials, scratch)
        objective = _objective(search, optuna)
        study.optimize(objective, n_trials=max(todo, 0), catch=(TrainingDiverged,), callbacks=[progress])
        return _finish(search, study, scratch)


def _study(optuna: Any, cfg: Config, direction: str) -> optuna.Study:
    """The run folder's study, made or opened; a trial a killed search left running counts as failed, and a
    new one takes its place."""
    study = optuna.create_study(
        storage=f"sqlite:///{cfg.run_dir / STUDY}",
        study_name="distill",
        direction=direction,
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=cfg.tune.seed),
        pruner=optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
    )
    for trial in study.trials:
        if trial.state.name == "RUNNING":
            study.tell(trial.number, state=optuna.trial.TrialState.FAIL)
    return study


def _counts(trial: optuna.trial.FrozenTrial) -> bool:
    """Whether a trial counts toward the number asked for: finished, or failed on its own (not killed)."""
    return trial.state.name in FINISHED or (trial.state.name == "FAIL" and "failed" in trial.user_attrs)


class _Pruning:
    """A fit callback: report each epoch's score, stop a trial that trails the others."""

    def __init__(self, trial: optuna.Trial, search: Search, optuna: Any):
        self.trial, self.search, self.optuna = trial, search, optuna

    def on_epoch_end(self, record: dict[str, Any]) -> None:
        self.trial.report(self.search.score(record), record["epoch"])
        if self.trial.should_prune():
            raise self.optuna.TrialPruned()


def _objective(search: Search, optuna: Any) -> Any:
    """Train the student with one trial's setting; its score at the epoch a run would keep (train.select)."""
    exp = search.exp

    def objective(trial: optuna.Trial) -> float:
        setting = search.setting(trial)
        module = search.module(setting)
        options = exp.cfg.train.model_copy(update={"lr": setting.lr, "progress": False})
        try:
            history = fit(
                module, exp.train_loader, exp.val_loader, options, callbacks=[_Pruning(trial, search, optuna)]
            )
        except TrainingDiverged as e:
            trial.set_user_attr("failed", str(e))
            raise
        return search.score(_kept(history, options))

    return objective


def _kept(history: History, options: TrainOptions) -> dict[str, Any]:
    """The record of the epoch whose weights a run keeps: the monitor's best with select: best, else the last."""
    if options.select == "best" and history.best is not None:
        return history.epochs[history.best["epoch"] - 1]
    return history.epochs[-1]


class _Progress:
    """A line per trial as it ends."""

    def __init__(self, search: Search, trials: int, scratch: float):
        self.search, self.trials, self.scratch = search, trials, scratch

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        show = self.search.show
        logger.info(
            "trial %d/%d %s: %s: %s %s; best %s; student alone %s",
            trial.number + 1,
            self.trials,
            trial.state.name.lower(),
            _setting(trial.params),
            self.search.metric,
            "-" if trial.value is None else show(trial.value),
            show(study.best_value) if _any_complete(study) else "-",
            show(self.scratch),
        )


def _any_complete(study: optuna.Study) -> bool:
    return any(trial.state.name == "COMPLETE" for trial in study.trials)


def _setting(params: dict[str, Any]) -> str:
    """`kd temperature=2.5 alpha=0.3 lr=0.01`: the choice among losses first, then the numbers."""
    return " ".join(value if isinstance(value, str) else f"{key}={value:.3g}" for key, value in params.items())


def _finish(search: Search, study: optuna.Study, scratch: float) -> dict[str, Any]:
    """The trials table, and best.yaml when a trial completed."""
    cfg = search.cfg
    rows = [{"trial": t.number + 1, "state": t.state.name.lower(), "value": t.value, **t.params} for t in study.trials]
    summary: dict[str, Any] = {
        "name": cfg.name,
        "task": cfg.task,
        "metric": search.metric,
        "direction": search.direction,
        "scratch": scratch,
        "trials": rows,
        "best": None,
    }
    if _any_complete(study):
        best = study.best_trial
        summary["best"] = {"trial": best.number + 1, "value": best.value, **best.params}
        summary["best_yaml"] = str(cfg.run_dir / "best.yaml")
        summary["beats_scratch"] = search.better(best.value, scratch)
        write_text(cfg.run_dir / "best.yaml", best_config(search, best))
    return summary


def best_config(search: Search, best: optuna.trial.FrozenTrial) -> str:
    """The config with the best trial's method keys and learning rate, learning from the teacher the search
    trained (when it trained one), checked as `distill train` will read it."""
    cfg, setting = search.cfg, search.setting(Replay(best.params))
    resolved = yaml.safe_load(cfg.to_yaml())
    resolved["name"] = f"{cfg.name}-best"
    resolved["method"].update(setting.method)
    resolved["train"]["lr"] = setting.lr
    if not search.exp.teacher_given():  # trained by the search: the run reuses it
        resolved["teacher"].update(weights=str(Path(cfg.run_dir) / "teacher.safetensors"), epochs=None)
    path = Path(cfg.run_dir) / "best.yaml"
    validate(resolved, str(path))
    header = (
        f"# distill train {path}\n"
        f"# the best setting of `distill tune`: trial {best.number + 1}, {search.metric} {search.show(best.value)}\n"
    )
    return header + yaml.safe_dump(resolved, sort_keys=False)
