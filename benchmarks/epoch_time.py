"""Whole epochs of distillation against a plain hand-written PyTorch loop doing the same work, side by side.

    python benchmarks/epoch_time.py [--train 3840] [--val 512] [--batch 64] [--epochs 3] [--views 4]
                                    [--channels-last] [--compile] [--device cpu] [--fixed-cost-only] [--scratch]

The work: resnet56 -> resnet20, 100 classes, random 3x32x32 images (nothing to download), SGD, KD at T = 4
and alpha = 0.5, a validation pass and a checkpoint each epoch. Three ways to get the teacher's outputs:
  live            the frozen teacher runs on every batch
  cached          its outputs are read from a `distill cache` (the plain loop: from a tensor in memory)
  augmented cache crop_flip on every batch, the teacher's outputs read for the view shown (`cache.views`)
For each, an epoch of the library's training loop (`distill.train.fit` on the Distiller that `distill train`
builds, with its loaders) and an epoch of the plain loop alternate: the plain loop runs inside fit's epoch
callback, so machine noise falls on both alike. The library's first epoch is left out (it warms up, and a live
teacher computes its validation outputs, which it keeps for the epochs after). Printed: median seconds per
epoch, and the ratio library / plain (target for the live teacher: at most 1.03). Start-up is timed apart:
from the config to the first training step, against the plain loop's from nothing to its first step.

First, a whole run's fixed cost: a one-epoch `distill train` of that work with a live teacher, through the CLI's
`main`, from the config read to summary.json written, each phase named (its functions wrapped here, by the
library's own names: nothing is timed inside the library). Fixed cost = that span less the training stage;
target: at most 1.5 x torchdistill's 11.0 s on the same work. --fixed-cost-only stops there; --scratch adds
the student alone (and so the diagnosis) to the run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

import _phases
from distill import Distiller
from distill.config import load_config
from distill.data import CropFlip, view_key
from distill.models import build_model, count_params
from distill.recipes.offline import Offline
from distill.tasks import experiment
from distill.tasks.caches import make_cache
from distill.tasks.classify import build_experiment
from distill.train import fit
from distill.weights import load_weights, save_weights

T, ALPHA, CLASSES, SHAPE = 4.0, 0.5, 100, (3, 32, 32)
SEED = 0  # data.seed: the augmented views' keys (view_key), alike in both loops


class Timed:
    """A loader that notes when each pass over it starts: the start of an epoch."""

    def __init__(self, loader: Any):
        self.loader, self.starts = loader, []

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[Any]:
        self.starts.append(time.perf_counter())
        return iter(self.loader)

    def __getattr__(self, name: str) -> Any:  # batch_sampler, dataset: fit seeds each epoch through them
        return getattr(self.loader, name)


# --- the plain loop: what one would write by hand -----------------------------------------------------------------


class Plain:
    """A hand-written KD epoch over tensors in memory: shuffled index batches, the teacher's logits from
    `teacher_logits(x, rows)`, the same loss and optimizer, a validation pass and a checkpoint."""

    def __init__(self, student: torch.nn.Module, data: dict[str, torch.Tensor], batch: int, folder: Path, args):
        self.student, self.data, self.batch, self.folder = student, data, batch, folder
        self.channels_last = args.channels_last
        if self.channels_last:
            student.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
        self.epochs = 0

    def images(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def epoch(self, teacher_logits: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], augment=None) -> float:
        start = time.perf_counter()
        inputs, labels = self.data["train_x"], self.data["train_y"]
        self.student.train()
        for rows in torch.randperm(len(labels)).split(self.batch):
            x = inputs[rows] if augment is None else augment(inputs[rows], rows, self.epochs)
            x, y = self.images(x), labels[rows]
            teacher = teacher_logits(x, rows)
            logits = self.student(x)
            soft = F.kl_div(
                F.log_softmax(logits / T, -1), F.log_softmax(teacher / T, -1), reduction="batchmean", log_target=True
            )
            loss = ALPHA * F.cross_entropy(logits, y) + (1 - ALPHA) * T**2 * soft
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.student.eval()
        correct = torch.zeros(())
        with torch.no_grad():
            for x, y in zip(self.data["val_x"].split(256), self.data["val_y"].split(256), strict=True):
                correct += (self.student(self.images(x)).argmax(-1) == y).sum()
        correct.item()
        torch.save({"model": self.student.state_dict(), "optimizer": self.optimizer.state_dict()}, self.folder / "c.pt")
        self.epochs += 1
        return time.perf_counter() - start


# --- the library ---------------------------------------------------------------------------------------------------


def write_data(folder: Path, args) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    data = {}
    for part, n in (("train", args.train), ("val", args.val), ("test", args.val)):
        data[f"{part}_x"], data[f"{part}_y"] = torch.randn(n, *SHAPE), torch.randint(0, CLASSES, (n,))
        torch.save({"inputs": data[f"{part}_x"], "labels": data[f"{part}_y"]}, folder / f"{part}.pt")
    return data


def config(folder: Path, args, **overrides: Any) -> Path:
    raw = {
        "name": "epochs",
        "out_dir": str(folder / "runs"),
        "scratch": False,
        "data": {
            "name": "tensors",
            "path": str(folder / "train.pt"),
            "val_path": str(folder / "val.pt"),
            "test_path": str(folder / "test.pt"),
            "batch_size": args.batch,
            "seed": SEED,
        },
        "teacher": {"model": "resnet56", "weights": str(folder / "teacher.safetensors")},
        "student": {"model": "resnet20"},
        "method": {"kind": "offline", "terms": [{"loss": "kd", "temperature": T, "alpha": ALPHA}]},
        "train": {
            "epochs": args.epochs + 1,
            "optimizer": "sgd",
            "lr": 0.05,
            "progress": False,
            "device": args.device,
            "channels_last": args.channels_last,
            "compile": args.compile,
        },
    }
    for key, value in overrides.items():
        group, field = key.split("__")
        raw.setdefault(group, {})[field] = value
    path = folder / f"config-{len(list(folder.glob('config-*')))}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def library_epochs(cfg_path: Path, folder: Path, plain_epoch: Callable[[], float]) -> dict[str, Any]:
    """Train as `distill train` does, with a plain epoch after each of the library's."""
    start = time.perf_counter()
    cfg = load_config(cfg_path)
    exp = build_experiment(cfg)
    recipe = Offline(exp)  # builds the nets, opens a cache, checks the stage with a forward: `distill train`'s start
    distiller = Distiller(recipe.student, recipe.teacher, recipe.terms[0], teacher_dtype=recipe.dtype)
    loader, ends, plain = Timed(exp.train_loader), [], []

    class Alternate:
        def on_epoch_end(self, record: dict[str, Any]) -> None:
            ends.append(time.perf_counter())
            plain.append(plain_epoch())

    fit(distiller, loader, exp.val_loader, recipe.options[0], run_dir=folder / cfg_path.stem, callbacks=[Alternate()])
    library = [end - begin for begin, end in zip(loader.starts, ends, strict=True)]
    return {"library": library[1:], "plain": plain[1:], "start-up": loader.starts[0] - start}


def fixed_cost(args: argparse.Namespace) -> None:
    """A one-epoch `distill train` of the work, a trained teacher given, its phases timed (`_phases.py`)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_data(folder, args)
        torch.manual_seed(0)
        teacher = build_model("resnet56", input_shape=SHAPE, num_classes=CLASSES, args={}, field="teacher")
        save_weights(teacher, folder / "teacher.safetensors")
        _phases.fixed_cost(config(folder, args, train__epochs=1), args.scratch)


def report(
    args: argparse.Namespace, rows: dict[str, Any], seconds: dict[str, float], plain_start: float, params: tuple
) -> None:
    """The table of epochs, the start-up and the caches' making."""
    flags = [flag for flag in ("channels_last", "compile") if getattr(args, flag)]
    print(
        f"resnet56 ({params[0]:,} params) -> resnet20 ({params[1]:,}), {CLASSES} "
        f"classes, {args.train} training images of 3x32x32, batch {args.batch}, {args.val} validation images, "
        f"SGD, T={T:g}, {args.device}, {torch.get_num_threads()} threads, torch {torch.__version__}"
        + (f", {' + '.join(flags)}" if flags else "")
    )
    print(f"medians of {args.epochs} epochs each, after one warm-up epoch")
    print(f"{'teacher outputs':18}{'distill s/epoch':>17}{'plain s/epoch':>15}{'ratio':>8}")
    for name, row in rows.items():
        ours, theirs = statistics.median(row["library"]), statistics.median(row["plain"])
        ratios = [a / b for a, b in zip(row["library"], row["plain"], strict=True)]
        print(f"{name:18}{ours:>17.2f}{theirs:>15.2f}{statistics.median(ratios):>8.3f}")
    speedup = statistics.median(rows["cached"]["library"]) / statistics.median(rows["live"]["library"])
    print(f"live / plain live: target <= 1.03; cached epoch / live epoch: {speedup:.3f}")
    print(
        f"start-up to the first step: distill {rows['live']['start-up']:.2f} s (live teacher), "
        f"{rows['cached']['start-up']:.2f} s (cached), {rows['augmented cache']['start-up']:.2f} s (augmented "
        f"cache); plain {plain_start:.2f} s"
    )
    print(
        f"distill cache: {seconds['cache']:.1f} s for {args.train + 2 * args.val} images; with {args.views} views "
        f"of crop_flip: {seconds['views']:.1f} s"
    )


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=3840)
    parser.add_argument("--val", type=int, default=512)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="measured epochs of each (after one warm-up)")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--compile", action="store_true", help="train.compile, and torch.compile in the plain loop")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fixed-cost-only", action="store_true", help="a run's fixed cost, not the epochs")
    parser.add_argument("--scratch", action="store_true", help="the fixed-cost run trains the student alone too")
    return parser.parse_args()


def cache_seconds(cfg_path: Path) -> float:
    """How long `distill cache` of a config takes."""
    made = time.perf_counter()
    make_cache(experiment(load_config(cfg_path)))
    return time.perf_counter() - made


def main() -> None:
    args = arguments()
    fixed_cost(args)
    if args.fixed_cost_only:
        return

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = write_data(folder, args)
        torch.manual_seed(0)
        teacher = build_model("resnet56", input_shape=SHAPE, num_classes=CLASSES, args={}, field="teacher")
        save_weights(teacher, folder / "teacher.safetensors")
        teacher.eval()

        started = time.perf_counter()  # the plain loop's start-up: nets, weights, data in memory
        plain_student = build_model("resnet20", input_shape=SHAPE, num_classes=CLASSES, args={}, field="student")
        load_weights(teacher, folder / "teacher.safetensors")
        plain = Plain(plain_student, data, args.batch, folder, args)
        plain_start = time.perf_counter() - started
        if args.compile:  # both nets, as the library compiles its whole module, the live teacher's forward too
            plain.student.compile()
            teacher.compile()

        def live(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return teacher(x).clone()

        with torch.inference_mode():
            stored = torch.cat([teacher(x) for x in data["train_x"].split(256)]).half()
        crop_flip = CropFlip()
        views = args.views
        stored_views = []
        for view in range(views):
            augmented = torch.stack([crop_flip(x, view_key(SEED, view, i)) for i, x in enumerate(data["train_x"])])
            with torch.inference_mode():
                stored_views.append(torch.cat([teacher(x) for x in augmented.split(256)]).half())

        def augment(x: torch.Tensor, rows: torch.Tensor, epoch: int) -> torch.Tensor:
            view = epoch % views
            keys = [view_key(SEED, view, i) for i in rows.tolist()]
            return torch.stack([crop_flip(image, key) for image, key in zip(x, keys, strict=True)])

        def augmented_logits(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
            return stored_views[plain.epochs % views][rows].float()

        rows = {}
        rows["live"] = library_epochs(config(folder, args), folder, lambda: plain.epoch(live))
        cached = config(folder, args, teacher__cache=str(folder / "cache"))
        seconds = {"cache": cache_seconds(cached)}
        rows["cached"] = library_epochs(cached, folder, lambda: plain.epoch(lambda x, r: stored[r].float()))
        augmented_cfg = config(
            folder, args, teacher__cache=str(folder / "views"), data__augment="crop_flip", cache__views=views
        )
        seconds["views"] = cache_seconds(augmented_cfg)
        rows["augmented cache"] = library_epochs(
            augmented_cfg, folder, lambda: plain.epoch(augmented_logits, augment=augment)
        )

    report(args, rows, seconds, plain_start, (count_params(teacher), count_params(plain_student)))


if __name__ == "__main__":
    main()
