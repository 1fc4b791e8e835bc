"""What shipping a student costs and gains: PyTorch against ONNX Runtime fp32 and int8, for the demo's student
(an MLP on 8x8 digits) and a zoo student (resnet8, distilled from a CNN on 28x28 MNIST).

Each run is trained with `distill train`, then exported with `distill export --int8` (dynamic int8 for both;
static int8, calibrated on 256 training images, for the conv net). Accuracy is on each run's test split, never
seen in training or selection; latency is per single call at batch 1 (median and 95th percentile), throughput
at batch 256, one thread, every row of a model timed in the same process.

    python benchmarks/export.py [--data ../shared/data/mnist-test]
"""

from __future__ import annotations

import argparse
import os
import tempfile
from importlib import resources
from pathlib import Path

import yaml

from distill.config import load_config
from distill.export import export
from distill.pipeline import run
from distill.report.text import EXPORTED, human_bytes

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist-test"


def zoo_config(data: Path) -> dict:
    """A CNN teacher and a resnet8 student on the MNIST split the other benchmarks use."""
    return {
        "name": "zoo",
        "data": {
            "name": "idx",
            "path": str(data),
            "test_fraction": 0.2,
            "val_fraction": 0.2,
            "seed": 0,
            "batch_size": 128,
        },
        "teacher": {"model": "cnn", "args": {"channels": [32, 64, 128], "hidden": 256}, "epochs": 6},
        "student": {"model": "resnet8"},
        "method": {"kind": "offline", "terms": [{"loss": "kd", "temperature": 4.0, "alpha": 0.5}]},
        "train": {
            "epochs": 6,
            "optimizer": "adamw",
            "lr": 0.003,
            "weight_decay": 0.0001,
            "schedule": "cosine",
            "progress": False,
        },
    }


def trained(config: Path, out_dir: Path) -> Path:
    cfg = load_config(config, [f"out_dir={out_dir}", "train.progress=false", "scratch=false", "seeds=[0]"])
    run(cfg)
    return cfg.run_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder of the MNIST test split (idx files)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        zoo = scratch / "zoo.yaml"
        zoo.write_text(yaml.safe_dump(zoo_config(args.data.resolve())))
        with resources.as_file(resources.files("distill") / "demos" / "classify.yaml") as demo:
            runs = {"demo student (mlp [32], digits)": trained(demo, scratch)}
        runs["zoo student (resnet8, MNIST)"] = trained(zoo, scratch)
        print(
            f"{'student':34}{'runtime':26}{'test acc':>9}{'size':>10}{'latency b=1':>13}{'p95':>10}"
            f"{'samples/s b=256':>17}{'latency vs PyTorch':>20}"
        )
        for name, run_dir in runs.items():
            results = export(run_dir, int8=True)
            base = results["pytorch"]["latency_ms"]
            for key, runtime in EXPORTED.items():
                if (row := results.get(key)) is None:
                    continue
                print(
                    f"{name:34}{runtime:26}{row['accuracy']:>9.2%}{human_bytes(row['size_bytes']):>10}"
                    f"{row['latency_ms']:>10.3f} ms{row['latency_p95_ms']:>7.3f} ms{row['throughput']:>17,.0f}"
                    f"{row['latency_ms'] / base:>19.2f}x"
                )
        print(f"timed on {results['measured_on']}; data: {os.path.relpath(args.data)}")


if __name__ == "__main__":
    main()
