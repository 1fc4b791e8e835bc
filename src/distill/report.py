"""The compression table: teacher, scratch and distilled student side by side, with ratios."""

from __future__ import annotations

from typing import Any

from distill._io import relative_paths

LABELS = {
    "teacher": "teacher",
    "assistant": "teacher assistant",
    "scratch": "student alone",
    "student": "student (distilled)",
}


def _label(name: str) -> str:
    if name.startswith("gen"):
        return f"generation {name.removeprefix('gen')}"
    if name.startswith("peer"):
        return f"peer {name.removeprefix('peer')}"
    return LABELS.get(name, name)


def _size(n_bytes: float) -> str:
    if n_bytes < 1024:
        return f"{n_bytes:.0f} B"
    for unit in ("KB", "MB", "GB"):
        n_bytes /= 1024
        if n_bytes < 1024 or unit == "GB":
            return f"{n_bytes:.1f} {unit}"


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table of a run's summary.json."""
    header = f"{'':22}{'accuracy':>9}{'agree':>8}{'params':>12}{'size':>11}{'latency b=1':>13}{'samples/s b=256':>17}"
    lines = [
        f"{summary['name']}: {relative_paths(summary['data'])}, {summary['val_samples']} validation samples",
        header,
    ]
    for name in summary["models"]:
        row = summary[name]
        agreement = "-" if row["agreement"] is None else f"{row['agreement']:.1%}"  # no teacher to agree with
        lines.append(
            f"{_label(name):22}{row['accuracy']:>9.2%}{agreement:>8}{row['params']:>12,}{_size(row['size_bytes']):>11}"
            f"{row['latency_ms']:>10.3f} ms{row['throughput']:>17,.0f}"
        )
    if r := summary["ratios"]:
        lines.append(
            f"{'student / teacher':22}{'':>17}{r['params']:>11.3f}x{r['size_bytes']:>10.3f}x"
            f"{r['latency_ms']:>12.3f}x{r['throughput']:>16.2f}x"
        )
    if summary.get("born_again"):
        ensemble = summary["born_again"]["ensemble_accuracy"]
        lines.append(f"born-again: the ensemble of the teacher and every generation has {ensemble:.2%} accuracy")
    for code in summary.get("user_code", []):
        digest = (code["sha256"] or "?")[:12]
        where = relative_paths(code["file"] or "?")
        lines.append(f"user code run: {code['config']} = {code['model']} from {where} (sha256 {digest})")
    if summary.get("scratch") is not None:
        gain = summary["student"]["accuracy"] - summary["scratch"]["accuracy"]
        method = "self-distillation" if summary["teacher"] is None else "distillation"
        lines.append(f"{method} vs the student alone: {gain * 100:+.2f} accuracy points on validation")
    return "\n".join(lines)
