"""Peak memory and time of a token-level distillation loss, forward and backward, from hidden states: the plain
form (full logits of both models) against the fused one (chunk by chunk over tokens).

B=4 sequences of S=512 tokens, a student of width H=512 and a teacher of 1024, a vocabulary of V=32,000;
the generalized JSD at beta 0 (exactly forward KL) and 0.5. Each variant runs in a process of its own; its
peak is the process's maximum resident memory after the loss minus that after its inputs were made (the
hidden states and both output layers), so only what the loss itself holds is counted. Time: median of 3
forward + backward passes after one warm-up, on the CPU threads torch uses by default.

    python benchmarks/token_kd_memory.py
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time

import torch

from distill.losses.fused import fused_token_distillation_loss
from distill.losses.token import token_distillation_loss

B, S, H, H_TEACHER, V = 4, 512, 512, 1024, 32_000


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux


def measure(form: str, beta: float) -> dict[str, float]:
    """One variant, in this process: peak bytes above the inputs, and seconds per forward + backward."""
    torch.manual_seed(0)
    student_hidden = torch.randn(B, S, H, requires_grad=True)
    teacher_hidden = torch.randn(B, S, H_TEACHER)
    student_weight = (torch.randn(V, H) * 0.02).requires_grad_()
    teacher_weight = torch.randn(V, H_TEACHER) * 0.02
    labels = torch.randint(V, (B, S))

    def step() -> None:
        if form == "plain":
            with torch.no_grad():
                teacher_logits = teacher_hidden @ teacher_weight.T  # (B, S, V)
            student_logits = student_hidden @ student_weight.T
            loss = token_distillation_loss(student_logits, teacher_logits, labels, divergence="jsd", beta=beta).loss
        else:
            loss = fused_token_distillation_loss(
                student_hidden, student_weight, teacher_hidden, teacher_weight, labels, divergence="jsd", beta=beta
            ).loss
        loss.backward()
        student_hidden.grad = student_weight.grad = None

    before = _peak_rss()
    times = []
    for _ in range(4):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return {"peak_bytes": _peak_rss() - before, "seconds": statistics.median(times[1:])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--one", nargs=2, metavar=("FORM", "BETA"), help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], float(args.one[1]))))
        return
    print(
        f"B={B} S={S} H={H} (teacher {H_TEACHER}) V={V}; torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"{'loss':26}{'form':8}{'peak above inputs':>19}{'fused / plain':>15}{'time':>10}{'fused / plain':>15}")
    for beta in (0.0, 0.5):
        rows = {}
        for form in ("plain", "fused"):
            child = subprocess.run(
                [sys.executable, __file__, "--one", form, str(beta)], capture_output=True, text=True, check=True
            )
            rows[form] = json.loads(child.stdout)
        name = "jsd beta=0 (forward KL)" if beta == 0 else f"jsd beta={beta}"
        for form, row in rows.items():
            memory = "" if form == "plain" else f"{row['peak_bytes'] / rows['plain']['peak_bytes']:.3f}x"
            speed = "" if form == "plain" else f"{row['seconds'] / rows['plain']['seconds']:.2f}x"
            print(
                f"{name:26}{form:8}{row['peak_bytes'] / 2**20:>15.0f} MiB{memory:>15}{row['seconds']:>9.3f}s{speed:>15}"
            )


if __name__ == "__main__":
    main()
