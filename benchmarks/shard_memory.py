"""Training state held by each process of a data-parallel run, replicated (DistributedDataParallel) against
sharded (`train.shard`: FSDP2), at 1, 2 and 4 processes.

The work: token-level distillation of a GPT teacher (8 layers, width 768) into a GPT student (8 layers,
width 512), vocabulary 32,000 (tied input and output embeddings), AdamW, the fused loss; the module that
`distill train` builds for `method.kind: token`, prepared as `distill.train.fit` prepares it. Each process
runs one training step on 2 random sequences of 128 tokens and reports the bytes it holds of the student's
parameters, their gradients (after the backward), the optimizer's state (after the step) and the frozen
teacher's weights: local shards only, counted from the tensors themselves, so the figures are exact and the
same on any machine. On CUDA the peak allocated memory of the step is printed too; activations and the
blocks gathered for a forward come on top of the state. Each setting runs in processes of its own, started
with torchrun (gloo on the CPU, NCCL on GPUs).

    python benchmarks/shard_memory.py [--processes 1 2 4] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import torch
from torch.distributed.tensor import DTensor
from torch.nn.parallel import DistributedDataParallel

from distill.losses.token_kd import TokenKD
from distill.models.gpt import GPT
from distill.modules.token import TokenDistiller
from distill.train import TrainOptions, parallel, setup
from distill.train.schedule import Optimizers
from distill.train.sharding import Sharded

VOCAB, CONTEXT, LAYERS, STUDENT_WIDTH, TEACHER_WIDTH, BATCH, TOKENS = 32_000, 128, 8, 512, 768, 2, 128
MB = 2**20


def local_bytes(tensors) -> int:
    local = [t.to_local() if isinstance(t, DTensor) else t for t in tensors]
    return sum(t.numel() * t.element_size() for t in local)


def worker(mode: str, device_name: str) -> None:
    with parallel.session(device_name):
        device = parallel.local_device(torch.device(device_name))
        torch.manual_seed(0)
        student = GPT(VOCAB, context=CONTEXT, layers=LAYERS, heads=8, width=STUDENT_WIDTH)
        teacher = GPT(VOCAB, context=CONTEXT, layers=LAYERS, heads=12, width=TEACHER_WIDTH)
        module = TokenDistiller(student, teacher, TokenKD(alpha=0.5), vocab=VOCAB, fused=True)
        ids = torch.randint(VOCAB, (BATCH, TOKENS))
        batch = {"input": ids, "label": ids}
        setup(module, batch)
        if mode == "sharded":
            model = Sharded(module, device).trained
            trained = model
        else:
            model = module.to(device)
            trained = DistributedDataParallel(model) if parallel.world() > 1 else model
        optimizers = Optimizers(model, TrainOptions(optimizer="adamw", lr=1e-4), steps_per_epoch=1)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        batch = {key: value.to(device) for key, value in batch.items()}
        trained(batch)["loss"].backward()
        params = optimizers.all_params()
        grads = local_bytes(p.grad for p in params)
        for optimizer in optimizers.optimizers.values():
            optimizer.step()
        state = [v for o in optimizers.optimizers.values() for s in o.state.values() for v in s.values()]
        held = {
            "student": local_bytes(params),
            "gradients": grads,
            "optimizer": local_bytes(t for t in state if t.dim() > 0),
            "teacher": local_bytes(model.teacher.parameters()),
            "peak": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None,
        }
        everyone = parallel.gathered(held)
        if parallel.is_main():
            print(json.dumps(everyone))


def run(mode: str, processes: int, device: str) -> list[dict]:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command += [__file__, "--worker", mode, "--device", device]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        sys.exit(f"{mode} on {processes} processes failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--worker", choices=["replicated", "sharded"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.device)
        return
    print(f"student {STUDENT_WIDTH}-wide, teacher {TEACHER_WIDTH}-wide, {LAYERS} layers each, vocabulary {VOCAB:,}")
    print("MiB held by the process that holds most, after one AdamW step")
    header = f"{'processes':>9}  {'mode':<10}  {'student':>8}  {'grads':>8}  {'AdamW':>8}  {'teacher':>8}  {'total':>8}"
    print(header + ("  peak CUDA" if args.device != "cpu" else ""))
    for processes in args.processes:
        for mode in ("replicated", "sharded") if processes > 1 else ("replicated",):
            ranks = run(mode, processes, args.device)
            most = max(ranks, key=lambda r: r["student"] + r["gradients"] + r["optimizer"] + r["teacher"])
            parts = [most[key] / MB for key in ("student", "gradients", "optimizer", "teacher")]
            line = f"{processes:>9}  {mode:<10}" + "".join(f"  {part:>8.1f}" for part in parts)
            line += f"  {sum(parts):>8.1f}"
            if most["peak"] is not None:
                line += f"  {most['peak'] / MB:>9.1f}"
            print(line, flush=True)


if __name__ == "__main__":
    main()
