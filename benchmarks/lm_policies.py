"""Off-policy, sequence-level and on-policy distillation on tinyshakespeare: the same character GPT teacher and
student, the same number of student updates, 3 seeds; perplexity of the student's completions of held-out
prompts, and the top-k token cache's bytes per token.

The task: 2,000 non-overlapping windows of the text's first 90%, each a 64-character prompt and the next 64
characters as its completion (JSONL), shuffled (seed 0) into train / validation / test lines. Every run is
scored on the real test completions, which no run trained or selected on (each keeps its last epoch):
    off-policy       the student learns the teacher's distributions on the data's completions
    sequence-level   the teacher writes completions of the training prompts (`distill generate`, T = 1) and the
                     student learns them with their cross-entropy (method.alpha 1)
    on-policy        in half the batches the student writes the completions and the teacher grades them
All with forward KL and the cross-entropy, alpha 0.5 (sequence-level: its cross-entropy alone). The teacher
(4 layers, width 128) is trained on the first 90% of the text, or given with --teacher (weights of the same
shape, e.g. from benchmarks/lm_tinyshakespeare.py).

    python benchmarks/lm_policies.py [--data ../shared/data/tinyshakespeare/input.txt] [--teacher FILE]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
from pathlib import Path

import torch

from distill.cache.tokens import fingerprint as cache_fingerprint
from distill.cache.tokens import write_token_cache
from distill.config import validate
from distill.generate import generate
from distill.models.lm import build_lm
from distill.pipeline import run
from distill.tasks.lm import build_experiment
from distill.tasks.perplexity import sequence_losses
from distill.weights import load_weights

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
SEEDS = [0, 1, 2]
TEACHER = {"model": "gpt", "args": {"layers": 4, "heads": 4, "width": 128}}
STUDENT = {"model": "gpt", "args": {"layers": 2, "heads": 2, "width": 40}}
TRAIN = {
    "epochs": 4,
    "optimizer": "adamw",
    "lr": 0.003,
    "weight_decay": 0.0001,
    "schedule": "cosine",
    "warmup_epochs": 0.2,
    "progress": False,
}


def windows(text: str, path: Path, count: int = 2000) -> None:
    """`count` prompt/completion lines of 64 + 64 characters from the first 90% of `text`."""
    usable = text[: int(len(text) * 0.9)]
    stride = len(usable) // count
    lines = [
        {
            "id": str(i),
            "prompt": usable[i * stride : i * stride + 64],
            "completion": usable[i * stride + 64 : i * stride + 128],
        }
        for i in range(count)
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")


def config(name: str, out: Path, data: Path, tokenizer: str, teacher: Path | None, **changes: object) -> dict:
    teacher_group = {**TEACHER, "weights": str(teacher)} if teacher else {**TEACHER, "epochs": 4}
    return {
        "task": "lm",
        "name": name,
        "out_dir": str(out),
        "scratch": False,
        "seeds": SEEDS,
        "data": {
            "path": str(data),
            "tokenizer": tokenizer,
            "context": 128,
            "val_fraction": 0.1,
            "test_fraction": 0.1,
            "batch_size": 32,
        },
        "teacher": teacher_group,
        "student": STUDENT,
        "method": {"kind": "token", "divergence": "forward_kl", "alpha": 0.5},
        "train": TRAIN,
        **changes,
    }


def real_perplexity(run_dir: Path, real: dict) -> list[float]:
    """Each seed's student, scored on the real data's test completions."""
    exp = build_experiment(validate(real, "benchmark"))
    device = torch.device("cpu")
    perplexities = []
    for seed in SEEDS:
        name = "student" if seed == SEEDS[0] else f"student-seed{seed}"
        student = build_lm(exp.cfg.student, exp.tokenizer.vocab_size, exp.cfg.data.context, field="student")
        load_weights(student, run_dir / f"{name}.safetensors")
        sums, counts = sequence_losses(student, exp.test_loader, device)
        perplexities.append(math.exp(sums.sum() / counts.sum()))
    return perplexities


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="tinyshakespeare's input.txt")
    parser.add_argument("--teacher", type=Path, help="the teacher's weights, else trained here")
    args = parser.parse_args()
    tokenizer = f"char:{args.data.resolve()}"
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        tasks = out / "tasks.jsonl"
        windows(args.data.read_text(encoding="utf-8"), tasks)
        teacher = args.teacher
        if teacher is None:
            text_run = config("teacher", out, args.data, tokenizer, None, seeds=[0])
            text_run["data"].update(val_fraction=0.05, test_fraction=0.05)
            run(validate(text_run, "benchmark"))
            teacher = out / "teacher" / "teacher.safetensors"
        real = config("off-policy", out, tasks, tokenizer, teacher)
        run(validate(real, "benchmark"))
        rows["off-policy"] = real_perplexity(out / "off-policy", real)

        prompts = out / "prompts.jsonl"
        prompts.write_text(
            "".join(
                json.dumps({"id": json.loads(line)["id"], "prompt": json.loads(line)["prompt"]}) + "\n"
                for line in tasks.read_text().splitlines()
            )
        )
        written = out / "teacher.jsonl"
        generate(
            validate(
                {
                    **real,
                    "generate": {
                        "prompts": str(prompts),
                        "output": str(written),
                        "max_new_tokens": 64,
                        "temperature": 1.0,
                        "batch_size": 64,
                    },
                },
                "benchmark",
            )
        )
        sequence = config("sequence-level", out, written, tokenizer, teacher)
        sequence["method"]["alpha"] = 1.0
        run(validate(sequence, "benchmark"))
        rows["sequence-level"] = real_perplexity(out / "sequence-level", real)

        policy = config("on-policy", out, tasks, tokenizer, teacher)
        policy["method"] = {
            "kind": "on_policy",
            "divergence": "forward_kl",
            "alpha": 0.5,
            "student_share": 0.5,
            "max_new_tokens": 64,
            "sample_temperature": 1.0,
        }
        run(validate(policy, "benchmark"))
        rows["on-policy"] = real_perplexity(out / "on-policy", real)

        exp = build_experiment(validate(real, "benchmark"))
        model = build_lm(exp.cfg.teacher, exp.tokenizer.vocab_size, 128, field="teacher")
        load_weights(model, teacher)
        sizes = {}
        for k in (8, 32, min(128, exp.tokenizer.vocab_size)):
            meta = cache_fingerprint(str(teacher), exp.tokenizer, exp.splits.train, k)
            made = write_token_cache(
                out / f"cache{k}", model, exp.splits.train, meta, vocab=exp.tokenizer.vocab_size, batch_size=64
            )
            sizes[k] = made["bytes_per_token"]
    print(f"{'regime':18}{'test perplexity (mean ± std over seeds)':>42}   per seed")
    for name, values in rows.items():
        spread = f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"
        print(f"{name:18}{spread:>42}   {', '.join(f'{v:.3f}' for v in values)}")
    print(
        "top-k token cache, bytes per token: "
        + ", ".join(f"k={k}: {b:.0f}" for k, b in sizes.items())
        + f" (vocabulary {exp.tokenizer.vocab_size})"
    )


if __name__ == "__main__":
    main()
