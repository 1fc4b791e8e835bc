"""`distill tune`: search how the student learns from its teacher on the validation split, with Optuna
(`pip install -e ".[tune]"`), for either task:

classify.py   method.kind offline: the logit loss (kd, dkd, dist), temperature, alpha, weight and lr, judged
              by validation accuracy (higher is better)
lm.py         method.kind token: the token divergence, temperature, alpha and lr, judged by the student's
              validation loss per token (lower is better; reported with its perplexity)
search.py     `Search`, what a task answers: the settings, what a trial trains, its score; the shared suggestions
study.py      what both share: the folder, the study and its resume, the trials, the summary, best.yaml

The teacher is trained (or its cache opened) once for every trial, and the student alone (scratch) once, as the
reference a setting must beat. Each trial trains the same student initialisation with one setting and is
judged on validation, pruned early when it trails the others. The study lives in the run folder (`study.db`,
SQLite), so a killed search resumes without repeating its finished trials; a trial that diverges is recorded
as failed and the search goes on. The best setting is written as `best.yaml`, ready for `distill train`, whose
run then reports on the test split.
"""

from distill.tune.study import best_config, tune

__all__ = ["best_config", "tune"]
