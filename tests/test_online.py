import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from conftest import tiny_net
from distill import DistillError, TrainOptions, fit
from distill.modules.mutual import MutualLearning
from distill.weights import load_weights


def batch(n=6):
    return {"input": torch.randn(n, 8), "label": torch.randint(0, 3, (n,))}


def test_each_peer_learns_from_labels_and_the_others_detached():
    torch.manual_seed(0)
    peers = [tiny_net(hidden=8), tiny_net(hidden=16), tiny_net(hidden=4)]
    dml = MutualLearning(peers, temperature=2.0)
    b = batch()
    dml(b)["loss"].backward()
    for k, peer in enumerate(peers):
        z = [p(b["input"]) for p in peers]
        p_k = F.log_softmax(z[k] / 2.0, -1)
        kl = [
            4.0 * F.kl_div(p_k, F.log_softmax(z[j].detach() / 2.0, -1), reduction="batchmean", log_target=True)
            for j in range(3)
            if j != k
        ]
        expected = torch.autograd.grad(F.cross_entropy(z[k], b["label"]) + sum(kl) / 2, list(peer.parameters()))
        for got, want in zip((p.grad for p in peer.parameters()), expected, strict=True):
            torch.testing.assert_close(got, want)


def test_a_teacher_that_learns_only_from_labels():
    torch.manual_seed(0)
    teacher, student = tiny_net(hidden=16), tiny_net(hidden=4)
    online = MutualLearning([teacher, student], learns_from_peers=[False, True])
    b = batch()
    out = online(b)
    out["loss"].backward()
    expected = torch.autograd.grad(F.cross_entropy(teacher(b["input"]), b["label"]), list(teacher.parameters()))
    for got, want in zip((p.grad for p in teacher.parameters()), expected, strict=True):
        torch.testing.assert_close(got, want)
    assert out["peer1/loss"] > F.cross_entropy(student(b["input"]), b["label"])  # the student also imitates


@pytest.mark.e2e
def test_fit_updates_every_peer(loaders):
    train, val = loaders
    peers = [tiny_net(hidden=8), tiny_net(hidden=12)]
    before = [p[2].weight.clone() for p in peers]
    history = fit(MutualLearning(peers), train, val, TrainOptions(epochs=8, optimizer="adamw", lr=0.02, progress=False))
    after = [p[2].weight for p in peers]
    assert all(not torch.equal(b, a) for b, a in zip(before, after, strict=True))
    last = history.epochs[-1]
    assert last["val/peer0/accuracy"] > 0.8 and last["val/peer1/accuracy"] > 0.8


def test_each_peer_has_its_own_optimizer_and_checkpoint_file(loaders, tmp_path):
    train, val = loaders
    peers = [tiny_net(hidden=8), tiny_net(hidden=12)]
    before = [torch.cat([p.detach().flatten() for p in peer.parameters()]) for peer in peers]
    one_step = DataLoader(train.dataset, batch_size=len(train.dataset))
    options = TrainOptions(epochs=1, lr=1.0, momentum=0.0, weight_decay=0.0, clip_grad_norm=1e-3, progress=False)
    fit(MutualLearning(peers, names=["small", "big"]), one_step, val, options, run_dir=tmp_path)
    for peer, start in zip(peers, before, strict=True):  # clipped alone: each moves by lr * clip, not less
        moved = torch.cat([p.detach().flatten() for p in peer.parameters()]) - start
        assert moved.norm().item() == pytest.approx(1e-3, rel=1e-3)
    folder = tmp_path / "checkpoints" / "epoch-0000"
    state = torch.load(folder / "state.pt", weights_only=True)
    assert set(state["optimizer"]) == set(state["scheduler"]) == {"small", "big"}
    alone = tiny_net(hidden=12)
    load_weights(alone, folder / "big.safetensors")  # a peer's checkpoint loads without the others
    assert torch.equal(alone[0].weight, peers[1][0].weight)


def test_peers_that_disagree_on_classes_are_refused():
    with pytest.raises(DistillError, match="peers' outputs differ in shape"):
        MutualLearning([tiny_net(num_classes=3), tiny_net(num_classes=4)])(batch())
    with pytest.raises(DistillError, match="at least two peers"):
        MutualLearning([tiny_net()])
