"""CIFAR-10 and CIFAR-100 from their python-pickle archives, read with an unpickler that can build numpy arrays only.

Inputs are float32 (N, 3, 32, 32), scaled to [0, 1] and normalised per channel with the mean and std of the
training images that CIFAR benchmarks use (below). The official test images follow the training images and are the
data's fixed test part (`ArrayData.test_indices`); validation is drawn from the training images (the published
KD tables pick on the test set itself, which makes their figures optimistic).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from distill._io import existing
from distill.data._core import DATASETS, ArrayData
from distill.errors import DistillError, first_line

# Per-channel (R, G, B) mean and std of the 50,000 training images, pixels in [0, 1].
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)

# Everything a pickled numpy array needs: the reconstructors of numpy 1 (numpy.core, which the official files
# name) and numpy 2 (numpy._core), protocol 5's _frombuffer, and the two classes they are called with.
NUMPY_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }
)
PIXELS = 3 * 32 * 32  # a row of 'data': 1024 red, then 1024 green, then 1024 blue values, each plane row-major


@dataclass(frozen=True)
class Layout:
    """Where one CIFAR variant keeps its parts, and how to normalise it."""

    folder: str
    archive: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str
    names_key: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


CIFAR100 = Layout(
    "cifar-100-python",
    "cifar-100-python.tar.gz",
    ("train",),
    "test",
    "meta",
    "fine_labels",
    "fine_label_names",
    CIFAR100_MEAN,
    CIFAR100_STD,
)
CIFAR10 = Layout(
    "cifar-10-batches-py",
    "cifar-10-python.tar.gz",
    tuple(f"data_batch_{i}" for i in range(1, 6)),
    "test_batch",
    "batches.meta",
    "labels",
    "label_names",
    CIFAR10_MEAN,
    CIFAR10_STD,
)


@DATASETS.register("cifar100")
def load_cifar100(path: str) -> ArrayData:
    """CIFAR-100, fine labels: 50,000 train + 10,000 test images, the test images as the fixed validation part.

    `path` is the cifar-100-python folder or the folder holding it. Normalised with mean (0.5071, 0.4865, 0.4409)
    and std (0.2673, 0.2564, 0.2762).
    """
    return _load("cifar100", CIFAR100, path)


@DATASETS.register("cifar10")
def load_cifar10(path: str) -> ArrayData:
    """CIFAR-10: 50,000 train + 10,000 test images, the test images as the fixed validation part.

    `path` is the cifar-10-batches-py folder or the folder holding it. Normalised with mean (0.4914, 0.4822, 0.4465)
    and std (0.2470, 0.2435, 0.2616).
    """
    return _load("cifar10", CIFAR10, path)


def _load(name: str, layout: Layout, path: str) -> ArrayData:
    folder = _folder(path, layout)
    classes = _class_names(folder / layout.meta, layout)
    train = [_batch(folder / part, layout, len(classes)) for part in layout.train]
    test_images, test_labels = _batch(folder / layout.test, layout, len(classes))
    images = np.concatenate([part[0] for part in train] + [test_images])  # (N, 3072) uint8, test rows last
    labels = np.concatenate([part[1] for part in train] + [test_labels])
    n_test = len(test_labels)
    n_train = len(labels) - n_test
    return ArrayData(
        inputs=_normalise(images, layout),
        labels=torch.from_numpy(labels),
        classes=classes,
        description=f"{name}:{folder.resolve()} ({n_train} train + {n_test} test samples, normalised per channel)",
        preprocessing=f"RGB pixels of 0..255 shaped (3, 32, 32), divided by 255, then per channel (x - mean) / std "
        f"with mean {layout.mean} and std {layout.std}",
        test_indices=torch.arange(n_train, n_train + n_test),
    )


def _folder(path: str, layout: Layout) -> Path:
    """The folder holding the parts: `path` itself, or its `layout.folder` subfolder."""
    given = existing(path, f"the {layout.folder} folder or the folder holding it")
    if (given / layout.folder).is_dir():
        return given / layout.folder
    if not given.is_dir():
        raise DistillError(f"{given}: is a file; extract {layout.archive} and pass the {layout.folder} folder")
    if given.resolve().name != layout.folder and not (given / layout.meta).exists():
        raise DistillError(f"{given}: has no {layout.folder} folder; download and extract {layout.archive} there")
    return given


def _normalise(images: np.ndarray, layout: Layout) -> Tensor:
    """(N, 3072) uint8 -> (N, 3, 32, 32) float32, (x / 255 - mean) / std per channel, in place to spare memory."""
    inputs = torch.from_numpy(images).view(-1, 3, 32, 32).float().div_(255)
    return inputs.sub_(torch.tensor(layout.mean).view(3, 1, 1)).div_(torch.tensor(layout.std).view(3, 1, 1))


def _class_names(file: Path, layout: Layout) -> list[str]:
    names = _unpickle(file, layout).get(layout.names_key)
    if not isinstance(names, list) or not names or not all(isinstance(n, (bytes, str)) for n in names):
        raise DistillError(f"{file}: needs '{layout.names_key}', a list of class names; {_again(layout)}")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def _batch(file: Path, layout: Layout, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(images (N, 3072) uint8, labels (N,) int64) of one pickled part, checked against each other and the classes."""
    content = _unpickle(file, layout)
    missing = [key for key in ("data", layout.label_key) if key not in content]
    if missing:
        raise DistillError(f"{file}: has keys {sorted(map(str, content))}, needs {missing}; {_again(layout)}")
    images = content["data"]
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.shape[1:] != (PIXELS,):
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise DistillError(f"{file}: 'data' must be uint8 shaped (N, {PIXELS}), got {got}; {_again(layout)}")
    try:
        labels = np.asarray(content[layout.label_key], dtype=np.int64)
    except (TypeError, ValueError, OverflowError) as e:
        raise DistillError(
            f"{file}: '{layout.label_key}' is not a list of integers ({first_line(e, typed=True)})"
        ) from e
    if labels.shape != (len(images),):
        got = f"{len(images)} images but '{layout.label_key}' is shaped {labels.shape}"
        raise DistillError(f"{file}: {got}; {_again(layout)}")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        found = f"found {labels.min()}..{labels.max()} but {layout.meta} names {num_classes} classes"
        raise DistillError(f"{file}: {found}; {_again(layout)}")
    return images, labels


class _Refused(pickle.UnpicklingError):
    pass


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Builds dicts, lists, strings, numbers and numpy arrays; any other global (os.system, ...) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in NUMPY_GLOBALS:
            raise _Refused(f"{module}.{name}")
        return super().find_class(module, name)


def _unpickle(file: Path, layout: Layout) -> dict[str, Any]:
    """The pickled dict with its keys as str (the official files, pickled by Python 2, have them as bytes)."""
    if not file.is_file():
        raise DistillError(f"{file}: no such file; download and extract {layout.archive} so this folder is whole")
    try:
        with open(file, "rb") as f:
            content = _NumpyOnlyUnpickler(f, encoding="latin1").load()  # latin1: what Python 2 numpy pickles need
    except _Refused as e:
        refused = f"refused to unpickle it: it asks for {e}, which no CIFAR file needs"
        raise DistillError(f"{file}: {refused}; replace it with the one from the official {layout.archive}") from None
    except Exception as e:  # a truncated or corrupt pickle raises EOF, Unpickling, Value, Type... errors
        problem = f"cannot read it ({first_line(e, typed=True)}), it is truncated or corrupt"
        raise DistillError(f"{file}: {problem}; {_again(layout)}") from e
    if not isinstance(content, dict):
        raise DistillError(f"{file}: holds a {type(content).__name__}, not a dict; {_again(layout)}")
    return {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in content.items()}


def _again(layout: Layout) -> str:
    return f"download and extract {layout.archive} again"
