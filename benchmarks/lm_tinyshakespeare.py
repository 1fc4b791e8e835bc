"""Token-level distillation on tinyshakespeare: validation and test perplexity of a character GPT teacher, the
student alone, and the student distilled with forward KL, reverse KL, JSD (beta 0.5) and skew forward KL
(0.1), over 3 seeds.

The text's first 90% trains; the last 10% is held out, split in two: validation (the first half), which
nothing selects on here (every run keeps its last epoch), and test. One teacher, trained once; the student
alone once per seed; every distilled student with the same seeds, the same number of updates, the fused
loss from hidden states.

    python benchmarks/lm_tinyshakespeare.py [--data ../shared/data/tinyshakespeare/input.txt]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from distill.config import validate
from distill.pipeline import run

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
SEEDS = [0, 1, 2]
DIVERGENCES = {
    "forward KL": {"divergence": "forward_kl"},
    "reverse KL": {"divergence": "reverse_kl"},
    "JSD (beta 0.5)": {"divergence": "jsd", "beta": 0.5},
    "skew forward KL (0.1)": {"divergence": "skew_forward_kl", "skew": 0.1},
}


def config(data: Path, out_dir: Path, name: str, method: dict, **changes: object) -> dict:
    return {
        "task": "lm",
        "name": name,
        "out_dir": str(out_dir),
        "scratch": False,
        "seeds": SEEDS,
        "data": {
            "path": str(data),
            "tokenizer": "char",
            "context": 128,
            "val_fraction": 0.05,
            "test_fraction": 0.05,
            "batch_size": 64,
        },
        "teacher": {"model": "gpt", "args": {"layers": 4, "heads": 4, "width": 128}, "epochs": 4},
        "student": {"model": "gpt", "args": {"layers": 2, "heads": 2, "width": 40}},
        "method": {"kind": "token", "temperature": 1.0, "alpha": 0.0, "fused": True, **method},
        "train": {
            "epochs": 3,
            "optimizer": "adamw",
            "lr": 0.003,
            "weight_decay": 0.0001,
            "schedule": "cosine",
            "warmup_epochs": 0.2,
            "progress": False,
        },
        **changes,
    }


def test_cell(row: dict) -> str:
    """Test perplexity, with the spread over seeds where there are several."""
    values = row.get("test_perplexities") or [row["test_perplexity"]]
    spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.3f}{spread}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="tinyshakespeare's input.txt")
    args = parser.parse_args()
    rows = {}
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        first, *others = DIVERGENCES.items()
        summary = run(validate(config(args.data, out, "kd0", first[1], scratch=True), "benchmark"))
        print(f"data: {summary['data'].replace(str(args.data.resolve()), os.path.relpath(args.data))}")
        teacher_weights = out / "kd0" / "teacher.safetensors"
        rows["teacher"], rows["student alone"], rows[first[0]] = (
            summary["teacher"],
            summary["scratch"],
            summary["student"],
        )
        for i, (label, method) in enumerate(others, start=1):
            teacher = {"model": "gpt", "args": {"layers": 4, "heads": 4, "width": 128}, "weights": str(teacher_weights)}
            cfg = validate(config(args.data, out, f"kd{i}", method, teacher=teacher), "benchmark")
            rows[label] = run(cfg)["student"]
    print(f"{'model':26}{'params':>10}{'val perplexity':>20}{'test perplexity':>20}")
    for label, row in rows.items():
        print(f"{label:26}{row['params']:>10,}{row['val_perplexity']:>20.3f}{test_cell(row):>20}")
    print(f"seeds {SEEDS} (test: mean ± std; val: mean); teacher: one model, trained once")


if __name__ == "__main__":
    main()
