"""Tiny teachers, students and data sets: the unit suite runs in seconds on a CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def tiny_net(in_features: int = 8, num_classes: int = 3, hidden: int = 16) -> nn.Module:
    torch.manual_seed(hidden)
    return nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))


class DictBatches(TensorDataset):
    """A TensorDataset that yields the loop's dict batches."""

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x, y = super().__getitem__(i)
        return {"input": x, "label": y, "index": torch.tensor(i)}


def blobs(n: int = 144, in_features: int = 8, num_classes: int = 3, seed: int = 0) -> tuple[DictBatches, DictBatches]:
    """Gaussian blobs, two thirds for training and a third for validation; a few epochs learn them."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, num_classes, (n,), generator=g)
    centers = torch.randn(num_classes, in_features, generator=g) * 2
    inputs = centers[labels] + torch.randn(n, in_features, generator=g)
    cut = 2 * n // 3
    return DictBatches(inputs[:cut], labels[:cut]), DictBatches(inputs[cut:], labels[cut:])


@pytest.fixture
def teacher() -> nn.Module:
    return tiny_net(hidden=32)


@pytest.fixture
def student() -> nn.Module:
    return tiny_net(hidden=8)


@pytest.fixture
def loaders() -> tuple[DataLoader, DataLoader]:
    train, val = blobs()
    return DataLoader(train, batch_size=16, shuffle=True), DataLoader(val, batch_size=32)


def write_config(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def perplexity_on_test(weights: Path, data: Path, context: int, **gpt_args) -> float:
    """exp of the mean next-token cross-entropy of a saved GPT over the counted tokens of the test part of a
    `task: lm` run on `data` (its character tokenizer, val_fraction and test_fraction 0.1, data.seed 0)."""
    import math

    from distill.data.text import UNLABELLED, CharTokenizer, text_splits, tokenizer_text
    from distill.models.gpt import GPT
    from distill.weights import load_weights

    tokenizer = CharTokenizer.fit(tokenizer_text(data))
    test = text_splits(data, tokenizer, context=context, val_fraction=0.1, test_fraction=0.1, seed=0).test
    model = GPT(tokenizer.vocab_size, context=context, **gpt_args).eval()
    load_weights(model, weights)
    with torch.no_grad():
        logits = model(test.ids)[:, :-1]  # position i predicts token i + 1
    loss = nn.functional.cross_entropy(logits.flatten(0, 1), test.labels[:, 1:].flatten(), ignore_index=UNLABELLED)
    return math.exp(loss.item())


TINY_RUN = """\
name: tiny
out_dir: {out}
data: {{name: digits, val_fraction: 0.25, batch_size: 128}}
teacher: {{model: mlp, args: {{hidden: [32]}}}}
student: {{model: mlp, args: {{hidden: [8]}}}}
method: {{kind: offline, terms: [{{loss: kd, temperature: 2.0, alpha: 0.5}}]}}
train: {{epochs: 2, optimizer: adamw, lr: 0.01, progress: false}}
"""


@pytest.fixture
def tiny_config(tmp_path: Path) -> Path:
    """A whole run on the bundled digits that takes about a second."""
    return write_config(tmp_path / "tiny.yaml", TINY_RUN.format(out=tmp_path / "runs"))


def raises_one_line(call, *needles: str) -> str:
    """Run `call`, expect a one-line DistillError containing every needle."""
    from distill.errors import DistillError

    with pytest.raises(DistillError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    for needle in needles:
        assert needle in message, message
    return message


def stopped_after_an_epoch(real_fit, stage: str):
    """A stand-in for `stages.fit` that stops stage `stage` after its first epoch, as ctrl-C would."""

    def fit(module, *args, run_dir, **kwargs):
        class Stop:
            def on_epoch_end(self, record):
                raise KeyboardInterrupt

        callbacks = [Stop()] if run_dir.name == stage else []
        return real_fit(module, *args, run_dir=run_dir, callbacks=callbacks, **kwargs)

    return fit
