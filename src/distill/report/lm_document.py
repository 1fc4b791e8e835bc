"""What the report of a language-model run says, as blocks (`blocks.py` writes them as HTML and Markdown): the
verdict, each model's perplexity, what each model writes after the same held-out prompts, what generating
costs, and the training curves."""

from __future__ import annotations

from typing import Any

from distill._io import relative_paths
from distill.report.blocks import Block, Heading, Paragraph, Samples, Table, training
from distill.report.lm_evidence import BATCH, SEED, TEMPERATURE, GenerationCost, LMEvidence
from distill.report.text import VERDICTS, human_bytes, label

SHOWN = {"teacher": 0, "student": 1, "scratch": 2}  # the samples' columns: teacher, distilled, alone, others


def blocks(evidence: LMEvidence) -> list[Block]:
    summary = evidence.summary
    curves_note = (
        "Each stage's logged loss terms, in nats per token (training solid, validation dashed), per epoch; the "
        "first seed's stages."
    )
    return [
        Paragraph(relative_paths(summary["data"])),
        Heading("Diagnosis"),
        *_diagnosis(summary.get("diagnosis")),
        *_perplexity(summary),
        *_samples(evidence),
        *_payoff(evidence),
        *training(evidence.curves, curves_note),
    ]


def _diagnosis(diagnosis: dict[str, Any] | None) -> list[Block]:
    """The verdict with its margin and interval in nats per token, then each cause in plain words."""
    if diagnosis is None:
        return [
            Paragraph(
                "None: the run trained no student alone (scratch: false) to hold the distilled one "
                "against; set scratch: true for a verdict."
            )
        ]
    low, high = diagnosis["interval"]
    verdict = (
        f"{VERDICTS[diagnosis['verdict']].format(what='distillation')}, by {diagnosis['margin']:+.4f} nats per "
        f"token on test (95% interval {low:+.4f} to {high:+.4f}; {diagnosis['method']})."
    )
    why = "still in the way" if diagnosis["verdict"] == "helped" else "why"
    causes = [cause["detail"] if isinstance(cause, dict) else cause for cause in diagnosis.get("causes", [])]
    return [
        Paragraph(verdict[0].upper() + verdict[1:]),
        *[Paragraph(f"{why}: {cause}") for cause in causes],
        Paragraph(
            "The margin is the student alone's test cross-entropy minus the distilled student's, per test sequence "
            "and averaged: above 0, distillation lowered it.",
            note=True,
        ),
    ]


def _perplexity(summary: dict[str, Any]) -> list[Block]:
    """Each model's perplexity as summary.json holds it, formatted as the terminal prints it."""
    rows = []
    for name in summary["models"]:
        row = summary[name]
        test = f"{row['test_perplexity']:.3f}"
        if row["seeds"] > 1:
            test += f" ±{row['test_perplexity_std']:.3f}"
        rows.append([label(name), str(row["seeds"]), f"{row['val_perplexity']:.3f}", test, f"{row['params']:,}"])
    return [
        Heading("The models on the test text"),
        Table(["model", "seeds", "val perplexity", "test perplexity", "params"], rows),
        Paragraph(
            f"Perplexity: exp of the mean next-token cross-entropy (lower is better). Test: the test part "
            f"({summary['test_tokens']} tokens), never seen in training or selection; val: the validation part that "
            "picks. Seeded rows: the mean of their seeds, ± their standard deviation.",
            note=True,
        ),
    ]


def _samples(evidence: LMEvidence) -> list[Block]:
    """Each held-out prompt with the text that follows it and every model's continuation, side by side."""
    if not evidence.completions:
        return [Heading("What the models write"), Paragraph("No test sequence has a prompt with room after it.")]
    found: list[Block] = [
        Heading("What the models write"),
        Paragraph(
            "Prompts cut from the test text, which no model trained on; each model continues them for as many "
            f"tokens as the held-out text shows, or until its end token, sampling at temperature {TEMPERATURE:g} "
            f"with seed {SEED}: the same random draws for every model, so the differences are the models'. "
            "Held-out text: what the test text says next. The models of the first seed.",
            note=True,
        ),
    ]
    for number, completion in enumerate(evidence.completions, 1):
        models = sorted(completion.by_model.items(), key=lambda item: SHOWN.get(item[0], len(SHOWN)))
        columns = [("held-out text", completion.held_out), *[(label(name), text) for name, text in models]]
        title = f"Prompt {number} (test sequence {completion.sequence})"
        found.append(Samples(title, completion.prompt, columns))
    return found


def _payoff(evidence: LMEvidence) -> list[Block]:
    header = ["model", "runtime", "params", "size", "peak memory", "ms/token b=1", "p95", f"tokens/s b={BATCH}"]
    teacher = next((c for c in evidence.costs if c.name == "teacher" and c.runtime == "PyTorch"), None)
    against: list[Block] = []
    if teacher is not None:
        pytorch = [cost for cost in evidence.costs if cost.runtime == "PyTorch"]
        against = [
            Paragraph("Each against the teacher in PyTorch:", note=True),
            Table(header, [_ratio_row(cost, teacher) for cost in pytorch]),
        ]
    return [
        Heading("The payoff"),
        Table(header, [_cost_row(cost) for cost in evidence.costs]),
        *against,
        Paragraph(
            f"The models of the first seed, the files that ship. Measured on {evidence.measured_on}, in one process, "
            f"after a warm-up. Each model generates {evidence.new_tokens} tokens greedily after "
            f"{evidence.prompt_tokens} tokens of test text. ms/token: median and 95th percentile over the new tokens "
            "at batch 1, each but the first (which also reads the prompt); tokens/s: new tokens a second at batch "
            f"{BATCH}, the prompt's reading included. PyTorch generates with a key-value cache, one new position a "
            "forward; ONNX Runtime (the file distill export wrote) keeps none: every new token is a full forward of "
            "the sequence so far, slower the longer it grows. Peak memory: weights, prompt, and the most "
            "activations and cached keys and values alive at once while generating at batch 1, from PyTorch's "
            "profiler (ONNX Runtime exposes no such record: -). The terminal's tokens/s is another figure: whole "
            "sequences scored, not generated.",
            note=True,
        ),
        *[Paragraph(note, note=True) for note in evidence.notes],
    ]


def _runtime(cost: GenerationCost) -> str:
    return f"{cost.runtime} ({'key-value cache' if cost.cached else 'no cache: a full forward per token'})"


def _cost_row(cost: GenerationCost) -> list[str]:
    memory = "-" if cost.peak_memory_bytes is None else human_bytes(cost.peak_memory_bytes)
    return [
        label(cost.name),
        _runtime(cost),
        f"{cost.params:,}",
        human_bytes(cost.size_bytes),
        memory,
        f"{cost.token_ms:.3f} ms",
        f"{cost.token_p95_ms:.3f} ms",
        f"{cost.tokens_per_second:,.0f}",
    ]


def _ratio_row(cost: GenerationCost, teacher: GenerationCost) -> list[str]:
    def ratio(key: str) -> str:
        mine, theirs = getattr(cost, key), getattr(teacher, key)
        return "-" if mine is None or not theirs else f"{mine / theirs:.3f}x"

    keys = ("params", "size_bytes", "peak_memory_bytes", "token_ms", "token_p95_ms", "tokens_per_second")
    return [label(cost.name), _runtime(cost), *map(ratio, keys)]
