"""`distill predict`: a trained classifier's most probable classes for image files or table rows, each input
prepared exactly as the run's evaluation prepared its test inputs: the image transform (or a table's feature
statistics) is read from what the model carries, a run's summary.json or an exported file's metadata, never
made again from training data. Inputs go through in batches, so a folder of many images streams.

And `distill eval RUN --predictions FILE`: each model's class for every test row, what `predict` is checked
against.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor

from distill._io import atomic_write, existing
from distill.config import Config, read_saved, validate
from distill.data import ImageFiles, ImageTransform
from distill.data._images import SUFFIXES
from distill.errors import DistillError
from distill.export import Deployable, load_exported
from distill.models import build_model
from distill.pipeline import open_run, recipe_of
from distill.rundir import saved_models
from distill.tasks.accuracy import logits_on
from distill.tasks.base import model_spec
from distill.train import resolve_device
from distill.weights import load_weights

BATCH = 64  # inputs a forward pass takes: images decoded a batch at a time


@dataclass
class Classifier:
    """A model ready to predict: logits of a CPU batch, its classes, and how an input becomes what it takes: an
    image `transform`, or a table's feature `columns` (training's, when its CSV can be read; None: the file's
    own, less the label column) standardised with `stats`."""

    source: str  # the model as the user named it, for messages
    predict: Callable[[Tensor], Tensor]
    classes: list[str]
    transform: ImageTransform | None
    features: int | None = None  # a table model's input width
    stats: dict[str, list[float]] | None = None
    label_column: str | None = None
    columns: list[str] | None = None


@dataclass
class Prediction:
    input: str  # the image file, or FILE:LINE of a table row, relative to the working directory
    top: list[tuple[str, float]]  # (class, probability), most probable first

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "top": [{"class": c, "probability": p} for c, p in self.top]}


def predict(
    model: str | Path, inputs: list[str], *, name: str | None = None, top_k: int = 3, batch: int = BATCH
) -> tuple[list[str], Iterator[Prediction]]:
    """The names of `inputs` (image files, folders of them at any depth, or CSV files of feature columns) as
    predictions will give them, and the predictions of `model` (a run folder, its model `name`, the student by
    default; or a file `distill export` wrote), computed as they are iterated. Every problem with the model or
    an input's path is raised before the first prediction."""
    if top_k < 1:
        raise DistillError(f"--top-k must be at least 1, got {top_k}")
    table = bool(inputs) and all(Path(given).suffix.lower() == ".csv" for given in inputs)
    classifier = load_classifier(model, name, table=table)
    if table:
        names, rows = table_rows(classifier, inputs)
        return names, _predicted(classifier, names, rows.split(batch), top_k)
    files = image_files(inputs)
    names = [os.path.relpath(file) for file in files]
    return names, _predicted(classifier, names, _pictures(classifier.transform, files, batch), top_k)


def _predicted(classifier: Classifier, names: list[str], batches: Iterator[Tensor], top_k: int) -> Iterator[Prediction]:
    done = 0
    for rows in batches:
        probabilities = classifier.predict(rows).float().softmax(-1)  # (B, C)
        top = probabilities.topk(min(top_k, len(classifier.classes)), dim=-1)
        for values, indices in zip(top.values.tolist(), top.indices.tolist(), strict=True):
            yield Prediction(names[done], [(classifier.classes[i], p) for i, p in zip(indices, values, strict=True)])
            done += 1


def _pictures(transform: ImageTransform, files: list[Path], batch: int) -> Iterator[Tensor]:
    """The files decoded and transformed as the run's test images were, `batch` at a time: (B, C, H, W)."""
    for start in range(0, len(files), batch):
        yield torch.stack([transform(transform.open(file)) for file in files[start : start + batch]])


# --- the model -------------------------------------------------------------------------------------------------


def load_classifier(model: str | Path, name: str | None = None, *, table: bool = False) -> Classifier:
    """A run folder's model `name` (the student by default) or an exported file, for images or, with `table`,
    for table rows; a DistillError says why it cannot serve them."""
    path = Path(model).expanduser()
    if (path / "config.yaml").is_file():
        return _from_run(path, name or "student", table)
    if path.is_dir() or not path.exists():
        raise DistillError(
            f"{path} is not a run folder (no config.yaml) nor a file `distill export` wrote (.onnx, .pt2, .pt)"
        )
    if name is not None:
        raise DistillError(f"--model picks a model of a run folder; {path} is one exported model: leave --model out")
    return _from_file(path, table)


def _from_run(folder: Path, name: str, table: bool) -> Classifier:
    """A run's model built as its config says and loaded from NAME.safetensors, with no data read: summary.json
    holds the classes and the image transform, or a table's feature statistics from the training split."""
    cfg = read_saved(folder / "config.yaml")
    if cfg.task != "classify":
        raise DistillError(f"{folder}: a task: {cfg.task} run; distill predict takes a classifier's (task: classify)")
    summary = _summary(folder)
    fields = recipe_of(cfg).fields(cfg)
    saved = saved_models(folder, list(fields))
    if name.split("-seed")[0] not in saved or not (folder / f"{name}.safetensors").is_file():
        raise DistillError(f"--model {name}: {folder} saved no such model; it has: {', '.join(saved) or 'none yet'}")
    shape, classes = summary["input_shape"], summary["classes"]
    spec, field = model_spec(cfg, fields[name.split("-seed")[0]]), fields[name.split("-seed")[0]]
    net = build_model(spec.model, input_shape=shape, num_classes=len(classes), args=spec.args, field=field)
    load_weights(net, folder / f"{name}.safetensors")
    predict, transform = _forward(Deployable(net).eval()), summary["transform"]
    if not table:
        if transform is None:
            raise _no_transform(str(folder), f"data.name {cfg.data.name}")
        return Classifier(str(folder), predict, classes, ImageTransform.from_dict(transform))
    if transform is not None:
        raise _images_only(str(folder))
    if len(shape) != 1:
        raise _no_rows(str(folder), f"data.name {cfg.data.name}")
    stats, columns = summary["standardize"], _training_columns(cfg)
    return Classifier(str(folder), predict, classes, None, shape[0], stats, _label(cfg), columns)


def _summary(folder: Path) -> dict[str, Any]:
    saved = folder / "summary.json"
    if not saved.is_file():
        raise DistillError(f"{folder} has no summary.json: the run is not finished; finish it with --resume")
    summary = json.loads(saved.read_text())
    if "input_shape" not in summary:
        raise DistillError(f"{saved}: holds no input shape or classes (made before distill predict); train it again")
    return summary


def _forward(net: torch.nn.Module) -> Callable[[Tensor], Tensor]:
    @torch.inference_mode()
    def forward(inputs: Tensor) -> Tensor:
        return net(inputs)

    return forward


def _from_file(path: Path, table: bool) -> Classifier:
    predict, meta = load_exported(path)
    if meta.get("task") == "lm":
        raise DistillError(f"{path}: a language model; distill predict takes a classifier (task: classify)")
    if "classes" not in meta or "config" not in meta:
        raise DistillError(f"{path}: holds no distill metadata (no classes); give a file `distill export` wrote")
    classes, shape = json.loads(meta["classes"]), json.loads(meta["input_shape"])[1:]
    transform = ImageTransform.from_dict(json.loads(meta["transform"])) if "transform" in meta else None
    if not table:
        if transform is None:
            images = "its data were not image files, or it was exported before distill predict: export it again"
            raise _no_transform(str(path), images)
        return Classifier(str(path), predict, classes, transform)
    if transform is not None:
        raise _images_only(str(path))
    cfg = validate(yaml.safe_load(meta["config"]), str(path))
    if len(shape) != 1:
        raise _no_rows(str(path), f"data.name {cfg.data.name}")
    stats = json.loads(meta["standardize"]) if "standardize" in meta else None
    return Classifier(str(path), predict, classes, None, shape[0], stats, _label(cfg), _training_columns(cfg))


def _no_transform(model: str, why: str) -> DistillError:
    return DistillError(
        f"{model}: holds no image transform ({why}); distill predict takes image files for a model trained on "
        "image files (data.name folder or manifest), CSV files for one trained on a CSV"
    )


def _images_only(model: str) -> DistillError:
    return DistillError(f"{model}: was trained on image files; give it images or folders of them, not CSV files")


def _no_rows(model: str, data: str) -> DistillError:
    return DistillError(f"{model}: was trained on arrays ({data}), not table rows; distill predict cannot read those")


# --- the inputs ------------------------------------------------------------------------------------------------


def image_files(given: list[str]) -> list[Path]:
    """The files of `given`: image files, and every image file at any depth in a folder, sorted (others there
    are left out, as training leaves them)."""
    files = []
    for each in given:
        path = existing(each, "an image file or a folder of them")
        if path.is_dir():
            found = sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in SUFFIXES and not p.name.startswith(".")
            )
            if not found:
                raise DistillError(f"{path}: holds no image files ({', '.join(SUFFIXES)}); give a folder of images")
            files += found
        elif path.suffix.lower() in SUFFIXES:
            files.append(path)
        else:
            raise DistillError(
                f"{path}: not an image file ({', '.join(SUFFIXES)}); give image files or folders of them"
            )
    return files


def _label(cfg: Config) -> str | None:
    return getattr(cfg.data, "label_column", None)


def _training_columns(cfg: Config) -> list[str] | None:
    """The feature columns of the run's training CSV, in order, when that file can be read here."""
    path = cfg.data.train_path or cfg.data.path
    if path is None or not Path(path).expanduser().is_file():
        return None
    with open(Path(path).expanduser(), newline="", encoding="utf-8-sig") as f:
        header = [cell.strip() for cell in next(csv.reader(f), [])]
    return [column for column in header if column != _label(cfg)]


def table_rows(classifier: Classifier, given: list[str]) -> tuple[list[str], Tensor]:
    """Each row of the CSV files `given` (FILE:LINE) and its features standardised as training's were: (N, F).
    Columns are matched by name with training's feature columns; numeric columns only (a text column, one-hot
    in training, is refused)."""
    names, rows = [], []
    for each in given:
        file = existing(each, "a CSV file of the model's feature columns", kind="file")
        with open(file, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            header = [cell.strip() for cell in next(reader, [])]
            columns = classifier.columns or [column for column in header if column != classifier.label_column]
            missing = [column for column in columns if column not in header]
            if missing:
                raise DistillError(f"{file}: no column '{missing[0]}'; it needs the training file's feature columns")
            at = [header.index(column) for column in columns]
            for row in reader:
                if row and len(row) != len(header):
                    got = f"{len(row)} fields, the header {len(header)}"
                    raise DistillError(f"{file}: line {reader.line_num} has {got}; fix that row")
                if row:
                    rows.append([_number(file, reader.line_num, columns[k], row[j]) for k, j in enumerate(at)])
                    names.append(f"{os.path.relpath(file)}:{reader.line_num}")
        if len(columns) != classifier.features:
            raise DistillError(
                f"{file}: {len(columns)} feature columns, but {classifier.source} takes {classifier.features} "
                "features (a text column is one-hot in training; distill predict reads numeric columns only)"
            )
    if not rows:
        raise DistillError(f"{', '.join(given)}: no data rows; add rows under the header")
    features = torch.tensor(rows, dtype=torch.float32)  # (N, F)
    if classifier.stats is not None:
        features = (features - torch.tensor(classifier.stats["mean"])) / torch.tensor(classifier.stats["std"])
    return names, features


def _number(file: Path, line: int, column: str, cell: str) -> float:
    try:
        return float(cell)
    except ValueError:
        raise DistillError(
            f"{file}, line {line}: column '{column}' has '{cell.strip()}'; distill predict reads numeric feature "
            "columns only (fill the cell, or drop the row)"
        ) from None


# --- distill eval --predictions ---------------------------------------------------------------------------------


def write_predictions(run_dir: str | Path, file: str | Path) -> dict[str, Any]:
    """FILE (CSV, written atomically): for every test row of the run, its position in the test part, its source
    (the image file relative to the data's root when the inputs are files, else empty), its true class and each
    saved model's predicted class (the first seed's). Returns how many rows, which models, where."""
    run = open_run(run_dir)
    test, classes = run.exp.splits.test, run.exp.splits.classes
    device = resolve_device(run.cfg.train.device)
    predicted = {name: logits_on(run.net(name), run.exp.test_loader, device).argmax(-1) for name in run.names}
    files = test.inputs.files if isinstance(test.inputs, ImageFiles) else None
    rows = [
        [
            i,
            "" if files is None else files[i].decode(),
            classes[int(label)],
            *(classes[int(each[i])] for each in predicted.values()),
        ]
        for i, label in enumerate(test.labels)
    ]

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["test_row", "source", "label", *predicted])
            writer.writerows(rows)

    atomic_write(file, write)
    return {"file": Path(file), "rows": len(rows), "models": list(predicted)}
