"""Each file format a student ships in: written with its metadata, read back as a function of a CPU batch.

ONNX (ONNX Runtime), TorchScript and torch.export, each with the axes that vary between calls left dynamic:
the batch for every model, and the sequence for a language model (whose input is int64 token ids).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor, nn

from distill.errors import DistillError, first_line
from distill.measure import THREADS

FILES = {  # --format -> what it writes in runs/NAME/export/
    "onnx": "student.onnx",
    "torchscript": "student.torchscript.pt",
    "torch-export": "student.pt2",
    "hf": "student",  # a Hugging Face language model's save_pretrained folder (export/hf.py)
}
METADATA = "distill.json"  # the metadata's name in a TorchScript or torch.export archive; its prefix in ONNX
BATCH = {0: "batch"}  # the dynamic axes of an image or table model's input
Axes = dict[int, str]  # input axis -> the name of its dynamic dimension


@contextmanager
def _quiet(name: str) -> Iterator[None]:
    """Logger `name` shows errors only, for the duration: torch's exporters log what they skip as warnings."""
    torch_logger = logging.getLogger(name)
    level = torch_logger.level
    torch_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        torch_logger.setLevel(level)


def _dims(axes: Axes, limits: dict[str, int]) -> tuple[dict[int, torch.export.Dim]]:
    """torch.export's dynamic shapes of the one input: each axis a named dimension, up to its limit where it has
    one (a language model's context: its position table ends there)."""
    return (
        {
            axis: torch.export.Dim(name, **({"max": limits[name]} if name in limits else {}))
            for axis, name in axes.items()
        },
    )


def onnx_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime", "onnxscript"))


def onnx_modules():
    """onnx and onnxruntime, or the one line that says how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise DistillError(
            "ONNX export and evaluation need onnx and onnxruntime: pip install 'distill[export]'"
        ) from None
    onnxruntime.set_default_logger_severity(3)  # errors only: its warnings about graph rewrites are not the user's
    return onnx, onnxruntime


def write_onnx(
    model: nn.Module,
    sample: Tensor,
    path: Path,
    meta: dict[str, str],
    what: str = "student",
    *,
    axes: Axes = BATCH,
    limits: dict[str, int] | None = None,
) -> None:
    """`model` (the run's `what`) as ONNX with the dynamic `axes`, input "input", output "logits", and `meta` as
    metadata."""
    onnx, _ = onnx_modules()
    try:
        with warnings.catch_warnings(), _quiet("torch.onnx"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                (sample,),
                dynamo=True,
                verbose=False,
                input_names=["input"],
                output_names=["logits"],
                dynamic_shapes=_dims(axes, limits or {}),
                optimize=True,
            )
    except torch.onnx.OnnxExporterError as e:
        op = re.search(r"No ONNX function found for <OpOverload\(op='([\w.]+)'", str(e))
        if op is None:
            raise DistillError(f"the ONNX exporter cannot convert the {what}: {first_line(e)}") from e
        raise DistillError(
            f"the {what} uses operator {op.group(1)}, which torch {torch.__version__} cannot convert to ONNX; "
            "export it with --format torch-export (or torchscript), or replace that operation in the model"
        ) from None
    proto = program.model_proto
    for key, value in meta.items():
        proto.metadata_props.add(key=f"{METADATA}.{key}", value=value)
    onnx.save(proto, path)


def write_torchscript(
    model: nn.Module,
    sample: Tensor,
    path: Path,
    meta: dict[str, str],
    *,
    axes: Axes = BATCH,
    limits: dict[str, int] | None = None,
) -> None:
    """A trace: sizes it reads as numbers are baked in, which the parity check at other sizes catches."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated upstream; it still ships and runs
        traced = torch.jit.trace(model, sample)
        torch.jit.save(traced, path, _extra_files={METADATA: json.dumps(meta)})


def write_torch_export(
    model: nn.Module,
    sample: Tensor,
    path: Path,
    meta: dict[str, str],
    *,
    axes: Axes = BATCH,
    limits: dict[str, int] | None = None,
) -> None:
    try:
        program = torch.export.export(model, (sample,), dynamic_shapes=_dims(axes, limits or {}))
    except RuntimeError as e:  # what torch.export raises on code it cannot trace, naming the line
        raise DistillError(f"torch.export cannot trace the student: {first_line(e)}; try --format torchscript") from e
    with open(path, "wb") as f:  # a file object: torch.export names files by suffix, and this one is temporary
        torch.export.save(program, f, extra_files={METADATA: json.dumps(meta)})


WRITERS: dict[str, Callable[..., None]] = {
    "onnx": write_onnx,
    "torchscript": write_torchscript,
    "torch-export": write_torch_export,
}


def format_of(path: Path) -> str:
    """The format of an exported file, by its name."""
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix == ".pt2":
        return "torch-export"
    if path.suffix == ".pt":
        return "torchscript"
    raise DistillError(
        f"{path}: not a run directory nor an exported model (.onnx, .pt2 or .pt); give the folder `distill train` "
        "made or a file `distill export` wrote"
    )


def load_exported(path: Path, fmt: str | None = None) -> tuple[Callable[[Tensor], Tensor], dict[str, str]]:
    """An exported file (of `fmt`, else told by its name) as a function of a CPU batch (float32 inputs, or a
    language model's int64 ids), and its metadata."""
    fmt = fmt or format_of(path)
    if fmt == "onnx":
        return _load_onnx(path)
    extra = {METADATA: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            if fmt == "torchscript":
                module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            else:
                with open(path, "rb") as f, _quiet("torch.export"):
                    module = torch.export.load(f, extra_files=extra).module()
        except (RuntimeError, zipfile.BadZipFile):  # not an archive of that kind
            raise _unreadable(path, fmt) from None
    meta = json.loads(extra[METADATA]) if extra[METADATA] else {}

    @torch.inference_mode()
    def predict(inputs: Tensor) -> Tensor:
        return module(inputs)

    return predict, meta


def _unreadable(path: Path, fmt: str) -> DistillError:
    return DistillError(f"{path}: cannot be read as {fmt}; export it again with `distill export`")


def _load_onnx(path: Path) -> tuple[Callable[[Tensor], Tensor], dict[str, str]]:
    onnx, onnxruntime = onnx_modules()
    from google.protobuf.message import DecodeError  # onnx's own dependency

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
    errors = onnxruntime.capi.onnxruntime_pybind11_state
    refused = (DecodeError, errors.InvalidArgument, errors.InvalidGraph, errors.InvalidProtobuf)
    try:
        props = onnx.load(str(path), load_external_data=False).metadata_props
        session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except refused:
        raise _unreadable(path, "onnx") from None
    meta = {p.key.removeprefix(f"{METADATA}."): p.value for p in props if p.key.startswith(f"{METADATA}.")}

    def predict(inputs: Tensor) -> Tensor:
        try:
            return torch.from_numpy(session.run(None, {"input": inputs.numpy()})[0])
        except (errors.InvalidArgument, errors.RuntimeException) as e:  # a shape the file fixed
            raise RuntimeError(first_line(e)) from e

    return predict, meta
