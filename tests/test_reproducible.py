"""The same config and seed give the same files in any fresh process on the same machine (CPU)."""

import hashlib
import subprocess
import sys

import pytest

from conftest import TINY_RUN, write_config

pytestmark = pytest.mark.e2e

# A CNN teacher trained here and an MLP student, with AdamW: the case where fresh processes once wrote
# different weight files (safetensors' metadata in a per-process hash order).
CONFIG = TINY_RUN.replace(
    "teacher: {{model: mlp, args: {{hidden: [32]}}}}",
    "teacher: {{model: cnn, args: {{channels: [8, 16], hidden: 16}}}}",
)


def fingerprint(run_dir):
    """sha256 of every weights file (results and checkpoints) and metrics log of a run, by relative path."""
    files = [*run_dir.rglob("*.safetensors"), *run_dir.rglob("metrics.jsonl"), *run_dir.rglob("state.pt")]
    return {str(f.relative_to(run_dir)): hashlib.sha256(f.read_bytes()).hexdigest() for f in sorted(files)}


def test_one_config_in_three_fresh_processes_writes_identical_weights(tmp_path):
    assert "cnn" in CONFIG
    config = write_config(tmp_path / "c.yaml", CONFIG.format(out=tmp_path / "runs"))
    prints = []
    for k in range(3):
        command = [sys.executable, "-m", "distill", "-q", "train", str(config), "--set", f"name=run{k}"]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        prints.append(fingerprint(tmp_path / "runs" / f"run{k}"))
    assert len(prints[0]) >= 9  # teacher, scratch and student: results, checkpoints, states, logs
    assert prints[0] == prints[1] == prints[2]
