"""What a report shows, measured from what a run saved: its curves, each model's test predictions, its costs.

Nothing trains here: the saved weights are loaded, run once over the test split, and timed.
"""

from __future__ import annotations

import json
import re
import statistics
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from distill.data import stacked
from distill.errors import DistillError
from distill.export import (
    SHIP_BUDGET_S,
    Deployable,
    accuracy_of,
    load_exported,
    loader_outputs,
    metadata,
    onnx_available,
    write_onnx,
)
from distill.measure import costs, timing, where_measured
from distill.models import count_params
from distill.pipeline import SavedRun, open_run
from distill.tasks.accuracy import ROLES
from distill.weights import weights_sha256

BINS = 10  # confidence bins of the calibration error and the reliability diagram
TOP5_FROM = 11  # classes from which top-5 accuracy is shown


@dataclass
class Curve:
    """One stage's epoch records from its metrics.jsonl: each logged quantity by epoch."""

    stage: str
    epochs: list[int]
    values: dict[str, list[float | None]]  # "train/kd", "val/accuracy", ...


@dataclass
class Predictions:
    """One model's test-split measurements, the mean over its seeds where it has several."""

    name: str
    seeds: int
    accuracy: float
    top5: float | None
    agreement: float | None  # with the teacher's top-1
    kl_to_teacher: float | None  # KL(teacher || model) at T = 1, nats per sample
    ece: float
    reliability: list[dict[str, float]]  # per confidence bin, pooled over seeds: confidence, accuracy, count
    per_class: list[float]


@dataclass
class Cost:
    """What one model costs to run in one runtime, and its test accuracy there."""

    name: str
    runtime: str  # "PyTorch", "ONNX Runtime fp32", "ONNX Runtime int8", ...
    accuracy: float
    params: int
    size_bytes: int
    peak_memory_bytes: int | None  # None where the runtime exposes no allocation record (ONNX Runtime)
    latency_ms: float
    latency_p95_ms: float
    throughput: float


@dataclass
class Evidence:
    name: str
    summary: dict[str, Any]
    curves: list[Curve]
    predictions: list[Predictions]
    costs: list[Cost]
    classes: list[str]
    measured_on: str
    notes: list[str]


def finished(run_dir: str | Path) -> tuple[SavedRun, dict[str, Any], list[Curve]]:
    """The finished run in `run_dir`, its summary and its first seed's curves, whatever its task; a DistillError
    names what is missing (a missing summary means an unfinished run) before anything is measured or written."""
    run_dir = Path(run_dir)
    if not (run_dir / "summary.json").exists() and (run_dir / "config.yaml").exists():
        raise DistillError(
            f"{run_dir} has no summary.json: the run is not finished; finish it with distill train --resume"
        )
    run = open_run(run_dir)
    summary = json.loads((run_dir / "summary.json").read_text())
    curves = [curve for stage in _stages(run_dir) if (curve := _curve(run_dir / stage)) is not None]
    if not curves:
        raise DistillError(f"{run_dir} holds no STAGE/metrics.jsonl; make them with distill train (not distill cache)")
    return run, summary, curves


def gather(run: SavedRun, summary: dict[str, Any], curves: list[Curve]) -> Evidence:
    """Everything the report of a finished classify run shows (`finished` reads the first three)."""
    nets = _distinct_models(run)
    logits = _test_logits(run, nets)
    labels = run.exp.splits.test.labels
    predictions = [predictions_of(name, seeds, logits.get("teacher"), labels) for name, seeds in logits.items()]
    shipped = {name: accuracy_of(seeds[0], labels) for name, seeds in logits.items()}
    rows, notes = _costs(run, nets, shipped)
    return Evidence(
        run.exp.cfg.name, summary, curves, predictions, rows, run.exp.splits.classes, where_measured(), notes
    )


# --- curves ----------------------------------------------------------------------------------------------------


def _stages(run_dir: Path) -> list[str]:
    """The first seed's stage folders: the summary's roles first, in their order, then the others (gen2
    before gen10)."""
    found = [p.parent.name for p in run_dir.glob("*/metrics.jsonl") if "-seed" not in p.parent.name]

    def order(stage: str) -> tuple:
        role = ROLES.index(stage) if stage in ROLES else len(ROLES)
        return role, [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", stage)]

    return sorted(found, key=order)


def _curve(stage_dir: Path) -> Curve | None:
    records = []
    for line in (stage_dir / "metrics.jsonl").read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
        if "lr" not in record:  # the per-epoch records; per-step ones carry the learning rate
            records.append(record)
    if not records:
        return None
    keys = dict.fromkeys(k for record in records for k in record if "/" in k)
    return Curve(stage_dir.name, [r["epoch"] for r in records], {k: [r.get(k) for r in records] for k in keys})


# --- predictions -----------------------------------------------------------------------------------------------


def distinct(run: SavedRun) -> list[str]:
    """The names of the run's saved models (first seed), each model once: a born-again run's student is its last
    generation, saved under both names, and shown as the student."""
    digests: dict[str, str] = {}
    for name in sorted(run.names, key=lambda name: name != "student"):
        digests.setdefault(weights_sha256(run.path / f"{name}.safetensors"), name)
    kept = set(digests.values())
    return [name for name in run.names if name in kept]


def _distinct_models(run: SavedRun) -> dict[str, nn.Module]:
    return {name: Deployable(run.net(name)).eval() for name in distinct(run)}


def _test_logits(run: SavedRun, nets: dict[str, nn.Module]) -> dict[str, list[Tensor]]:
    """Each model's test logits, one per seed for the seeded rows (scratch, student)."""
    test = run.exp.test_loader  # batches: image files are read as they are needed
    found = {}
    for name, net in nets.items():
        later = [f"{name}-seed{s}" for s in run.seeds[1:] if (run.path / f"{name}-seed{s}.safetensors").exists()]
        with torch.inference_mode():
            found[name] = [loader_outputs(net, test)]
            found[name] += [loader_outputs(Deployable(run.net(each)).eval(), test) for each in later]
    return found


def predictions_of(name: str, seeds: list[Tensor], teacher: list[Tensor] | None, labels: Tensor) -> Predictions:
    """What model `name`'s test `seeds` logits (one per seed) show against the `labels` and the teacher's."""
    reference = teacher[0] if teacher is not None and name != "teacher" else None
    num_classes = seeds[0].shape[-1]

    top5 = None
    if num_classes >= TOP5_FROM:
        top5 = statistics.fmean(
            [(lg.topk(5, dim=-1).indices == labels[:, None]).any(-1).float().mean().item() for lg in seeds]
        )
    agreement = kl = None
    if reference is not None:
        agreement = statistics.fmean([accuracy_of(lg, reference.argmax(-1)) for lg in seeds])
        kl = statistics.fmean([_kl(reference, lg) for lg in seeds])
    probabilities = torch.cat([lg.softmax(-1) for lg in seeds])
    pooled_labels = labels.repeat(len(seeds))
    bins = _reliability(probabilities, pooled_labels)
    per_class = torch.stack([_per_class(lg.argmax(-1), labels, num_classes) for lg in seeds]).nanmean(0)
    return Predictions(
        name=name,
        seeds=len(seeds),
        accuracy=statistics.fmean([accuracy_of(lg, labels) for lg in seeds]),
        top5=top5,
        agreement=agreement,
        kl_to_teacher=kl,
        ece=sum(b["count"] * abs(b["accuracy"] - b["confidence"]) for b in bins) / len(pooled_labels),
        reliability=bins,
        per_class=per_class.tolist(),
    )


def _kl(teacher: Tensor, student: Tensor) -> float:
    log_p, log_q = teacher.log_softmax(-1), student.log_softmax(-1)
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean().item()


def _reliability(probabilities: Tensor, labels: Tensor) -> list[dict[str, float]]:
    """Top-1 confidence against accuracy in BINS equal-width bins (empty bins left out)."""
    confidence, predicted = probabilities.max(-1)
    correct = (predicted == labels).float()
    which = (confidence * BINS).long().clamp(max=BINS - 1)
    bins = []
    for b in range(BINS):
        inside = which == b
        if inside.any():
            bins.append(
                {
                    "low": b / BINS,
                    "confidence": confidence[inside].mean().item(),
                    "accuracy": correct[inside].mean().item(),
                    "count": int(inside.sum()),
                }
            )
    return bins


def _per_class(predicted: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """Accuracy per class (NaN for a class without test samples)."""
    hits = torch.zeros(num_classes).index_add_(0, labels, (predicted == labels).float())
    counts = torch.zeros(num_classes).index_add_(0, labels, torch.ones(len(labels)))
    return hits / counts


# --- costs -----------------------------------------------------------------------------------------------------


def _costs(run: SavedRun, nets: dict[str, nn.Module], accuracy: dict[str, float]) -> tuple[list[Cost], list[str]]:
    """Each model of the first seed (the files that ship) in PyTorch, with its test `accuracy`; the teacher and
    student in ONNX Runtime fp32 too (exported here, to a temporary folder), and each int8 file `distill export
    --int8` left; all timed in this one process."""
    shape = run.exp.splits.input_shape
    rows = []
    for name, net in nets.items():
        measured = costs(net, shape, budget_s=SHIP_BUDGET_S)
        size = (run.path / f"{name}.safetensors").stat().st_size
        rows.append(Cost(name, "PyTorch", accuracy[name], count_params(net), size, **measured))
    if not onnx_available():
        return rows, ["ONNX Runtime rows: not measured, onnxruntime is not installed (pip install 'distill[export]')"]
    sample = stacked(run.exp.splits.test.inputs[:2])
    notes = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in [name for name in ("teacher", "student") if name in nets]:
            path = Path(scratch) / f"{name}.onnx"
            try:
                write_onnx(nets[name], sample, path, metadata(run), what=name)
            except DistillError as e:  # an operator ONNX lacks: the PyTorch rows still say what they say
                notes.append(f"ONNX Runtime row of the {name}: not measured; {e}")
                continue
            rows.append(_onnx_row(name, "ONNX Runtime fp32", path, run, count_params(nets[name])))
    for way, runtime in (("int8", "ONNX Runtime int8"), ("int8-static", "ONNX Runtime int8 static")):
        path = run.path / "export" / f"student.{way}.onnx"
        if path.exists():
            rows.append(_onnx_row("student", runtime, path, run, count_params(nets["student"])))
    if not any(row.runtime.endswith(("int8", "static")) for row in rows):
        notes.append(f"int8 rows: none yet; make them with distill export {run.path} --int8")
    return rows, notes


def _onnx_row(name: str, runtime: str, path: Path, run: SavedRun, params: int) -> Cost:
    predict, _ = load_exported(path, "onnx")
    accuracy = accuracy_of(loader_outputs(predict, run.exp.test_loader), run.exp.splits.test.labels)
    measured = timing(predict, run.exp.splits.input_shape, budget_s=SHIP_BUDGET_S)
    return Cost(name, runtime, accuracy, params, path.stat().st_size, None, **measured)
