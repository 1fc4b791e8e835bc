import json

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader

import distill.modules.self_distiller as selfdistill
from conftest import DictBatches, blobs
from distill import Distiller, DistillError, TrainOptions, fit, losses
from distill.modules.self_distiller import SelfDistiller, born_again, ensemble_accuracy
from distill.train import evaluate

OPTIONS = dict(epochs=2, optimizer="adamw", lr=0.02, schedule="constant", progress=False)


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3))


class TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
        self.block2 = nn.Sequential(nn.Conv2d(4, 8, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.pool(self.block2(self.block1(x))))


def image_batch(n=6):
    torch.manual_seed(0)
    return {"input": torch.randn(n, 1, 8, 8), "label": torch.tensor([0, 1, 2, 0, 1, -100][:n])}


def loaders():
    train, val = blobs()
    return DataLoader(train, batch_size=16, shuffle=True), DataLoader(val, batch_size=32)


# --- born-again networks -------------------------------------------------------------------------------------------


@pytest.mark.e2e
def test_generation_2_learns_from_generation_1(tmp_path, monkeypatch):
    made = []

    class Spy(Distiller):
        """Records the teacher each generation got, its weights then, and what it told the student."""

        def __init__(self, student, teacher, terms):
            super().__init__(student, teacher, terms)
            made.append(self)
            self.teacher_weights = {k: v.clone() for k, v in teacher.state_dict().items()}
            self.seen = None

        def forward(self, batch):
            if self.training and self.seen is None:
                self.seen = (batch["input"].clone(), self.teacher(batch)[0].clone())
            return super().forward(batch)

    monkeypatch.setattr(selfdistill, "Distiller", Spy)
    train, val = loaders()
    kd = losses.KD(temperature=2.0, alpha=0.0)
    options = TrainOptions(**{**OPTIONS, "epochs": 4})
    result = born_again(mlp, train, val, options, generations=3, kd=kd, run_dir=tmp_path)

    gen = result.models
    assert len(gen) == 3 and len(made) == 2  # generation 0 learnt from labels alone
    assert gen[0] is not gen[1] is not gen[2]
    for k, spy in enumerate(made, start=1):
        assert spy.student is gen[k] and spy.teacher.model is gen[k - 1]
    # Generation 2's teacher held generation 1's final weights: those of its last checkpoint.
    checkpoints = tmp_path / "gen1" / "checkpoints"
    saved = load_file(checkpoints / json.loads((checkpoints / "last.json").read_text())["dir"] / "model.safetensors")
    for key, value in made[1].teacher_weights.items():
        assert torch.equal(value, saved[f"student.{key}"]), key
        assert torch.equal(value, gen[1].state_dict()[key]), key
    # ... and the targets generation 2 trained on were generation 1's outputs.
    inputs, teacher_logits = made[1].seen
    torch.testing.assert_close(teacher_logits, gen[1](inputs))
    assert made[1].terms["kd"] is not kd  # each generation gets its own copy of the term

    metrics = [json.loads(line) for line in (tmp_path / "gen0" / "metrics.jsonl").read_text().splitlines()]
    assert "train/kd" not in metrics[-1] and "val/accuracy" in metrics[-1]
    assert "val/kd" in json.loads((tmp_path / "gen2" / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(0.8 < a <= 1.0 for a in result.accuracies)
    assert [g.seed for g in result.generations] == [0, 1, 2]


@pytest.mark.e2e
def test_born_again_is_reproducible_with_the_same_seed():
    def run(seed):
        train, val = loaders()
        options = TrainOptions(**OPTIONS, seed=seed)
        return born_again(mlp, train, val, options, generations=2, kd=losses.KD(temperature=2.0, alpha=0.5))

    first, again, other = run(0), run(0), run(1)
    for a, b in zip(first.models, again.models, strict=True):
        for key, value in a.state_dict().items():
            assert torch.equal(value, b.state_dict()[key]), key
    assert first.accuracies == again.accuracies and first.ensemble_accuracy == again.ensemble_accuracy
    assert not torch.equal(first.models[1][0].weight, other.models[1][0].weight)


@pytest.mark.e2e
def test_each_generation_keeps_and_teaches_with_its_best_checkpoint(tmp_path):
    train, val = loaders()
    options = TrainOptions(**{**OPTIONS, "epochs": 3}, select="best", monitor="val/kd")  # gen 0 reports no kd
    result = born_again(mlp, train, val, options, generations=2, kd=losses.KD(alpha=0.5), run_dir=tmp_path)
    for k, (gen, prefix) in enumerate(zip(result.models, ["model.", "student."], strict=True)):
        checkpoints = tmp_path / f"gen{k}" / "checkpoints"
        best = json.loads((checkpoints / "best.json").read_text())
        assert best["metric"] == ("val/accuracy" if k == 0 else "val/kd")
        saved = load_file(checkpoints / best["dir"] / "model.safetensors")
        for key, value in gen.state_dict().items():
            assert torch.equal(value, saved[prefix + key]), (k, key)
    assert best["dir"] != json.loads((checkpoints / "last.json").read_text())["dir"]  # gen 1's best is not its last


@pytest.mark.e2e
def test_born_again_ensemble_accuracy_is_the_mean_of_softmax_probabilities():
    train, val = loaders()
    result = born_again(mlp, train, val, TrainOptions(**OPTIONS), generations=3, kd=losses.KD(alpha=0.0))
    inputs, labels = val.dataset.tensors
    with torch.no_grad():
        probs = torch.stack([m.eval()(inputs).softmax(-1) for m in result.models]).mean(0)
        singles = [(m(inputs).argmax(-1) == labels).float().mean().item() for m in result.models]
    assert result.ensemble_accuracy == pytest.approx((probs.argmax(-1) == labels).float().mean().item())
    assert result.accuracies == pytest.approx(singles)


class Table(nn.Module):
    """Fixed logits per sample: input i gives row i."""

    def __init__(self, rows):
        super().__init__()
        self.rows = nn.Parameter(torch.tensor(rows))

    def forward(self, x):
        return self.rows[x]


def test_ensemble_accuracy_by_hand():
    # Sample 0 (class 0): a is sure and right, b wrong. Mean probabilities (0.50, 0.37, 0.13) pick class 0, where
    # mean logits (0, 0.5, 0) would pick class 1. Sample 1 (class 1): a unsure and wrong, b sure and right.
    # Sample 2 has no label. Each model alone is right on one of two labelled samples; their ensemble on both.
    a = Table([[10.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 9.0, 0.0]])
    b = Table([[-10.0, 1.0, 0.0], [0.0, 4.0, 0.0], [0.0, 9.0, 0.0]])
    data = DictBatches(torch.arange(3), torch.tensor([0, 1, -100]))
    loader = DataLoader(data, batch_size=2)
    assert ensemble_accuracy([a], loader) == 0.5 and ensemble_accuracy([b], loader) == 0.5
    assert ensemble_accuracy([a, b], loader) == 1.0
    a.train()
    ensemble_accuracy([a, b], loader)
    assert a.training  # modes given back


def test_born_again_refuses_bad_input():
    train, val = loaders()
    with pytest.raises(DistillError, match="at least one generation"):
        born_again(mlp, train, val, TrainOptions(**OPTIONS), generations=0, kd=losses.KD())
    one = mlp()
    with pytest.raises(DistillError, match="earlier generation"):
        born_again(lambda: one, train, val, TrainOptions(**OPTIONS), generations=2, kd=losses.KD())
    with pytest.raises(DistillError, match="run_dir"):
        born_again(mlp, train, val, TrainOptions(**OPTIONS, select="best"), generations=2, kd=losses.KD())


# --- deep self-distillation ----------------------------------------------------------------------------------------


def test_heads_are_sized_by_the_first_forward():
    sd = SelfDistiller(TinyCNN(), ["block1", "block2"])
    assert len(sd.heads) == 0
    with pytest.raises(DistillError, match="setup"):
        sd.train()(image_batch())
    names = sd.setup(image_batch())
    assert [(h.in_features, h.out_features) for h in sd.heads] == [(4, 3), (8, 3)]
    assert names == ["loss", "ce", "kd", "accuracy", "head0_accuracy", "head1_accuracy"]
    vectors = SelfDistiller(mlp(), ["1"])
    vectors.setup({"input": torch.randn(4, 8), "label": torch.zeros(4, dtype=torch.long)})
    assert (vectors.heads[0].in_features, vectors.heads[0].out_features) == (16, 3)


def test_loss_is_the_papers_sum_and_the_final_logits_are_the_kd_target():
    torch.manual_seed(0)
    sd = SelfDistiller(TinyCNN(), ["block1", "block2"], temperature=2.0, alpha=0.3)
    batch = image_batch()
    sd.setup(batch)
    out = sd.train()(batch)
    out["loss"].backward()

    x, y = batch["input"], batch["label"]
    model = sd.model
    f1 = model.block1(x)
    f2 = model.block2(f1)
    final = model.fc(model.pool(f2))
    heads = [sd.heads[0](f1.mean((2, 3))), sd.heads[1](f2.mean((2, 3)))]
    ce = [F.cross_entropy(z, y) for z in heads]  # ignore_index=-100 is F.cross_entropy's default
    kl = [4.0 * F.kl_div(F.log_softmax(z / 2, -1), F.softmax(final / 2, -1), reduction="batchmean") for z in heads]
    expected = F.cross_entropy(final, y) + sum(0.3 * c + 0.7 * k for c, k in zip(ce, kl, strict=True))
    torch.testing.assert_close(out["loss"], expected)
    torch.testing.assert_close(out["kd"], sum(kl))
    torch.testing.assert_close(out["ce"], F.cross_entropy(final, y) + sum(ce))
    # The heads' losses never move the final classifier: its gradient is that of its own cross-entropy.
    want = torch.autograd.grad(F.cross_entropy(final, y), list(model.fc.parameters()))
    for got, w in zip((p.grad for p in model.fc.parameters()), want, strict=True):
        torch.testing.assert_close(got, w)


def test_gradients_reach_the_model_and_every_head():
    sd = SelfDistiller(TinyCNN(), ["block1", "block2"], feature_weight=1.0, feature_tap="pool")
    sd.setup(image_batch())
    out = sd.train()(image_batch())
    assert set(out) >= {"feature", "head1_accuracy"}
    out["loss"].backward()
    for name, p in sd.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert len(sd.regressors) == 2 and sd.regressors[0].out_features == 8


def test_feature_hint_pulls_each_tap_toward_the_final_feature():
    sd = SelfDistiller(TinyCNN(), ["block1"], feature_weight=0.5, feature_tap="pool")
    batch = image_batch()
    sd.setup(batch)
    out = sd.eval()(batch)
    model = sd.model
    f1 = model.block1(batch["input"])
    final_feature = model.pool(model.block2(f1))
    expected = F.mse_loss(sd.regressors[0](f1.mean((2, 3))), final_feature)
    torch.testing.assert_close(out["feature"], expected)
    without = SelfDistiller(model, ["block1"], feature_weight=0.0)
    without.heads = sd.heads
    torch.testing.assert_close(out["loss"], without(batch)["loss"] + 0.5 * expected)


def test_export_returns_the_bare_model():
    model = TinyCNN()
    sd = SelfDistiller(model, ["block1", "block2"])
    sd.setup(image_batch())
    exported = sd.export()
    assert exported is model
    assert not any(k.startswith("heads") for k in exported.state_dict())
    assert len(sd.state_dict()) == len(model.state_dict()) + 4  # the heads' weights and biases live beside it
    x = image_batch()["input"]
    fresh = TinyCNN()
    fresh.load_state_dict(exported.state_dict())  # strict: nothing of the heads in it
    torch.testing.assert_close(fresh(x), model(x))
    with torch.no_grad():
        sd.eval()(image_batch())
    assert all(not m._forward_hooks for m in model.modules())  # no tap left behind


def test_a_misspelt_tap_fails_with_close_paths():
    with pytest.raises(DistillError, match=r"model has no module 'blok2'; close: block2"):
        SelfDistiller(TinyCNN(), ["block1", "blok2"])
    with pytest.raises(DistillError, match="no module 'pol'"):
        SelfDistiller(TinyCNN(), ["block1"], feature_weight=1.0, feature_tap="pol")
    with pytest.raises(DistillError, match="needs feature_tap"):
        SelfDistiller(TinyCNN(), ["block1"], feature_weight=1.0)
    with pytest.raises(DistillError, match="at least one tap"):
        SelfDistiller(TinyCNN(), [])
    with pytest.raises(DistillError, match="alpha must be in"):
        SelfDistiller(TinyCNN(), ["block1"], alpha=1.5)


@pytest.mark.e2e
def test_fit_trains_the_final_head_and_the_auxiliary_heads():
    torch.manual_seed(0)
    train, val = loaders()
    sd = SelfDistiller(mlp(), ["1", "3"], temperature=3.0)
    sd.setup(next(iter(val)))
    before = evaluate(sd, val, torch.device("cpu"))["val/accuracy"]
    history = fit(sd, train, val, TrainOptions(**{**OPTIONS, "epochs": 6}))
    last = history.epochs[-1]
    assert last["val/accuracy"] > max(before + 0.3, 0.9)
    assert last["val/head0_accuracy"] > 0.8 and last["val/head1_accuracy"] > 0.8
    assert ensemble_accuracy([sd.export()], val) == pytest.approx(last["val/accuracy"])
