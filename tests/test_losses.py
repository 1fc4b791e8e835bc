import math

import pytest
import torch
import torch.nn.functional as F

from distill import losses
from distill.losses import KD, kd_loss


def reference_kd(s, t, y, T, alpha):
    """The product brief's formula, written out sample by sample."""
    total_soft, total_hard = 0.0, 0.0
    for i in range(len(s)):
        p_t = [math.exp(v / T) for v in t[i].tolist()]
        p_t = [v / sum(p_t) for v in p_t]
        p_s = [math.exp(v / T) for v in s[i].tolist()]
        p_s = [v / sum(p_s) for v in p_s]
        total_soft += sum(a * (math.log(a) - math.log(b)) for a, b in zip(p_t, p_s, strict=True))
        q = [math.exp(v) for v in s[i].tolist()]
        total_hard += -math.log(q[int(y[i])] / sum(q))
    return alpha * total_hard / len(s) + (1 - alpha) * T**2 * total_soft / len(s)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    return (
        torch.randn(6, 5, generator=g) * 3,
        torch.randn(6, 5, generator=g) * 3,
        torch.randint(0, 5, (6,), generator=g),
    )


@pytest.mark.parametrize("T", [1.0, 2.0, 4.0, 10.0])
@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_kd_loss_matches_the_formula(logits, T, alpha):
    s, t, y = logits
    got = kd_loss(s.double(), t.double(), y, temperature=T, alpha=alpha)
    assert got.item() == pytest.approx(reference_kd(s.double(), t.double(), y, T, alpha), rel=1e-5)


@pytest.mark.parametrize("T", [1.0, 4.0])
def test_kd_gradient_matches_autograd_of_the_reference(logits, T):
    s, t, y = logits
    s1 = s.clone().requires_grad_()
    kd_loss(s1, t, y, temperature=T, alpha=0.4).backward()
    s2 = s.clone().requires_grad_()
    p_t = F.softmax(t / T, dim=-1)
    soft = (p_t * (p_t.log() - F.log_softmax(s2 / T, dim=-1))).sum(-1).mean() * T**2
    (0.4 * F.cross_entropy(s2, y) + 0.6 * soft).backward()
    torch.testing.assert_close(s1.grad, s2.grad)
    # analytic soft gradient: T * (p_s - p_t) / B
    s3 = s.clone().requires_grad_()
    kd_loss(s3, t, y, temperature=T, alpha=0.0).backward()
    expected = T * (F.softmax(s / T, dim=-1) - p_t) / len(s)
    torch.testing.assert_close(s3.grad, expected)


def test_alpha_weights_the_hard_loss(logits):
    s, t, y = logits
    assert kd_loss(s, t, y, temperature=3.0, alpha=1.0).item() == pytest.approx(F.cross_entropy(s, y).item())
    pure_soft = kd_loss(s, t, y, temperature=3.0, alpha=0.0)
    other_labels = kd_loss(s, t, (y + 1) % 5, temperature=3.0, alpha=0.0)
    assert pure_soft.item() == pytest.approx(other_labels.item())  # labels play no part at alpha=0


def test_t2_scaling_and_identical_logits(logits):
    s, t, y = logits
    with_t2 = kd_loss(s, t, y, temperature=4.0, alpha=0.0)
    without = kd_loss(s, t, y, temperature=4.0, alpha=0.0, t2=False)
    assert with_t2.item() == pytest.approx(16 * without.item(), rel=1e-5)
    assert kd_loss(t, t, y, temperature=4.0, alpha=0.0).item() == pytest.approx(0.0, abs=1e-6)


def test_soft_ce_is_kl_plus_teacher_entropy(logits):
    s, t, y = logits
    T = 2.0
    p_t = F.softmax(t / T, dim=-1)
    entropy = -(p_t * p_t.log()).sum(-1).mean() * T**2
    kl = kd_loss(s, t, y, temperature=T, alpha=0.0, soft="kl")
    ce = kd_loss(s, t, y, temperature=T, alpha=0.0, soft="ce")
    assert ce.item() == pytest.approx((kl + entropy).item(), rel=1e-5)


def test_unlabelled_samples_give_only_the_soft_loss(logits):
    s, t, y = logits
    y_partial = y.clone()
    y_partial[3:] = -100
    got = kd_loss(s, t, y_partial, temperature=2.0, alpha=0.5)
    hard = F.cross_entropy(s[:3], y[:3], reduction="sum") / len(y)  # each sample weighs alike
    soft = kd_loss(s, t, y, temperature=2.0, alpha=0.0)
    assert got.item() == pytest.approx((0.5 * hard + 0.5 * soft).item(), rel=1e-5)
    unlabelled = kd_loss(s, t, torch.full_like(y, -100), temperature=2.0, alpha=0.5)
    assert unlabelled.item() == pytest.approx(0.5 * soft.item(), rel=1e-5)  # finite, not NaN


def test_label_smoothing_reaches_the_hard_loss(logits):
    s, t, y = logits
    got = kd_loss(s, t, y, temperature=2.0, alpha=1.0, label_smoothing=0.1)
    assert got.item() == pytest.approx(F.cross_entropy(s, y, label_smoothing=0.1).item())


def test_token_logits_are_flattened(logits):
    s, t, y = logits
    flat = kd_loss(s, t, y, temperature=2.0, alpha=0.5)
    tokens = kd_loss(s.view(2, 3, 5), t.view(2, 3, 5), y.view(2, 3), temperature=2.0, alpha=0.5)
    assert tokens.item() == pytest.approx(flat.item())


def test_shape_mismatch_is_refused(logits):
    s, t, y = logits
    with pytest.raises(ValueError, match="differ"):
        kd_loss(s, t[:, :4], y, temperature=2.0, alpha=0.5)


def test_module_form_and_registry(logits):
    s, t, y = logits
    assert KD(temperature=3.0, alpha=0.2)(s, t, y).item() == pytest.approx(
        kd_loss(s, t, y, temperature=3.0, alpha=0.2).item()
    )
    assert "kd" in losses.list()
    assert losses.LOSSES.get("kd") is KD
    with pytest.raises(ValueError, match="temperature"):
        KD(temperature=0.0)
    with pytest.raises(ValueError, match="alpha"):
        KD(alpha=1.5)
