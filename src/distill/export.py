"""`distill export`: the distilled student alone, out of PyTorch, checked against it on real test inputs.

runs/NAME/export/student.onnx              --format onnx (the default); student.torchscript.pt, student.pt2
runs/NAME/export/student.int8.onnx         --int8: weights int8, activations quantised at run time (dynamic)
runs/NAME/export/student.int8-static.onnx  --int8 on a conv net: also static, calibrated on training inputs
runs/NAME/export/FILE.failed               an export whose logits strayed past --atol, kept for a look
runs/NAME/export/export.json               what each file scored: parity, test accuracy, size, CPU speed

Every file holds the run's metadata (classes, input shape, the preprocessing the data set applied, the run's
name, its config and that config's sha256), so `distill eval FILE` re-reads the test split it was made for.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import tempfile
import warnings
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import Tensor, nn

from distill._io import atomic_path, existing, write_json
from distill.build import build_experiment
from distill.config import validate
from distill.data import IndexedDataset
from distill.errors import DistillError, first_line
from distill.measure import THREADS, costs, timing, where_measured
from distill.pipeline import SavedRun, open_run
from distill.taps import logits_of

FILES = {"onnx": "student.onnx", "torchscript": "student.torchscript.pt", "torch-export": "student.pt2"}
METADATA = "distill.json"  # the metadata's name in a TorchScript or torch.export archive; its prefix in ONNX
PARITY_SAMPLES = 1024  # test inputs the parity check runs through both models
SHIP_BUDGET_S = 0.5  # seconds each timing figure of export and report may take: steadier than a run summary's
CALIBRATION_SAMPLES = 256  # training inputs static quantisation calibrates its activation ranges on


class Deployable(nn.Module):
    """A trained model as it ships: inputs in, logits out (a Hugging Face output reduced to its logits)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, inputs: Tensor) -> Tensor:
        return logits_of(self.net(inputs))


def metadata(run: SavedRun) -> dict[str, str]:
    """What a user of the exported file needs besides the weights, as strings (ONNX metadata is strings)."""
    exp = run.exp
    config = (run.path / "config.yaml").read_text()  # as the run saved it: its sha256 is the file's
    preprocessing = exp.data.preprocessing
    if exp.splits.stats is not None:
        preprocessing += "; then each feature standardised as (x - mean) / std, with mean and std below"
    return {
        "classes": json.dumps(exp.splits.classes),
        "input_shape": json.dumps(["batch", *exp.splits.input_shape]),
        "preprocessing": preprocessing,
        **({"standardize": json.dumps(exp.splits.stats)} if exp.splits.stats is not None else {}),
        "run": exp.cfg.name,
        "config_sha256": hashlib.sha256(config.encode()).hexdigest(),
        "config": config,
    }


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


# --- writing and loading each format ---------------------------------------------------------------------------


def onnx_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxruntime", "onnxscript"))


def _onnx_modules():
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise DistillError(
            "ONNX export and evaluation need onnx and onnxruntime: pip install 'distill[export]'"
        ) from None
    onnxruntime.set_default_logger_severity(3)  # errors only: its warnings about graph rewrites are not the user's
    return onnx, onnxruntime


def write_onnx(model: nn.Module, sample: Tensor, path: Path, meta: dict[str, str], what: str = "student") -> None:
    """`model` (the run's `what`) as ONNX with a dynamic batch axis, input "input", output "logits", and `meta`
    as metadata."""
    onnx, _ = _onnx_modules()
    batch = torch.export.Dim("batch")
    try:
        with warnings.catch_warnings(), _quiet("torch.onnx"):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model, (sample,), dynamo=True, verbose=False, input_names=["input"], output_names=["logits"],
                dynamic_shapes=({0: batch},), optimize=True,
            )  # fmt: skip
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


def _write_torchscript(model: nn.Module, sample: Tensor, path: Path, meta: dict[str, str]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated upstream; it still ships and runs
        traced = torch.jit.trace(model, sample)
        torch.jit.save(traced, path, _extra_files={METADATA: json.dumps(meta)})


def _write_torch_export(model: nn.Module, sample: Tensor, path: Path, meta: dict[str, str]) -> None:
    try:
        program = torch.export.export(model, (sample,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    except RuntimeError as e:  # what torch.export raises on code it cannot trace, naming the line
        raise DistillError(f"torch.export cannot trace the student: {first_line(e)}; try --format torchscript") from e
    with open(path, "wb") as f:  # a file object: torch.export names files by suffix, and this one is temporary
        torch.export.save(program, f, extra_files={METADATA: json.dumps(meta)})


WRITERS: dict[str, Callable[[nn.Module, Tensor, Path, dict[str, str]], None]] = {
    "onnx": write_onnx,
    "torchscript": _write_torchscript,
    "torch-export": _write_torch_export,
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
    """An exported file (of `fmt`, else told by its name) as a function of a float32 CPU batch, and its
    metadata."""
    fmt = fmt or format_of(path)
    unreadable = DistillError(f"{path}: cannot be read as {fmt}; export it again with `distill export`")
    if fmt == "onnx":
        onnx, onnxruntime = _onnx_modules()
        from google.protobuf.message import DecodeError  # onnx's own dependency

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = THREADS, 1
        refused = (DecodeError, onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument,
                   onnxruntime.capi.onnxruntime_pybind11_state.InvalidGraph,
                   onnxruntime.capi.onnxruntime_pybind11_state.InvalidProtobuf)  # fmt: skip
        try:
            props = onnx.load(str(path), load_external_data=False).metadata_props
            session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except refused:
            raise unreadable from None
        meta = {p.key.removeprefix(f"{METADATA}."): p.value for p in props if p.key.startswith(f"{METADATA}.")}

        def predict(inputs: Tensor) -> Tensor:
            try:
                return torch.from_numpy(session.run(None, {"input": inputs.numpy()})[0])
            except onnxruntime.capi.onnxruntime_pybind11_state.InvalidArgument as e:  # a shape the file fixed
                raise RuntimeError(first_line(e)) from e

        return predict, meta
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
            raise unreadable from None
    meta = json.loads(extra[METADATA]) if extra[METADATA] else {}

    @torch.inference_mode()
    def predict(inputs: Tensor) -> Tensor:
        return module(inputs)

    return predict, meta


# --- checking and measuring ------------------------------------------------------------------------------------


def outputs(predict: Callable[[Tensor], Tensor], inputs: Tensor, batch: int = 256) -> Tensor:
    """`predict` over `inputs` in batches, as one float32 tensor."""
    return torch.cat([predict(inputs[i : i + batch]).float() for i in range(0, len(inputs), batch)])


def _parity(
    predict: Callable[[Tensor], Tensor], student: nn.Module, inputs: Tensor, reference: Tensor, atol: float
) -> tuple[dict[str, float], str | None]:
    """The largest logit difference and the top-1 agreement of the export with the PyTorch student, on
    `inputs` in batches of 256 and alone (batch 1: a trace may have baked a batch size in); and what is wrong,
    if anything."""
    try:
        got = outputs(predict, inputs)
        alone = predict(inputs[:1]).float()
    except RuntimeError as e:  # a shape the export fixed, met at another batch size
        return {}, f"it fails on a batch of another size ({first_line(e)})"
    with torch.inference_mode():
        reference_alone = student(inputs[:1]).float()
    diff = max((reference - got).abs().max().item(), (reference_alone - alone).abs().max().item())
    parity = {"max_abs_diff": diff, "top1_agreement": (reference.argmax(-1) == got.argmax(-1)).float().mean().item()}
    if diff > atol:
        return parity, f"its logits differ from the PyTorch student's by up to {diff:.2e}, above --atol {atol:g}"
    return parity, None


def _scored(predict: Callable[[Tensor], Tensor], path: Path, test: IndexedDataset, shape: tuple[int, ...]) -> dict:
    """Test accuracy, bytes on disk and CPU speed of an exported file."""
    accuracy = accuracy_of(outputs(predict, test.inputs), test.labels)
    return {"accuracy": accuracy, "size_bytes": path.stat().st_size, **timing(predict, shape, budget_s=SHIP_BUDGET_S)}


# --- the command -----------------------------------------------------------------------------------------------


def export(run_dir: str | Path, *, fmt: str = "onnx", atol: float = 1e-4, int8: bool = False) -> dict[str, Any]:
    """Export the student of the run in `run_dir`; returns (and merges into export/export.json) what each file
    written scored. Raises DistillError when the export's logits differ from PyTorch's by more than `atol`: the
    file is then kept as NAME.failed and nothing else is written."""
    if int8 and fmt != "onnx":
        raise DistillError(f"--int8 quantises with ONNX Runtime; use it with --format onnx, not {fmt}")
    if atol <= 0:
        raise DistillError(f"--atol must be above 0, got {atol}")
    if fmt == "onnx":
        _onnx_modules()
    run = open_run(run_dir)
    student = Deployable(run.net("student")).eval()
    test, shape = run.exp.splits.test, run.exp.splits.input_shape
    with torch.inference_mode():
        reference = outputs(student, test.inputs)
    results = {
        "measured_on": where_measured(),
        "pytorch": {
            "accuracy": accuracy_of(reference, test.labels),
            "size_bytes": (run.path / "student.safetensors").stat().st_size,
            **costs(student, shape, budget_s=SHIP_BUDGET_S),
        },
    }
    path = run.path / "export" / FILES[fmt]
    with atomic_path(path) as tmp:
        WRITERS[fmt](student, test.inputs[:2], tmp, metadata(run))
        exported, _ = load_exported(tmp, fmt)
        parity, problem = _parity(exported, student, test.inputs[:PARITY_SAMPLES], reference[:PARITY_SAMPLES], atol)
        if problem:
            failed = path.with_name(path.name + ".failed")
            os.replace(tmp, failed)
            raise DistillError(f"{path}: {problem}; kept as {failed.name} for a look, nothing else written")
        results[fmt] = {**_scored(exported, tmp, test, shape), "file": path.name, **parity}
    if int8:
        calibration = run.exp.splits.train.inputs[:CALIBRATION_SAMPLES]
        convolutional = any(isinstance(m, nn.Conv1d | nn.Conv2d | nn.Conv3d) for m in student.modules())
        results.update(_quantised(path, test, shape, calibration if convolutional else None, results["onnx"]))
    _record(path.parent / "export.json", results)
    return {"folder": path.parent, **results}


def accuracy_of(logits: Tensor, labels: Tensor) -> float:
    """Top-1 accuracy of (N, C) logits against (N,) labels."""
    return (logits.argmax(-1) == labels).float().mean().item()


def _quantised(
    fp32: Path, test: IndexedDataset, shape: tuple[int, ...], calibration: Tensor | None, before: dict[str, Any]
) -> dict[str, dict[str, Any]]:
    """student.int8.onnx (dynamic) and, given `calibration` inputs, student.int8-static.onnx; each scored beside
    the fp32 file it came from."""
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_dynamic, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(calibration.split(32))

        def get_next(self) -> dict[str, Any] | None:
            batch = next(self.batches, None)
            return None if batch is None else {"input": batch.numpy()}

    def dynamic(source: Path, target: Path) -> None:
        quantize_dynamic(source, target, weight_type=QuantType.QInt8)

    def static(source: Path, target: Path) -> None:
        quantize_static(source, target, Batches(), activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)

    ways = {"int8": dynamic, **({"int8-static": static} if calibration is not None else {})}
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"  # shapes inferred and graph folded, as the quantiser advises
        quant_pre_process(fp32, prepared)
        for way, quantise in ways.items():
            path = fp32.with_name(f"student.{way}.onnx")
            with atomic_path(path) as tmp:
                quantise(prepared, tmp)
                predict, _ = load_exported(tmp, "onnx")
                scored = _scored(predict, tmp, test, shape)
            results[way] = {**scored, "file": path.name, "accuracy_change": scored["accuracy"] - before["accuracy"]}
    return results


def _record(path: Path, results: dict[str, Any]) -> None:
    """export.json: the latest figures of every file exported so far."""
    recorded = json.loads(path.read_text()) if path.exists() else {}
    write_json(path, {**recorded, **results})


def evaluate_exported(path: str | Path) -> dict[str, Any]:
    """The test accuracy of an exported file on the test split of the run it came from, rebuilt from the config
    its metadata holds: what ships, checked."""
    path = existing(path, "a model file written by `distill export`", kind="file")
    predict, meta = load_exported(path)
    if "config" not in meta:
        raise DistillError(f"{path}: holds no distill metadata (no config); give a file `distill export` wrote")
    cfg = validate(yaml.safe_load(meta["config"]), str(path))  # its data paths as the run wrote them
    splits = build_experiment(cfg).splits
    return {
        "file": str(path),
        "run": meta.get("run"),
        "data": splits.description,
        "test_samples": len(splits.test),
        "accuracy": accuracy_of(outputs(predict, splits.test.inputs), splits.test.labels),
    }
