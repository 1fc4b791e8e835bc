"""--int8: an exported ONNX student quantised with ONNX Runtime, each file scored beside the fp32 one it came from.

runs/NAME/export/student.int8.onnx         weights int8, activations quantised at run time (dynamic)
runs/NAME/export/student.int8-static.onnx  given calibration inputs (a conv net's): also static
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor

from distill._io import atomic_path
from distill.export.formats import load_exported

Score = Callable[[Callable[[Tensor], Tensor], Path], dict[str, Any]]  # an export's figures, from its function and file


def quantised(
    fp32: Path, score: Score, figure: str, before: dict[str, Any], calibration: Tensor | None = None
) -> dict[str, dict[str, Any]]:
    """student.int8.onnx (dynamic) and, given `calibration` inputs, student.int8-static.onnx; each scored and its
    `figure` (accuracy, test_perplexity) compared with the fp32 file's, `before`."""
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
                scored = score(predict, tmp)
            results[way] = {**scored, "file": path.name, f"{figure}_change": scored[figure] - before[figure]}
    return results
