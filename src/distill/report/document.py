"""`distill report RUN_DIR`: report.html (one self-contained file: styles and plots inside, no network) and
report.md (its plots as PNG files in figures/ beside it), from what the run saved.

The content is built once as a list of blocks (`blocks.py`: headings, paragraphs, tables, figures, samples)
and written twice. A classify run's blocks are below; a language model's are in `lm_document.py`.
"""

from __future__ import annotations

from pathlib import Path

from distill._io import atomic_write, relative_paths, write_text
from distill.report import figures, lm_document, lm_evidence
from distill.report.blocks import Block, Figure, Heading, Paragraph, Table, markdown, to_html, training
from distill.report.evidence import BINS, Cost, Evidence, finished, gather
from distill.report.text import format_diagnosis, human_bytes, label


def make_report(run_dir: str | Path) -> dict[str, Path]:
    """Write the report of the run in `run_dir`; returns the paths written. Everything is measured before the
    first file is written: a run that cannot be reported leaves the folder as it was."""
    run_dir = Path(run_dir)
    run, summary, curves = finished(run_dir)
    if run.cfg.task == "lm":
        name, blocks = run.cfg.name, lm_document.blocks(lm_evidence.gather(run, summary, curves))
    else:
        evidence = gather(run, summary, curves)
        name, blocks = evidence.name, _blocks(evidence)
    shown = [block for block in blocks if isinstance(block, Figure)]
    for figure in shown:
        atomic_write(run_dir / "figures" / figure.name, lambda tmp, png=figure.png: tmp.write_bytes(png))
    write_text(run_dir / "report.md", markdown(name, blocks))
    write_text(run_dir / "report.html", to_html(name, blocks))
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
        blocks.append(
            Paragraph(
                "None: the run trained no student alone (scratch: false) to hold the distilled one "
                "against; set scratch: true for a verdict."
            )
        )
    if born_again := summary.get("born_again"):
        blocks.append(
            Paragraph(
                f"Born-again: the ensemble of the teacher and every generation has "
                f"{born_again['ensemble_accuracy']:.2%} test accuracy."
            )
        )
    training_note = (
        "Each stage's logged loss terms (training solid, validation dashed) and accuracies, per epoch; the first "
        "seed's stages."
    )
    return [*blocks, *_models(evidence), *_payoff(evidence), *training(evidence.curves, training_note)]


def _models(evidence: Evidence) -> list[Block]:
    predictions = evidence.predictions
    top5 = predictions[0].top5 is not None
    header = ["model", "seeds", "test accuracy", *(["top-5"] if top5 else []), "agreement", "KL to teacher", "ECE"]
    rows = []
    for p in predictions:
        kl = "-" if p.kl_to_teacher is None else f"{p.kl_to_teacher:.3f}"
        agreement = "-" if p.agreement is None else f"{p.agreement:.2%}"
        rows.append(
            [
                label(p.name),
                str(p.seeds),
                f"{p.accuracy:.2%}",
                *([f"{p.top5:.2%}"] if top5 else []),
                agreement,
                kl,
                f"{p.ece:.3f}",
            ]
        )
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
        label(row.name),
        row.runtime,
        f"{row.accuracy:.2%}",
        f"{row.params:,}",
        human_bytes(row.size_bytes),
        memory,
        f"{row.latency_ms:.3f} ms",
        f"{row.latency_p95_ms:.3f} ms",
        f"{row.throughput:,.0f}",
    ]


def _ratio_row(row: Cost, teacher: Cost | None) -> list[str]:
    def ratio(key: str) -> str:
        mine, theirs = getattr(row, key), None if teacher is None else getattr(teacher, key)
        return "-" if mine is None or not theirs else f"{mine / theirs:.3f}x"

    keys = ("params", "size_bytes", "peak_memory_bytes", "latency_ms", "latency_p95_ms", "throughput")
    return [label(row.name), row.runtime, *map(ratio, keys)]
