"""The terminal's tables: teacher, scratch and distilled student side by side with ratios, the diagnosis in words,
the trials of a search."""

from __future__ import annotations

import math
from typing import Any

from distill._io import relative_paths

LABELS = {
    "teacher": "teacher",
    "assistant": "teacher assistant",
    "scratch": "student alone",
    "student": "student (distilled)",
}


def label(name: str) -> str:
    """How a table names model `name`."""
    if name.startswith("gen"):
        return f"generation {name.removeprefix('gen')}"
    if name.startswith("peer"):
        return f"peer {name.removeprefix('peer')}"
    return LABELS.get(name, name)


def human_bytes(n_bytes: float) -> str:
    """'512 B', '9.8 KB', '1.2 MB'."""
    if n_bytes < 1024:
        return f"{n_bytes:.0f} B"
    for unit in ("KB", "MB", "GB"):
        n_bytes /= 1024
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.1f} {unit}"


def _accuracy(row: dict[str, Any]) -> str:
    """'95.32%', or with several seeds their mean and standard deviation: '95.32% ±0.41'."""
    if row["seeds"] == 1:
        return f"{row['accuracy']:.2%}"
    return f"{row['accuracy']:.2%} ±{row['accuracy_std'] * 100:.2f}"


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of a run's summary.json, then what it means: the splits, the seeds, the diagnosis."""
    test, val = summary["test_samples"], summary["val_samples"]
    width = 16 if any(summary[name]["seeds"] > 1 for name in summary["models"]) else 9
    header = (
        f"{'':22}{'test acc':>{width}}{'val acc':>9}{'agree':>8}{'params':>12}{'size':>11}"
        f"{'latency b=1':>13}{'samples/s':>17}"
    )
    lines = [f"{summary['name']}: {relative_paths(summary['data'])}", header]
    for name in summary["models"]:
        row = summary[name]
        agreement = "-" if row["agreement"] is None else f"{row['agreement']:.1%}"  # no teacher to agree with
        lines.append(
            f"{label(name):22}{_accuracy(row):>{width}}{row['val_accuracy']:>9.2%}{agreement:>8}{row['params']:>12,}"
            f"{human_bytes(row['size_bytes']):>11}{row['latency_ms']:>10.3f} ms{row['throughput']:>17,.0f}"
        )
    if r := summary["ratios"]:
        lines.append(
            f"{'student / teacher':22}{'':>{width + 17}}{r['params']:>11.3f}x{r['size_bytes']:>10.3f}x"
            f"{r['latency_ms']:>12.3f}x{r['throughput']:>16.2f}x"
        )
    lines.append(
        f"test acc and agree: the test split ({test} samples), never seen in training or selection; "
        f"val acc: the validation split ({val} samples) that picks"
    )
    if summary.get("measured_on"):
        lines.append(f"latency and samples/s: measured on {summary['measured_on']}")
        quick = [f"{label(n)} {summary[n]['timing']['batch']}" for n in summary["models"] if "timing" in summary[n]]
        if quick:  # a run's quick figures (measure.QUICK_S); the report's and export's take longer
            lines.append(
                f"  quick figures within a fixed time budget (samples/s at batch: {', '.join(quick)}); "
                "distill report measures them fully"
            )
    if summary["labelled_samples"] < summary["train_samples"]:
        lines.append(
            f"labels: the student alone learned from the {summary['labelled_samples']} labelled training rows; the "
            f"student from those and the teacher's outputs on all {summary['train_samples']}; the teacher (trained "
            f"here) from the {summary['teacher_samples']} rows the data labels"
        )
    seeded = [label(name) for name in summary["models"] if summary[name]["seeds"] > 1]
    if seeded:
        seeds = summary[summary["models"][-1]]["seeds"]
        lines.append(f"{' and '.join(seeded)}: mean of {seeds} seeds (± standard deviation); other rows: one model")
    if summary.get("born_again"):
        ensemble = summary["born_again"]["ensemble_accuracy"]
        lines.append(f"born-again: the ensemble of the teacher and every generation has {ensemble:.2%} test accuracy")
    lines.extend(_starts(summary))
    for code in summary.get("user_code", []):
        digest = (code["sha256"] or "?")[:12]
        where = relative_paths(code["file"] or "?")
        lines.append(f"user code run: {code['config']} = {code['model']} from {where} (sha256 {digest})")
    if summary.get("diagnosis"):
        lines.extend(format_diagnosis(summary["diagnosis"], self_distillation=summary["teacher"] is None))
    return "\n".join(lines)


def _starts(summary: dict[str, Any]) -> list[str]:
    """A line for each model that started from weights trained before the run (a random start goes unsaid)."""
    starts = {name: summary[name].get("started_from") for name in summary["models"]}
    return [
        f"{label(name)}{': ' if start.startswith('fine-tuned') else ' started from '}{relative_paths(start)}"
        for name, start in starts.items()
        if start and not start.startswith("random")
    ]


VERDICTS = {
    "helped": "{what} helped: the student beats the student alone",
    "no_difference": "no difference: {what} neither helps nor hurts measurably",
    "negative_transfer": "negative transfer: {what} hurts; the student alone is better",
}


def format_diagnosis(diagnosis: dict[str, Any], *, self_distillation: bool = False) -> list[str]:
    """The verdict with its margin and interval, then each cause and what to try, in plain words."""
    what = "self-distillation" if self_distillation else "distillation"
    low, high = diagnosis["interval"]
    lines = [
        f"diagnosis: {VERDICTS[diagnosis['verdict']].format(what=what)}, by {diagnosis['margin'] * 100:+.2f} "
        f"points on test (95% interval {low * 100:+.2f} to {high * 100:+.2f}; {diagnosis['method']})"
    ]
    why = "still in the way" if diagnosis["verdict"] == "helped" else "why"
    lines += [f"  {why}: {cause['detail']}" for cause in diagnosis["causes"]]
    lines += [f"  try: {suggestion}" for suggestion in diagnosis["suggestions"]]
    return lines


def format_tuning(summary: dict[str, Any]) -> str:
    """The trials of `distill tune`, best first, and what to run next. A classifier's trials are judged by
    validation accuracy (higher is better); a language model's by validation loss per token (lower), shown
    with its perplexity."""
    header, width, show = TUNE_COLUMNS[summary.get("task", "classify")]
    alone = show(summary["scratch"])
    lines = [
        f"{summary['name']}: {len(summary['trials'])} trials, {summary['metric']}; the student alone: {alone}",
        f"{'trial':>5}  {'state':9}{header:>{width}}  setting",
    ]
    sign = 1 if summary["direction"] == "minimize" else -1
    for row in sorted(summary["trials"], key=lambda row: math.inf if row["value"] is None else sign * row["value"]):
        value = "-" if row["value"] is None else show(row["value"])
        setting = [f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items() if k not in TRIAL]
        lines.append(f"{row['trial']:>5}  {row['state']:9}{value:>{width}}  {' '.join(setting)}")
    best = summary["best"]
    if best is None:
        lines.append("no trial completed: each failed or was pruned")
        return "\n".join(lines)
    if not summary["beats_scratch"]:
        lines.append("no setting beats the student alone on validation: distillation may not pay here")
    lines.append(f"best: trial {best['trial']}; run it with: distill train {relative_paths(summary['best_yaml'])}")
    return "\n".join(lines)


def _loss_and_perplexity(loss: float) -> str:
    """'2.8512 (17.31)': a mean loss per token and its perplexity (exp of it; infinite when it diverged)."""
    return f"{loss:.4f} ({math.exp(loss) if loss < 700 else math.inf:.2f})"


# per task: the trials table's column, its width, and how a score reads
TUNE_COLUMNS = {
    "classify": ("val acc", 9, lambda value: f"{value:.2%}"),
    "lm": ("val loss (ppl)", 18, _loss_and_perplexity),
}


def format_lm_summary(summary: dict[str, Any]) -> str:
    """The table of a language-model run: perplexity of each model on validation and test, size and speed."""
    seeded = any(summary[name]["seeds"] > 1 for name in summary["models"])
    width = 18 if seeded else 10
    lines = [
        f"{summary['name']}: {relative_paths(summary['data'])}",
        f"{'':22}{'val ppl':>9}{'test ppl':>{width}}{'params':>12}{'tokens/s':>12}",
    ]
    for name in summary["models"]:
        row = summary[name]
        test = f"{row['test_perplexity']:.3f}"
        if row["seeds"] > 1:
            test += f" ±{row['test_perplexity_std']:.3f}"
        lines.append(
            f"{label(name):22}{row['val_perplexity']:>9.3f}{test:>{width}}{row['params']:>12,}"
            f"{row['tokens_per_second']:>12,.0f}"
        )
    teacher, student = summary["teacher"], summary["student"]
    lines.append(
        f"{'student / teacher':22}{'':>{9 + width}}{student['params'] / teacher['params']:>11.3f}x"
        f"{student['tokens_per_second'] / teacher['tokens_per_second']:>11.2f}x"
    )
    lines.append(
        f"test ppl: the test part ({summary['test_tokens']} tokens), never seen in training or selection; "
        f"tokens/s: up to 8 full sequences a call, quick (a fixed time budget), on {summary['measured_on']}"
    )
    if seeded:
        lines.append(f"student rows: mean of {len(summary['seeds'])} seeds (± standard deviation); teacher: one model")
    lines.extend(_starts(summary))
    if diagnosis := summary.get("diagnosis"):
        low, high = diagnosis["interval"]
        lines.append(
            f"diagnosis: {VERDICTS[diagnosis['verdict']].format(what='distillation')}, by "
            f"{diagnosis['margin']:+.4f} nats per token on test (95% interval {low:+.4f} to {high:+.4f}; "
            f"{diagnosis['method']})"
        )
        lines += [f"  why: {cause}" for cause in diagnosis["causes"]]
    return "\n".join(lines)


EXPORTED = {  # export.json's rows, in the order shown, with their labels
    "pytorch": "PyTorch",
    "onnx": "ONNX Runtime fp32",
    "int8": "ONNX Runtime int8",
    "int8-static": "ONNX Runtime int8 static",
    "torchscript": "TorchScript",
    "torch-export": "torch.export",
}


def format_export(results: dict[str, Any]) -> str:
    """What `distill export` wrote: each export's test accuracy (a language model's test perplexity), size and
    CPU speed beside the PyTorch student's."""
    lm = results.get("task") == "lm"  # tokens/s as the run's summary times them; no per-call latency
    speed = f"{'tokens/s':>12}" if lm else f"{'latency b=1':>13}{'p95':>10}{'samples/s b=256':>17}"
    lines = [f"{'':26}{'file':>24}{'test ppl' if lm else 'test acc':>10}{'size':>11}{speed}{'max |diff|':>12}"]
    for key, runtime in {**EXPORTED, "hf": "transformers"}.items():
        if (row := results.get(key)) is None:
            continue
        change = f" ({row['accuracy_change'] * 100:+.2f})" if "accuracy_change" in row else ""
        change = f" ({row['test_perplexity_change']:+.3f})" if "test_perplexity_change" in row else change
        diff = f"{row['max_abs_diff']:.1e}" if "max_abs_diff" in row else "-"
        file, size = row.get("file", "student.safetensors"), human_bytes(row["size_bytes"])
        if lm:
            figures = f"{row['test_perplexity']:>10.3f}{size:>11}{row['tokens_per_second']:>12,.0f}"
        else:
            figures = (
                f"{row['accuracy']:>10.2%}{size:>11}{row['latency_ms']:>10.3f} ms{row['latency_p95_ms']:>7.3f} ms"
                f"{row['throughput']:>17,.0f}"
            )
        lines.append(f"{runtime:26}{file:>24}{figures}{diff:>12}{change}")
    timed = "; tokens/s: up to 8 full sequences a call" if lm else ""
    lines.append(f"in {relative_paths(str(results['folder'].resolve()))}; timed on {results['measured_on']}{timed}")
    lines.append(
        "check it with: distill eval PATH (the file or folder)" if lm else "check a file with: distill eval FILE"
    )
    return "\n".join(lines)


def format_exported_accuracy(result: dict[str, Any]) -> str:
    """`distill eval PATH` of an export: its test accuracy, or a language model's test perplexity."""
    if "test_perplexity" in result:
        return (
            f"{result['file']}: test perplexity {result['test_perplexity']:.3f} on the {result['test_tokens']} test "
            f"tokens of run {result['run']} ({relative_paths(result['data'])})"
        )
    return (
        f"{result['file']}: {result['accuracy']:.2%} test accuracy on the {result['test_samples']} test samples of "
        f"run {result['run']} ({relative_paths(result['data'])})"
    )


TRIAL = ("trial", "state", "value")  # a trials row's columns besides its setting


def format_result(summary: dict[str, Any]) -> str:
    """A run's summary as the terminal shows it, in its task's table."""
    return format_lm_summary(summary) if summary.get("task") == "lm" else format_summary(summary)
