"""Every registered loss, wired by a Distiller between real models: gradients reach the student and its
adapters and never the teacher, and the term is logged under its registry name."""

import pytest
import torch
from torch import nn

from distill import Distiller, losses


class Net(nn.Module):
    """Conv features, a one-layer self-attention whose probabilities live in `attn`, and a classifier."""

    def __init__(self, width: int, heads: int = 2, classes: int = 5):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        self.heads = heads
        self.qk = nn.Linear(width, 2 * width)
        self.attn = nn.Softmax(dim=-1)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(width, classes)

    def forward(self, x):
        f = self.conv(x)  # (B, W, 6, 6)
        tokens = f.flatten(2).transpose(1, 2)  # (B, 36, W)
        q, k = self.qk(tokens).chunk(2, dim=-1)
        split = lambda t: t.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # noqa: E731  (B, H, 36, W/H)
        probs = self.attn(split(q) @ split(k).transpose(-1, -2))  # (B, H, 36, 36)
        mixed = (probs.mean(1) @ tokens).transpose(1, 2).reshape_as(f)
        return self.fc(self.pool(f + mixed))


def term(name: str) -> nn.Module:
    cls = losses.LOSSES.get(name)
    if cls.kind == "logits":
        return cls(weight=0.5)
    layer = "attn" if name.startswith("attention") else "conv"
    options = {"num_samples": 16, "nce_k": 8, "feat_dim": 4} if name == "crd" else {}
    return cls(layer, layer, weight=0.5, **options)


@pytest.mark.parametrize("name", losses.list())
def test_each_loss_trains_the_student_and_adapters_only(name):
    torch.manual_seed(0)
    student, teacher = Net(4), Net(8)
    batch = {"input": torch.randn(6, 1, 6, 6), "label": torch.randint(0, 5, (6,)), "index": torch.arange(6)}
    d = Distiller(student, teacher, [term(name)])
    d.setup(batch)
    d.train()
    out = d(batch)
    assert name in out and out[name].ndim == 0 and torch.isfinite(out[name])
    torch.testing.assert_close(out["loss"], 0.5 * out[name])
    out["loss"].backward()
    trained = [p for p in d.parameters() if p.grad is not None and p.grad.abs().sum() > 0]
    assert any(p is student.fc.weight or p is student.conv[0].weight for p in trained)
    assert all(p.grad is not None for p in d.adapters.parameters())
    assert all(p.grad is None for p in teacher.parameters())
