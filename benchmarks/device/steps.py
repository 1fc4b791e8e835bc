"""Training-step throughput on a CUDA device, and the fused token loss at a large vocabulary: the table
`benchmarks/device/run.sh` prints.

    python benchmarks/device/steps.py [--steps 30] [--device cuda] [--quick]

Steps, resnet32x4 -> resnet8x4, 100 classes, random 3x32x32 images already on the device, KD at T = 4:
  student     forward + backward + SGD step of the student alone (cross-entropy)
  live        a Distiller step with the frozen teacher run on the batch
  cached      a Distiller step reading the teacher's outputs from a `distill cache` by sample index
  augmented   crop_flip of the batch on the CPU (as the data loader does), moved to the device, then a cached
              step reading the teacher's outputs on that view
at batch 64 and 256, in fp32 and under bf16 autocast, with and without torch.compile of the student (compiled
in place once per set-up; its compile time is reported, not counted). Images per second: the batch over the
median of `--steps` timed steps after warm-up, each timed with CUDA events.

Token loss: B=8 sequences of S=1024 tokens, student width 1024, teacher 2048, vocabulary 128,256, forward KL:
the plain form (full logits of both models) against the fused one; peak memory above the inputs and time
for a forward + backward. `--quick` shrinks everything to check the script on a CPU.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from distill import Distiller, Supervised, losses
from distill.cache.logits import TeacherCache, Views
from distill.cache.write import write_cache
from distill.data import CropFlip, view_key
from distill.losses.fused import fused_token_distillation_loss
from distill.losses.token import token_distillation_loss
from distill.models import build_model

CLASSES, SHAPE = 100, (3, 32, 32)


def timed(step, steps: int, device: torch.device) -> float:
    """Median seconds of `step` over `steps` runs after 5 warm-up runs."""
    for _ in range(5):
        step()
    times = []
    for _ in range(steps):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            begin = time.perf_counter()
            step()
            times.append(time.perf_counter() - begin)
    return statistics.median(times)


def training_step(module: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: dict, precision: str):
    def step() -> None:
        with torch.autocast(batch["input"].device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = module(batch)["loss"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def view_of(images: torch.Tensor, index: torch.Tensor, view: int, seed: int = 0) -> torch.Tensor:
    """View `view` of the samples `index`, cropped and flipped one by one on the CPU as the data loader does."""
    crop = CropFlip()
    keys = [view_key(seed, view, i) for i in index.tolist()]
    return torch.stack([crop(image, key) for image, key in zip(images, keys, strict=True)])


def rates(student, teacher, cache, images, labels, index, precision: str, repeats: int, device) -> list[float]:
    """Images per second of the four steps for one set-up (batch `index` of `images`)."""
    batch = {"input": images[index].to(device), "label": labels[index].to(device), "index": index}
    augmented = {**batch, "view": torch.full((len(index),), 1)}
    kd = losses.KD(temperature=4.0, alpha=0.5)
    found = []
    steps = [
        (Supervised(student), batch),
        (Distiller(student, teacher, [kd]), batch),
        (Distiller(student, cache, [kd]), batch),
        (Distiller(student, cache, [kd]), augmented),
    ]
    for module, the_batch in steps:
        optimizer = torch.optim.SGD(student.parameters(), lr=1e-3, momentum=0.9)
        train = training_step(module, optimizer, the_batch, precision)
        if "view" in the_batch:  # the loader's work too: the batch's view, made on the CPU and moved

            def step(train=train, the_batch=the_batch) -> None:
                the_batch["input"] = view_of(images[index], index, 1).to(device, non_blocking=True)
                train()

        else:
            step = train
        found.append(len(index) / timed(step, repeats, device))
    return found


def image_steps(args, device: torch.device, folder: Path) -> list[str]:
    torch.manual_seed(0)
    teacher = build_model("resnet32x4", input_shape=SHAPE, num_classes=CLASSES, args={}, field="teacher").to(device)
    samples = 512 if args.quick else 4096
    images, labels = torch.randn(samples, *SHAPE), torch.randint(0, CLASSES, (samples,))
    views = Views(CropFlip(), 2, seed=0)
    write_cache(folder / "views", teacher, images, labels, data="random", views=views, device=device, progress=False)
    cache = TeacherCache(folder / "views")
    lines = [
        f"{'batch':>5} {'precision':>9} {'compile':>8} {'student':>9} {'live':>9} {'cached':>9} {'augmented':>10}"
        "   (images/s; compile s)"
    ]
    for batch_size in (8, 16) if args.quick else (64, 256):
        index = torch.randperm(samples)[:batch_size]
        for precision in ("fp32", "bf16"):
            for compiled in (False, True):
                torch.manual_seed(0)
                student = build_model("resnet8x4", input_shape=SHAPE, num_classes=CLASSES, args={}, field="s")
                student.to(device)
                compile_seconds = ""
                if compiled:
                    student.compile()
                    begin = time.perf_counter()
                    rates(student, teacher, cache, images, labels, index, precision, 1, device)  # compiles
                    compile_seconds = f"   {time.perf_counter() - begin:.0f}"
                found = rates(student, teacher, cache, images, labels, index, precision, args.steps, device)
                cells = "".join(f"{r:>10,.0f}" for r in found)
                lines.append(f"{batch_size:>5} {precision:>9} {'yes' if compiled else 'no':>8}{cells}{compile_seconds}")
    return lines


def loss_step(form: str, student_hidden, student_weight, teacher_hidden, teacher_weight, labels) -> None:
    if form == "plain":
        with torch.no_grad():
            teacher_logits = teacher_hidden @ teacher_weight.T  # (B, S, V)
        loss = token_distillation_loss(student_hidden @ student_weight.T, teacher_logits, labels).loss
    else:
        loss = fused_token_distillation_loss(
            student_hidden, student_weight, teacher_hidden, teacher_weight, labels
        ).loss
    loss.backward()
    student_hidden.grad = student_weight.grad = None


def token_loss(args, device: torch.device) -> list[str]:
    b, s, h, h_teacher, v = (2, 64, 64, 128, 4096) if args.quick else (8, 1024, 1024, 2048, 128_256)
    torch.manual_seed(0)
    inputs = (
        torch.randn(b, s, h, device=device, requires_grad=True),
        (torch.randn(v, h, device=device) * 0.02).requires_grad_(),
        torch.randn(b, s, h_teacher, device=device),
        torch.randn(v, h_teacher, device=device) * 0.02,
        torch.randint(v, (b, s), device=device),
    )
    lines = [f"token loss, B={b} S={s} H={h} (teacher {h_teacher}) V={v:,}, forward KL, fp32:"]
    for form in ("plain", "fused"):
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        seconds = timed(lambda form=form: loss_step(form, *inputs), 5, device)
        peak = torch.cuda.max_memory_allocated() - before if device.type == "cuda" else float("nan")
        lines.append(f"  {form:6} {seconds * 1e3:9.1f} ms   peak above inputs {peak / 2**30:6.2f} GiB")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to check the script itself")
    args = parser.parse_args()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"{name}, torch {torch.__version__}, resnet32x4 -> resnet8x4, 100 classes, random 3x32x32")
    with tempfile.TemporaryDirectory() as tmp:
        for line in image_steps(args, device, Path(tmp)):
            print(line, flush=True)
    for line in token_loss(args, device):
        print(line, flush=True)


if __name__ == "__main__":
    main()
