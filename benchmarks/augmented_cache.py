"""Does a cache of augmented views teach as well as the live teacher on augmented batches, and how much faster?

    python benchmarks/augmented_cache.py [--data ../shared/data/mnist-test] [--seeds 0 1 2] [--epochs 12] [--views 4]

The MNIST set-up of the other benchmarks (see _mnist.py), with crop_flip (pad 4, random crop, left-right flip)
on every training batch, teacher and students alike. For each seed, a student of the same initial weights
learns by KD (T = 4, alpha = 0.5) from:
  live teacher         the teacher runs on every augmented batch
  augmented cache      its outputs on K views of every image, recorded once (`cache.views`); epoch e replays
                       view e mod K, so the student sees the pixels the outputs are of
  clean cache          its outputs on the images as they are (`cache.allow_augmented`), for augmented inputs
and the student alone, with the same augmentation. Test accuracy (2,000 images no run or choice saw) as mean
± std over the seeds, and the seconds each student's training took (the cache's own making counted apart).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _mnist import DEFAULT_DATA, STUDENT, accuracy, mnist, trained_teacher
from distill import Distiller, Supervised, fit, losses
from distill.cache.logits import TeacherCache, Views
from distill.cache.write import write_cache
from distill.data import CropFlip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--views", type=int, default=4)
    args = parser.parse_args()
    setup = mnist(args.data, args.epochs, augment="crop_flip")
    teacher = trained_teacher(setup, args.seeds)
    print(f"augmentation: crop_flip on every training batch; augmented cache of {args.views} views")
    train, val, kd = setup.train, setup.val, losses.KD(temperature=4.0, alpha=0.5)
    accuracies: dict[str, list[float]] = {}
    seconds: dict[str, list[float]] = {}

    def trained(name: str, module, student, seed: int) -> None:
        start = time.perf_counter()
        fit(module, train, val, setup.options.model_copy(update={"seed": seed}))
        seconds.setdefault(name, []).append(time.perf_counter() - start)
        accuracies.setdefault(name, []).append(accuracy(student, setup.test))

    with tempfile.TemporaryDirectory() as tmp:
        made = {}
        for name, views in (("clean", None), ("views", Views(CropFlip(), args.views, seed=0))):
            start = time.perf_counter()
            write_cache(
                Path(tmp) / name,
                teacher,
                setup.data.inputs,
                setup.data.labels,
                data="mnist",
                augment="crop_flip",
                views=views,
                progress=False,
            )
            made[name] = time.perf_counter() - start
        clean, views = TeacherCache(Path(tmp) / "clean"), TeacherCache(Path(tmp) / "views")
        for seed in args.seeds:
            alone = setup.net(seed, STUDENT)
            trained("student alone", Supervised(alone), alone, seed)
            student = setup.net(seed, STUDENT)
            trained("live teacher", Distiller(student, teacher, [kd]), student, seed)
            student = setup.net(seed, STUDENT)
            trained("clean cache", Distiller(student, clean, [kd]), student, seed)
            setup.splits.train.replay(args.views, seed=0)  # the cache's views, epoch e showing view e mod K
            student = setup.net(seed, STUDENT)
            trained(f"augmented cache, {args.views} views", Distiller(student, views, [kd]), student, seed)
            setup.splits.train.replay(None)  # fresh draws again for the next seed's other runs
            print(f"  seed {seed} done", flush=True)

    print(f"caches made in: clean {made['clean']:.1f} s, {args.views} views {made['views']:.1f} s")
    print(f"\n| teacher outputs | test accuracy (mean ± std, {len(args.seeds)} seeds) | per seed | training s (mean) |")
    print("| --- | --- | --- | --- |")
    for name, accs in accuracies.items():
        spread = statistics.stdev(accs) if len(accs) > 1 else 0.0
        per_seed, took = ", ".join(f"{a:.4f}" for a in accs), statistics.mean(seconds[name])
        print(f"| {name} | {statistics.mean(accs):.4f} ± {spread:.4f} | {per_seed} | {took:.1f} |")


if __name__ == "__main__":
    main()
