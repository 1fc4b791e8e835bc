"""`distill report RUN_DIR`: report.html (one self-contained file: styles and plots inside, no network) and
report.md (its plots as PNG files in figures/ beside it), from what the run saved.

The content is built once as a list of blocks (headings, paragraphs, tables, figures) and written twice.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path

from distill._io import atomic_write, relative_paths, write_text
from distill.report import figures
from distill.report.evidence import BINS, Cost, Evidence, gather
from distill.report.text import format_diagnosis, human_bytes, label


@dataclass
class Heading:
    text: str


@dataclass
class Paragraph:
    text: str
    note: bool = False  # small print under a table or figure


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]


@dataclass
class Figure:
    name: str  # its file in figures/
    png: bytes
    alt: str


Block = Heading | Paragraph | Table | Figure


def make_report(run_dir: str | Path) -> dict[str, Path]:
    """Write the report of the run in `run_dir`; returns the paths written."""
    run_dir = Path(run_dir)
    evidence = gather(run_dir)
    blocks = _blocks(evidence)
    shown = [block for block in blocks if isinstance(block, Figure)]
    for figure in shown:
        atomic_write(run_dir / "figures" / figure.name, lambda tmp, png=figure.png: tmp.write_bytes(png))
    write_text(run_dir / "report.md", _markdown(evidence.name, blocks))
    write_text(run_dir / "report.html", _html(evidence.name, blocks))
    return {"html": run_dir / "report.html", "markdown": run_dir / "report.md", "figures": run_dir / "figures"}


# --- what the report says --------------------------------------------------------------------------------------


def _blocks(evidence: Evidence) -> list[Block]:
    summary = evidence.summary
    blocks: list[Block] = [Paragraph(relative_paths(summary["data"]))]
    blocks.append(Heading("Diagnosis"))
    if diagnosis := summary.get("diagnosis"):
        verdict, *reasons = format_diagnosis(diagnosis, self_distillation=summary.get("teacher") is None)
        blocks += [Paragraph(verdict.removeprefix("diagnosis: "))]
        blocks += [Paragraph(reason.strip()) for reason in reasons]
    else:
        blocks.append(Paragraph("None: the run trained no student alone (scratch: false) to hold the distilled one "
                                "against; set scratch: true for a verdict."))  # fmt: skip
    if born_again := summary.get("born_again"):
        blocks.append(Paragraph(f"Born-again: the ensemble of the teacher and every generation has "
                                f"{born_again['ensemble_accuracy']:.2%} test accuracy."))  # fmt: skip
    return [*blocks, *_models(evidence), *_payoff(evidence), *_training(evidence)]


def _models(evidence: Evidence) -> list[Block]:
    predictions = evidence.predictions
    top5 = predictions[0].top5 is not None
    header = ["model", "seeds", "test accuracy", *(["top-5"] if top5 else []), "agreement", "KL to teacher", "ECE"]
    rows = []
    for p in predictions:
        kl = "-" if p.kl_to_teacher is None else f"{p.kl_to_teacher:.3f}"
        agreement = "-" if p.agreement is None else f"{p.agreement:.2%}"
        rows.append(
            [label(p.name), str(p.seeds), f"{p.accuracy:.2%}", *([f"{p.top5:.2%}"] if top5 else []), agreement, kl,
             f"{p.ece:.3f}"]
        )  # fmt: skip
    test = evidence.summary["test_samples"]
    blocks: list[Block] = [
        Heading("The models on the test split"),
        Table(header, rows),
        Paragraph(
            f"On the test split ({test} samples), never seen in training or selection; seeded rows are the mean of "
            f"their seeds. Agreement: share of test samples where the model's top-1 is the teacher's. KL to teacher: "
            f"KL(teacher || model) at temperature 1, nats per sample. ECE: expected calibration error over {BINS} "
            "confidence bins (0 is perfectly calibrated).",
            note=True,
        ),
        Figure("reliability.png", figures.reliability(predictions), "reliability diagram of every model"),
    ]
    by_name = {p.name: p for p in predictions}
    if "scratch" in by_name and "student" in by_name:
        png = figures.per_class_change(by_name["student"], by_name["scratch"], evidence.classes)
        blocks.append(Figure("per_class_change.png", png, "per-class accuracy change, student minus student alone"))
    return blocks


def _payoff(evidence: Evidence) -> list[Block]:
    header = ["model", "runtime", "test accuracy", "params", "size", "peak memory", "latency b=1", "p95", "samples/s"]
    ratios = ["model", "runtime", "params", "size", "peak memory", "latency b=1", "p95", "samples/s"]
    against: list[Block] = []
    if any(row.name == "teacher" for row in evidence.costs):  # self-distillation has none to divide by
        against = [
            Paragraph("Each against the teacher in the same runtime:", note=True),
            Table(ratios, [_ratio_row(row, _baseline(row, evidence.costs)) for row in evidence.costs]),
        ]
    return [
        Heading("The payoff"),
        Table(header, [_cost_row(row) for row in evidence.costs]),
        *against,
        Paragraph(
            "The models of the first seed, the files that ship (the table above averages seeds). "
            f"Measured on {evidence.measured_on}, in one process, after a warm-up, with torch.utils.benchmark. "
            "Latency: median and 95th percentile of single calls at batch 1; samples/s: throughput at batch 256. "
            "Peak memory: weights, input and the most activations alive at once in one batch-1 forward, from "
            "PyTorch's profiler (ONNX Runtime exposes no such record: -). Ratios divide by the teacher in the same "
            "runtime (int8 rows: by the teacher in ONNX Runtime fp32).",
            note=True,
        ),
        *[Paragraph(note, note=True) for note in evidence.notes],
        Figure("accuracy_vs_latency.png", figures.accuracy_vs_latency(evidence.costs), "accuracy against latency"),
    ]


def _baseline(row: Cost, rows: list[Cost]) -> Cost | None:
    runtime = "PyTorch" if row.runtime == "PyTorch" else "ONNX Runtime fp32"
    return next((r for r in rows if r.name == "teacher" and r.runtime == runtime), None)


def _cost_row(row: Cost) -> list[str]:
    memory = "-" if row.peak_memory_bytes is None else human_bytes(row.peak_memory_bytes)
    return [
        label(row.name), row.runtime, f"{row.accuracy:.2%}", f"{row.params:,}", human_bytes(row.size_bytes), memory,
        f"{row.latency_ms:.3f} ms", f"{row.latency_p95_ms:.3f} ms", f"{row.throughput:,.0f}",
    ]  # fmt: skip


def _ratio_row(row: Cost, teacher: Cost | None) -> list[str]:
    def ratio(key: str) -> str:
        mine, theirs = getattr(row, key), None if teacher is None else getattr(teacher, key)
        return "-" if mine is None or not theirs else f"{mine / theirs:.3f}x"

    keys = ("params", "size_bytes", "peak_memory_bytes", "latency_ms", "latency_p95_ms", "throughput")
    return [label(row.name), row.runtime, *map(ratio, keys)]


def _training(evidence: Evidence) -> list[Block]:
    blocks: list[Block] = [
        Heading("Training"),
        Paragraph(
            "Each stage's logged loss terms (training solid, validation dashed) and accuracies, per epoch; the "
            "first seed's stages.",
            note=True,
        ),
    ]
    for curve in evidence.curves:
        blocks.append(Figure(f"curves_{curve.stage}.png", figures.curves(curve), f"training curves of {curve.stage}"))
    return blocks


# --- written twice ---------------------------------------------------------------------------------------------


def _markdown(name: str, blocks: list[Block]) -> str:
    lines = [f"# distill report: {name}", ""]
    for block in blocks:
        if isinstance(block, Heading):
            lines += [f"## {block.text}", ""]
        elif isinstance(block, Paragraph):
            lines += [f"_{block.text}_" if block.note else block.text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(block.header) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(row) + " |" for row in block.rows]
            lines.append("")
        else:
            lines += [f"![{block.alt}](figures/{block.name})", ""]
    return "\n".join(lines)


STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1180px; margin: 2em auto;
       padding: 0 1em; color: #1d1d1f; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-variant-numeric: tabular-nums; }
th, td { padding: 0.3em 0.7em; border-bottom: 1px solid #eee; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
th { background: #f5f5f7; }
p.note { color: #555; font-size: 0.85em; max-width: 60em; }
div.wide { overflow-x: auto; }
img { max-width: 100%; display: block; margin: 0.8em 0; }
"""

# Sets <body data-images="LOADED/TOTAL"> once the page has loaded: a check a person or a headless browser reads.
CHECK_IMAGES = """
window.addEventListener("load", () => {
  const images = [...document.images];
  const loaded = images.filter((image) => image.complete && image.naturalWidth > 0).length;
  document.body.dataset.images = loaded + "/" + images.length;
});
"""


def _html(name: str, blocks: list[Block]) -> str:
    parts = [f"<h1>distill report: {html.escape(name)}</h1>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h2>{html.escape(block.text)}</h2>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p{' class=note' if block.note else ''}>{html.escape(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{html.escape(cell)}</th>" for cell in block.header)
            body = "".join(
                "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in block.rows
            )
            parts.append(f"<div class=wide><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>")
        else:
            data = base64.b64encode(block.png).decode()
            parts.append(f'<img src="data:image/png;base64,{data}" alt="{html.escape(block.alt)}">')
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>distill report: {html.escape(name)}'
        f"</title>\n<style>{STYLE}</style>\n<script>{CHECK_IMAGES}</script></head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body></html>\n"
    )
