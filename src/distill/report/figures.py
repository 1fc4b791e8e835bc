"""The report's plots, each drawn to PNG bytes with matplotlib's object API (no pyplot, no display needed)."""

from __future__ import annotations

import io
import math
from typing import TYPE_CHECKING

from distill.errors import DistillError
from distill.report.evidence import BINS
from distill.report.text import label

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from distill.report.evidence import Cost, Curve, Predictions

COLOURS = {"teacher": "#1f4e79", "assistant": "#7f6000", "scratch": "#a6a6a6", "student": "#c55a11"}
OTHER = "#548235"


def _figure(width: float, height: float, panels: int = 1) -> tuple[Figure, list]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise DistillError("distill report draws with matplotlib: pip install 'distill[report]'") from None
    figure = Figure(figsize=(width, height), layout="constrained")
    return figure, [figure.add_subplot(1, panels, i + 1) for i in range(panels)]


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def curves(curve: Curve) -> bytes:
    """Left: every loss term by epoch (training solid, validation dashed); right: the accuracies, where the stage
    logged any (a language model's stages log losses alone: one panel)."""
    scored = any(_is_accuracy(key) for key in curve.values)
    figure, panels = _figure(9 if scored else 6, 3.2, panels=2 if scored else 1)
    losses, accuracies = panels[0], panels[-1]
    for key, values in curve.values.items():
        points = [(e, v) for e, v in zip(curve.epochs, values, strict=True) if v is not None]
        if not points:
            continue
        axes = accuracies if _is_accuracy(key) else losses
        style = "-" if key.startswith("train/") else "--"
        axes.plot(*zip(*points, strict=True), style, marker="." if len(points) < 30 else None, label=key)
    losses.set(title=f"{label(curve.stage)}: loss terms", xlabel="epoch")
    if scored:
        accuracies.set(title=f"{label(curve.stage)}: accuracy", xlabel="epoch", ylim=(0, 1.02))
    for axes in panels:
        if axes.lines:
            axes.legend(fontsize="small")
        axes.grid(alpha=0.3)
    return _png(figure)


def _is_accuracy(key: str) -> bool:
    return key.endswith(("accuracy", "agreement"))  # also val/peer1/accuracy


def reliability(predictions: list[Predictions]) -> bytes:
    """Accuracy against confidence per bin, one panel per model; the diagonal is perfect calibration."""
    figure, panels = _figure(3.1 * len(predictions), 3.1, panels=len(predictions))
    for axes, model in zip(panels, predictions, strict=True):
        lows = [b["low"] for b in model.reliability]
        axes.bar(
            lows,
            [b["accuracy"] for b in model.reliability],
            width=1 / BINS,
            align="edge",
            color=COLOURS.get(model.name, OTHER),
            alpha=0.8,
            edgecolor="white",
            label="accuracy",
        )
        axes.plot([0, 1], [0, 1], ":", color="black", label="calibrated")
        axes.set(title=f"{label(model.name)}\nECE {model.ece:.3f}", xlabel="confidence", xlim=(0, 1), ylim=(0, 1))
        axes.grid(alpha=0.3)
    panels[0].set_ylabel("accuracy")
    panels[0].legend(fontsize="small", loc="upper left")
    return _png(figure)


def per_class_change(student: Predictions, scratch: Predictions, classes: list[str]) -> bytes:
    """Test accuracy per class, student minus student alone, in points."""
    change = [(s - b) * 100 for s, b in zip(student.per_class, scratch.per_class, strict=True)]
    figure, (axes,) = _figure(min(max(7, 0.35 * len(classes)), 14), 3)
    shown = [0.0 if math.isnan(c) else c for c in change]  # a class without test samples: no bar
    axes.bar(range(len(classes)), shown, color=[OTHER if c >= 0 else "#c00000" for c in shown])
    axes.axhline(0, color="black", linewidth=0.8)
    if len(classes) <= 40:
        axes.set_xticks(range(len(classes)), classes, rotation=90 if len(classes) > 12 else 0, fontsize="small")
    axes.set(title="test accuracy per class: distilled student minus student alone", ylabel="points", xlabel="class")
    axes.grid(axis="y", alpha=0.3)
    return _png(figure)


def accuracy_vs_latency(rows: list[Cost]) -> bytes:
    """Every model of the run in every runtime measured: test accuracy against median batch-1 latency."""
    figure, (axes,) = _figure(7, 4.2)
    markers = dict(zip(dict.fromkeys(row.runtime for row in rows), "os^vDP", strict=False))
    for row in rows:
        axes.scatter(
            row.latency_ms,
            row.accuracy * 100,
            s=60,
            color=COLOURS.get(row.name, OTHER),
            marker=markers[row.runtime],
            edgecolor="black",
            linewidth=0.5,
        )
        axes.annotate(
            label(row.name),
            (row.latency_ms, row.accuracy * 100),
            fontsize="x-small",
            xytext=(6, 2),
            textcoords="offset points",
        )
    for runtime, marker in markers.items():  # the legend tells runtimes apart; colours and labels, models
        axes.scatter([], [], marker=marker, color="white", edgecolor="black", label=runtime)
    axes.legend(fontsize="small", loc="lower right")
    axes.set_xscale("log")
    axes.set(
        title="accuracy against latency", xlabel="median latency at batch 1 (ms, log scale)", ylabel="test accuracy (%)"
    )
    axes.grid(alpha=0.3, which="both")
    return _png(figure)
