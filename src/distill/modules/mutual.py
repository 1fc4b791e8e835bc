"""Online distillation: models that learn from each other while they train, with no teacher trained first."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from distill._tensors import Batch, top1_accuracy
from distill.errors import DistillError
from distill.losses import check_temperature, hard_loss, soft_loss
from distill.taps import logits_of


class MutualLearning(nn.Module):
    """Deep mutual learning (Zhang et al., 2018, "Deep Mutual Learning"): K peers trained together.

        L_k = CE(z_k, y) + weight * 1/|S_k| * sum_{j in S_k} T^2 KL(softmax(z_j / T) || softmax(z_k / T))

    with the other peers' logits z_j detached, so each peer's gradient comes from its own loss alone. Each
    peer is a trained part of its own (`trained_parts()`): `fit` gives it its own optimizer and schedule, clips
    its gradient on its own and checkpoints it as its own weights file.
    `learns_from_peers[k] = False` makes peer k learn from the labels only: `[False, True]` is the online
    teacher-student mode, where a teacher trains on its task while the student learns from it.

    forward(batch) returns "loss" (the sum over peers), and for each peer "NAME/loss" and "NAME/accuracy"
    (names default to peer0, peer1, ...), plus "accuracy" (the first peer's) and "agreement" (top-1, of the
    first two).
    """

    def __init__(
        self,
        peers: Sequence[nn.Module],
        *,
        temperature: float = 1.0,
        weight: float = 1.0,
        learns_from_peers: Sequence[bool] | None = None,
        names: Sequence[str] | None = None,
        ignore_index: int = -100,
    ):
        super().__init__()
        if len(peers) < 2:
            raise DistillError(f"mutual learning needs at least two peers, got {len(peers)}")
        learns = [True] * len(peers) if learns_from_peers is None else list(learns_from_peers)
        if len(learns) != len(peers):
            raise DistillError(f"learns_from_peers has {len(learns)} entries for {len(peers)} peers")
        names = [f"peer{k}" for k in range(len(peers))] if names is None else list(names)
        if len(set(names)) != len(peers):
            raise DistillError(f"give each of the {len(peers)} peers its own name, got {names}")
        check_temperature(temperature)
        self.peers = nn.ModuleList(peers)
        self.learns_from_peers, self.names = learns, names
        self.temperature, self.weight, self.ignore_index = temperature, weight, ignore_index

    def forward(self, batch: Batch) -> dict[str, Tensor]:
        inputs, labels = batch["input"], batch["label"]
        logits = [logits_of(peer(inputs)) for peer in self.peers]  # K x (B, C)
        shapes = {tuple(z.shape) for z in logits}
        if len(shapes) > 1:
            raise DistillError(
                f"the peers' outputs differ in shape {sorted(shapes)}; every peer must predict the same classes"
            )
        out: dict[str, Tensor] = {}
        total = 0.0
        for k, z in enumerate(logits):
            loss = hard_loss(z, labels, ignore_index=self.ignore_index)
            if self.learns_from_peers[k]:
                others = [
                    soft_loss(z, zj.detach(), temperature=self.temperature) for j, zj in enumerate(logits) if j != k
                ]
                loss = loss + self.weight * torch.stack(others).mean()
            total = total + loss
            name = self.names[k]
            out[f"{name}/loss"] = loss.detach()
            with torch.no_grad():
                out[f"{name}/accuracy"] = top1_accuracy(z, labels, self.ignore_index)
        with torch.no_grad():
            out["accuracy"] = out[f"{self.names[0]}/accuracy"]
            out["agreement"] = (logits[0].argmax(-1) == logits[1].argmax(-1)).float().mean()
        return {"loss": total, **out}

    def trained_parts(self) -> dict[str, nn.Module]:
        return dict(zip(self.names, self.peers, strict=True))
