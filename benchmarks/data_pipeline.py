"""Training input read from a folder of image files: its speed against the floor, what it costs a distillation
epoch, and its memory as the folder grows.

    python benchmarks/data_pipeline.py [--images 2000] [--size 64] [--batch 64] [--workers 1] [--repeats 5]

The images: MNIST test digits (../shared/data/mnist-test), each enlarged to 80x80 and saved as an RGB JPEG in
one folder per class, so every read decodes a real JPEG. Three measurements, each side by side in one run:

1. Input, in images per second over one epoch of training batches (decode, `standard` augmentation: random
   resized crop to --size and flip, collate), alternating --repeats times, medians:
     distill      the train loader `distill train` builds for `data.name: folder`
     plain        a Dataset written here that opens the same files with Pillow and applies the same transform
                  and augmentation, in a DataLoader with the same workers: the floor
     ImageFolder  torchvision's, with the same transforms, where torchvision imports
   Target: distill / plain at least 0.95.
2. A distillation epoch (KD from a frozen CNN teacher to an MLP student, no augmentation) reading the folder,
   against the same epoch over the same images held in memory as tensors (`data.name: tensors`).
3. Peak resident memory of the training process over one such epoch, from a folder of N = --images images and
   of 4N (fresh processes; the workers' own peak beside it). Target: 4N / N at most 1.1.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from distill import Distiller
from distill.config import load_config
from distill.data import ImageTransform, view_key
from distill.data._augment import ResizedCropFlip
from distill.models import build_model
from distill.recipes.offline import Offline
from distill.tasks.classify import build_experiment
from distill.train import fit
from distill.train.parallel import loading
from distill.train.steps import seed_epoch
from distill.weights import save_weights

MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-test"
SOURCE_SIZE = 80  # the files' side: larger than the crop, as photographs are
TEACHER = {"channels": [16, 32]}  # a frozen, untrained teacher: its cost is what is measured, not its accuracy


def write_folder(folder: Path, count: int) -> None:
    """The first `count` MNIST test digits as 80x80 RGB JPEGs, one folder per class."""
    with gzip.open(MNIST / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28)
    with gzip.open(MNIST / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    for i in range(count):
        file = folder / str(labels[i]) / f"{i:05d}.jpg"
        file.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).convert("RGB").resize((SOURCE_SIZE, SOURCE_SIZE)).save(file, quality=90)


class Plain(Dataset):
    """The floor: files opened with Pillow, the same transform and augmentation (a draw per row)."""

    def __init__(self, files: list[Path], labels: list[int], transform: ImageTransform, augment: ResizedCropFlip):
        self.files, self.labels, self.transform, self.augment = files, labels, transform, augment

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.files[i]) as image:
            pixels = self.transform.pixels(image.convert("RGB"))
        view = self.augment(pixels, view_key(0, 0, i))
        return self.transform.standardise(view), self.labels[i]


def config(folder: Path, data: dict[str, Any], args: argparse.Namespace, name: str) -> Path:
    raw = {
        "name": name,
        "out_dir": str(folder / "runs"),
        "scratch": False,
        "data": {"batch_size": args.batch, "num_workers": args.workers, **data},
        "teacher": {"model": "cnn", "args": TEACHER, "weights": str(folder / "teacher.safetensors")},
        "student": {"model": "mlp", "args": {"hidden": [64]}},
        "train": {"epochs": 1, "progress": False},
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def images_per_second(loader: DataLoader, epoch: int) -> float:
    seed_epoch(loader, 0, epoch)
    start, count = time.perf_counter(), 0
    for batch in loader:
        count += len(batch["input"] if isinstance(batch, dict) else batch[0])
    return count / (time.perf_counter() - start)


def input_speed(folder: Path, args: argparse.Namespace) -> dict[str, float]:
    """Medians of images per second, the loaders taking turns."""
    cfg = load_config(
        config(
            folder,
            {
                "name": "folder",
                "path": str(folder / "images"),
                "augment": "standard",
                "image_size": args.size,
                "normalize": "none",
            },
            args,
            "input",
        )
    )
    exp = build_experiment(cfg)
    files = exp.splits.train.inputs
    plain = Plain(
        [files.file(i) for i in range(len(files))],
        exp.splits.train.labels.tolist(),
        files.transform,
        ResizedCropFlip(files.transform.size),
    )
    loaders = {
        "distill": exp.train_loader,
        "plain": DataLoader(plain, batch_size=args.batch, shuffle=True, **loading(args.workers)),
    }
    loaders.update(image_folder(folder, exp, args))
    speeds: dict[str, list[float]] = {name: [] for name in loaders}
    for epoch in range(args.repeats + 1):
        order = list(loaders) if epoch % 2 else list(loaders)[::-1]  # each goes first as often: no order effect
        for name in order:
            speed = images_per_second(loaders[name], epoch)
            if epoch:  # the first pass starts the workers
                speeds[name].append(speed)
    return {name: statistics.median(values) for name, values in speeds.items()}


def image_folder(folder: Path, exp: Any, args: argparse.Namespace) -> dict[str, DataLoader]:
    """torchvision's ImageFolder with the same transforms, where torchvision imports."""
    try:
        from torchvision.datasets import ImageFolder
    except Exception:  # absent, or its compiled operators do not load beside this torch
        return {}
    transform, augment = exp.splits.train.inputs.transform, ResizedCropFlip(exp.splits.train.inputs.transform.size)
    counter = iter(range(10**12))
    dataset = ImageFolder(
        str(folder / "images"), transform=lambda image: augment(transform.pixels(image.convert("RGB")), next(counter))
    )
    return {"ImageFolder": DataLoader(dataset, batch_size=args.batch, shuffle=True, **loading(args.workers))}


def epoch_seconds(cfg_path: Path, epochs: int) -> list[float]:
    """Seconds of each of `epochs` distillation epochs as `distill train` runs them, the first left out."""
    exp = build_experiment(load_config(cfg_path))
    recipe = Offline(exp)
    distiller = Distiller(recipe.student, recipe.teacher, recipe.terms[0], teacher_dtype=recipe.dtype)
    ends = [time.perf_counter()]

    class Clock:
        def on_epoch_end(self, record: dict[str, Any]) -> None:
            ends.append(time.perf_counter())

    options = recipe.options[0].model_copy(update={"epochs": epochs + 1})
    fit(
        distiller,
        exp.train_loader,
        exp.val_loader,
        options,
        run_dir=Path(tempfile.mkdtemp(dir=cfg_path.parent)),
        callbacks=[Clock()],
    )
    return [end - start for start, end in itertools.pairwise(ends[1:])]


def epoch_costs(folder: Path, args: argparse.Namespace) -> dict[str, float]:
    """Median seconds of a distillation epoch from the folder and from the same images as tensors."""
    from_folder = config(
        folder,
        {"name": "folder", "path": str(folder / "images"), "image_size": args.size, "normalize": "none"},
        args,
        "epoch-folder",
    )
    exp = build_experiment(load_config(from_folder))
    inputs = torch.stack([exp.splits.inputs[i] for i in range(len(exp.splits.inputs))])
    torch.save({"inputs": inputs, "labels": exp.data.labels}, folder / "images.pt")
    in_memory = config(
        folder, {"name": "tensors", "path": str(folder / "images.pt"), "num_workers": 0}, args, "epoch-tensors"
    )
    seconds: dict[str, list[float]] = {"folder": [], "tensors": []}
    for _ in range(args.repeats):
        seconds["folder"] += epoch_seconds(from_folder, 1)
        seconds["tensors"] += epoch_seconds(in_memory, 1)
    return {name: statistics.median(values) for name, values in seconds.items()}


def peak_memory(folder: Path, args: argparse.Namespace) -> dict[int, dict[str, float]]:
    """Peak resident MB of one distillation epoch over N and 4N images, each in a fresh process."""
    peaks = {}
    for count in (args.images, 4 * args.images):
        images = folder / f"images-{count}"
        write_folder(images, count)
        cfg = config(folder, {"name": "folder", "path": str(images), "image_size": args.size}, args, f"memory-{count}")
        done = subprocess.run(
            [sys.executable, __file__, "--one-epoch", str(cfg)], capture_output=True, text=True, check=True
        )
        peaks[count] = json.loads(done.stdout.splitlines()[-1])
    return peaks


def one_epoch(cfg_path: Path) -> None:
    """In a fresh process: one distillation epoch; the peak resident memory of this process and its workers."""
    epoch_seconds(cfg_path, 0)
    mb = 1024  # ru_maxrss is in KB on Linux
    print(
        json.dumps(
            {
                "process_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / mb,
                "workers_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / mb,
            }
        )
    )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000, help="images in the folder (N; the memory check adds 4N)")
    parser.add_argument("--size", type=int, default=64, help="the side the images are cropped to")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="DataLoader workers, the same for every loader")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--one-epoch", type=Path, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = arguments()
    if args.one_epoch:
        one_epoch(args.one_epoch)
        return
    if 4 * args.images > 10_000:
        raise SystemExit("--images: at most 2500 (the memory check reads 4N of MNIST's 10,000 test digits)")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_folder(folder / "images", args.images)
        teacher = build_model("cnn", input_shape=(3, args.size, args.size), num_classes=10, args=TEACHER)
        save_weights(teacher, folder / "teacher.safetensors")
        report(input_speed(folder, args), epoch_costs(folder, args), peak_memory(folder, args), args)


def report(speeds: dict[str, float], epochs: dict[str, float], peaks: dict[int, dict[str, float]], args) -> None:
    print(
        f"{args.images} MNIST digits as {SOURCE_SIZE}x{SOURCE_SIZE} JPEGs, crop {args.size}, batch {args.batch}, "
        f"{args.workers} worker(s), {torch.get_num_threads()} torch thread(s), medians of {args.repeats}"
    )
    print("\ninput (decode + standard augmentation + collate)   images/s   vs plain")
    for name, speed in speeds.items():
        print(f"  {name:<48} {speed:>8,.0f}   {speed / speeds['plain']:.3f}x")
    print("\ndistillation epoch (live CNN teacher, MLP student)   s/epoch   vs tensors")
    for name, seconds in epochs.items():
        print(
            f"  {'from the folder' if name == 'folder' else 'from tensors in memory':<48} {seconds:>8.2f}   "
            f"{seconds / epochs['tensors']:.2f}x"
        )
    print("\npeak resident memory of one epoch                 process MB   workers MB")
    for count, peak in peaks.items():
        print(f"  {count:>6} images{'':<38} {peak['process_mb']:>8.0f}   {peak['workers_mb']:>8.0f}")
    small, large = (peaks[n]["process_mb"] for n in sorted(peaks))
    print(f"  4N / N{'':<44} {large / small:.3f}x")


if __name__ == "__main__":
    main()
