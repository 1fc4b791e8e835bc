"""`distill export RUN` and `distill eval PATH`: which export a run's task and student get, and which check an
exported file or folder gets."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from distill.config import Config, validate
from distill.errors import DistillError
from distill.export._shared import record
from distill.export.formats import FILES, METADATA, format_of, load_exported, onnx_modules
from distill.export.hf import FOLDER, check_servable, export_folder, read_folder
from distill.export.images import evaluate_images, export_images
from distill.export.lm import Exported, evaluate_lm, export_gpt
from distill.models.lm import HF
from distill.pipeline import open_run

logger = logging.getLogger(__name__)
HF_FORMAT = "hf"  # a Hugging Face student's own format: its save_pretrained folder


def export(run_dir: str | Path, *, fmt: str = "onnx", atol: float = 1e-4, int8: bool = False) -> dict[str, Any]:
    """Export the student of the run in `run_dir`; returns (and merges into export/export.json) what each file
    written scored. A Hugging Face language model ships as its `save_pretrained` folder, asked for as --format hf
    or by the default, onnx (ONNX of it is not made here: `fmt` cannot tell the default from a choice). Raises
    DistillError when the export's logits differ from PyTorch's by more than `atol`: the export is then kept as
    NAME.failed and nothing else is written."""
    if int8 and fmt != "onnx":
        raise DistillError(f"--int8 quantises with ONNX Runtime; use it with --format onnx, not {fmt}")
    if atol <= 0:
        raise DistillError(f"--atol must be above 0, got {atol}")
    run = open_run(run_dir)
    way = _way(run.cfg, fmt, int8)
    if way == "onnx":
        onnx_modules()
    if way == HF_FORMAT:
        results = export_folder(run, atol)
    elif run.cfg.task == "lm":
        results = export_gpt(run, way, atol, int8)
    else:
        results = export_images(run, way, atol, int8)
    folder = run.path / "export"
    record(folder / "export.json", results)
    return {"folder": folder, **results}


def _way(cfg: Config, fmt: str, int8: bool) -> str:
    """The format the run's student is exported in, or the one line that says why it cannot be in `fmt`."""
    hf_student = cfg.task == "lm" and cfg.student.model.startswith(HF)
    if not hf_student and fmt == HF_FORMAT:
        raise DistillError(
            f"--format {HF_FORMAT} writes a Hugging Face student's folder; this run's student is "
            f"'{cfg.student.model}': use --format onnx, torchscript or torch-export"
        )
    if not hf_student:
        return fmt
    check_servable(cfg)
    if int8:
        raise DistillError(
            f"--int8 quantises an ONNX file; the student is a Hugging Face model ({cfg.student.model}),"
            " which ships as its save_pretrained folder: export it without --int8"
        )
    if fmt not in ("onnx", HF_FORMAT):
        raise DistillError(
            f"the student is a Hugging Face model ({cfg.student.model}): it ships as its "
            f"save_pretrained folder (--format {HF_FORMAT}), not as {fmt}"
        )
    if fmt == "onnx":
        logger.info("a Hugging Face student ships as its save_pretrained folder, export/%s/", FOLDER)
    return HF_FORMAT


def evaluate_exported(path: str | Path) -> dict[str, Any]:
    """The test figure (accuracy, or a language model's perplexity) of an exported file or folder on the test
    split of the run it came from, rebuilt from the config its metadata holds: what ships, checked."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _evaluate_folder(path)
    if not path.exists():
        raise DistillError(f"{path} does not exist: not a run directory nor a model `distill export` wrote")
    predict, meta = load_exported(path)
    if "config" not in meta:
        raise DistillError(f"{path}: holds no distill metadata (no config); give a file `distill export` wrote")
    cfg = validate(yaml.safe_load(meta["config"]), str(path))  # its data paths as the run wrote them
    measured = evaluate_lm(Exported(predict), cfg) if cfg.task == "lm" else evaluate_images(predict, cfg)
    return {"file": str(path), "run": meta.get("run"), **measured}


def _evaluate_folder(folder: Path) -> dict[str, Any]:
    if not (folder / METADATA).is_file():
        raise DistillError(
            f"{folder} is not a run directory (no config.yaml) nor a folder `distill export` wrote (no {METADATA}); "
            "give the folder `distill train` made or what `distill export` wrote"
        )
    model, cfg, meta = read_folder(folder)
    return {"file": str(folder), "run": meta.get("run"), **evaluate_lm(model, cfg)}


__all__ = ["FILES", "HF_FORMAT", "evaluate_exported", "export", "format_of"]
