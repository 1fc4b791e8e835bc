from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distill import Distiller, DistillError, losses
from distill.taps import Taps, check_paths, make_adapter, run_tapped, unwrap


class ConvNet(nn.Module):
    def __init__(self, width: int, classes: int = 3):
        super().__init__()
        self.layer1 = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.fc(self.pool(self.layer2(self.layer1(x))))


class FeatureMSE(nn.Module):
    """A minimal feature term for wiring tests: MSE between (adapted) student and teacher features."""

    kind, needs_index = "features", False

    def __init__(self, student_layer, teacher_layer, adapter="auto", weight=1.0):
        super().__init__()
        self.student_layer, self.teacher_layer, self.adapter, self.weight = (
            student_layer,
            teacher_layer,
            adapter,
            weight,
        )

    def forward(self, student_feat, teacher_feat):
        if student_feat.shape != teacher_feat.shape:
            raise losses.LossInputError(f"shapes {tuple(student_feat.shape)} and {tuple(teacher_feat.shape)} differ")
        return F.mse_loss(student_feat, teacher_feat)


def batch(n=4):
    return {"input": torch.randn(n, 1, 8, 8), "label": torch.randint(0, 3, (n,)), "index": torch.arange(n)}


def test_taps_capture_and_remove_their_hooks():
    net = ConvNet(4)
    with Taps(net, {"mid": "layer2", "flat": "pool"}) as taps:
        logits = net(torch.randn(2, 1, 8, 8))
    assert taps["mid"].shape == (2, 8, 4, 4) and taps["flat"].shape == (2, 8)
    torch.testing.assert_close(net.fc(taps["flat"]), logits)
    assert all(not m._forward_hooks for m in net.modules())


def test_a_misspelt_path_names_close_ones():
    with pytest.raises(DistillError, match="student has no module 'layr2'; close: layer2"):
        check_paths(ConvNet(4), ["layr2"], "student")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_wrappers_are_looked_through(tmp_path):
    net = ConvNet(4)
    compiled = torch.compile(net)
    assert unwrap(compiled) is net
    check_paths(compiled, ["layer1.0"], "student")
    torch.distributed.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        wrapped = nn.parallel.DistributedDataParallel(net)
        logits, features = run_tapped(wrapped, torch.randn(2, 1, 8, 8), ["layer2"])
        assert features["layer2"].shape == (2, 8, 4, 4) and logits.shape == (2, 3)
    finally:
        torch.distributed.destroy_process_group()


class HuggingFaceLike(nn.Module):
    """The shape of a Hugging Face model: a config, and hidden states / attentions on request."""

    config = SimpleNamespace()

    def __init__(self):
        super().__init__()
        self.embed = nn.Linear(4, 6)
        self.head = nn.Linear(6, 3)

    def forward(self, x, output_hidden_states=False, output_attentions=False):
        h = self.embed(x)  # (B, S, 6)
        attention = torch.softmax(h @ h.transpose(1, 2), dim=-1).unsqueeze(1)  # (B, 1, S, S)
        return SimpleNamespace(
            logits=self.head(h),
            hidden_states=(x, h) if output_hidden_states else None,
            attentions=(attention,) if output_attentions else None,
        )


class TimmLike(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = ConvNet(4)

    def forward_intermediates(self, x, indices):
        stages = [self.net.layer1(x)]
        stages.append(self.net.layer2(stages[0]))
        return stages[-1], [stages[i] for i in indices]

    def forward_head(self, x):
        return self.net.fc(self.net.pool(x))


def test_models_that_offer_their_intermediates_are_used_without_hooks():
    hf = HuggingFaceLike()
    logits, features = run_tapped(hf, torch.randn(2, 5, 4), ["hidden_states.1", "attentions.0"])
    assert logits.shape == (2, 5, 3) and features["hidden_states.1"].shape == (2, 5, 6)
    assert features["attentions.0"].shape == (2, 1, 5, 5)
    timm = TimmLike()
    x = torch.randn(2, 1, 8, 8)
    logits, features = run_tapped(timm, x, ["intermediates.0"])
    torch.testing.assert_close(logits, timm.net(x))
    assert features["intermediates.0"].shape == (2, 4, 8, 8)
    with pytest.raises(DistillError, match="needs a Hugging Face model"):
        check_paths(ConvNet(4), ["hidden_states.1"], "teacher")


@pytest.mark.parametrize(
    ("kind", "student", "teacher"),
    [
        ("auto", (2, 8), (2, 8)),
        ("auto", (2, 8), (2, 16)),
        ("auto", (2, 5, 8), (2, 5, 16)),
        ("auto", (2, 4, 8, 8), (2, 16, 4, 4)),
        ("conv1x1", (2, 4, 4, 4), (2, 16, 8, 8)),
        ("conv3x3", (2, 4, 8, 8), (2, 6, 8, 8)),
        ("linear", (2, 8), (2, 3)),
    ],
)
def test_adapters_map_the_student_shape_to_the_teacher_shape(kind, student, teacher):
    adapter = make_adapter(kind, torch.Size(student), torch.Size(teacher), "test")
    assert adapter(torch.randn(student)).shape == teacher


def test_an_adapter_that_cannot_be_inferred_is_refused():
    with pytest.raises(DistillError, match=r"cannot map the student's \(2, 4, 8, 8\) to the teacher's \(2, 16\)"):
        make_adapter("auto", torch.Size((2, 4, 8, 8)), torch.Size((2, 16)), "loss term 'hint'")


def test_feature_terms_train_the_student_and_adapter_never_the_teacher():
    student, teacher = ConvNet(2), ConvNet(6)
    d = Distiller(student, teacher, [losses.KD(), FeatureMSE("layer2", "layer2", weight=3.0)])
    d.setup(batch())
    assert set(d.adapters) == {"featuremse"}
    out = d(batch())
    torch.testing.assert_close(out["loss"], out["kd"] + 3.0 * out["featuremse"])
    out["loss"].backward()
    assert all(p.grad is not None for p in d.adapters.parameters())
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(k.startswith("adapters") for k in student.state_dict())  # the exported student holds none


def test_adapters_must_be_sized_before_training_steps():
    d = Distiller(ConvNet(2), ConvNet(6), [FeatureMSE("layer2", "layer2")])
    with pytest.raises(DistillError, match="call setup"):
        d(batch())


def test_a_loss_refusing_its_inputs_is_named():
    d = Distiller(ConvNet(2), ConvNet(6), [FeatureMSE("layer2", "layer2", adapter="none")])
    with pytest.raises(DistillError, match=r"loss term 'featuremse': shapes \(4, 4, 4, 4\) and \(4, 12, 4, 4\) differ"):
        d.setup(batch())


@pytest.mark.e2e
def test_fit_sizes_and_trains_the_adapters():
    samples = [{"input": torch.randn(1, 8, 8), "label": torch.tensor(i % 3)} for i in range(32)]
    loader = torch.utils.data.DataLoader(samples, batch_size=8, shuffle=True)

    d = Distiller(ConvNet(2), ConvNet(6), [FeatureMSE("layer2", "layer2")])
    d.fit(loader, loader, epochs=1, progress=False)
    assert "featuremse" in d.adapters  # sized by fit's first forward

    d = Distiller(ConvNet(2), ConvNet(6), [FeatureMSE("layer2", "layer2")])
    d.setup(next(iter(loader)))
    before = d.adapters["featuremse"][1].weight.detach().clone()
    d.fit(loader, loader, epochs=2, progress=False, lr=0.1)
    assert not torch.equal(before, d.adapters["featuremse"][1].weight)  # the optimizer trained it


def test_a_hugging_face_teacher_gives_its_logits_and_bad_indices_are_named():
    hf = HuggingFaceLike()
    logits, _ = run_tapped(hf, torch.randn(2, 5, 4), [])
    assert logits.shape == (2, 5, 3)
    with pytest.raises(DistillError, match=r"tap 'hidden_states.9': the model returned 2 hidden_states"):
        run_tapped(hf, torch.randn(2, 5, 4), ["hidden_states.9"])


def test_an_unknown_adapter_name_is_one_line():
    with pytest.raises(DistillError, match="adapter 'conv5x5' is not one of auto, none, linear, conv1x1, conv3x3"):
        make_adapter("conv5x5", torch.Size((2, 4, 8, 8)), torch.Size((2, 8, 8, 8)), "loss term 'hint'")


def test_an_attention_loss_on_conv_features_is_refused_before_training():
    d = Distiller(ConvNet(2), ConvNet(2), [losses.AttentionKL("layer2", "layer2")])
    with pytest.raises(DistillError, match="not an attention map"):
        d.setup(batch())
