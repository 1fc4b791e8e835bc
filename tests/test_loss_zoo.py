"""Every registered loss: the contract the Distiller relies on, and each formula against a direct reference."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distill import losses
from distill.losses import (
    CRD,
    VID,
    AttentionKL,
    at_loss,
    attention_kl_loss,
    attention_mse_loss,
    crd_loss,
    dist_loss,
    dkd_loss,
    hint_loss,
    jsd_loss,
    kd_loss,
    logit_mse_loss,
    nst_loss,
    pkt_loss,
    reverse_kl_loss,
    rkd_loss,
    sp_loss,
)

# --- The registry-wide contract ------------------------------------------------------------------------------------

ARGS = {"kd": {"alpha": 0.0}, "crd": {"num_samples": 64, "nce_k": 16, "feat_dim": 8}}
ATTENTION = {"attention_kl", "attention_mse"}
NOT_ZERO_WHEN_EQUAL = {"vid", "crd"}  # learned predictors / contrast against memory: no zero at s == t


def build(name):
    cls = losses.LOSSES.get(name)
    if cls.kind == "logits":
        return cls(**ARGS.get(name, {}))
    return cls("student.layer", "teacher.layer", **ARGS.get(name, {}))


def make_inputs(name, term, seed=0, same=False):
    """(student tensor that requires grad, teacher tensor that does not, extra args) suited to the term."""
    g = torch.Generator().manual_seed(seed)
    if term.kind == "logits":
        shape, extra = (4, 10), (torch.randint(0, 10, (4,), generator=g),)
        teacher = torch.randn(shape, generator=g) * 2
    elif name in ATTENTION:
        shape, extra = (4, 2, 5, 5), ()
        teacher = torch.randn(shape, generator=g).softmax(-1)
    else:
        shape = (8, 16, 4, 4)
        extra = (torch.randperm(64, generator=g)[:8],) if term.needs_index else ()
        teacher = torch.randn(shape, generator=g)
    if same:
        student = teacher.clone()
    elif name in ATTENTION:
        student = torch.randn(shape, generator=g).softmax(-1)
    else:
        student = torch.randn(shape, generator=g) * 2
    return student.requires_grad_(), teacher, extra


def test_the_zoo_is_registered():
    expected = {"kd", "dkd", "dist", "reverse_kl", "jsd", "logit_mse", "hint", "at", "sp", "pkt", "rkd", "nst"}
    expected |= {"vid", "crd", "attention_kl", "attention_mse"}
    assert set(losses.list()) == expected


@pytest.mark.parametrize("name", losses.list())
def test_finite_scalar_gradients_reach_student_and_loss_parameters_never_the_teacher(name):
    term = build(name)
    student, teacher, extra = make_inputs(name, term)
    teacher_before = teacher.clone()
    loss = term(student, teacher, *extra)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None and not teacher.requires_grad
    torch.testing.assert_close(teacher, teacher_before, rtol=0, atol=0)  # not modified in place
    for pname, p in term.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"{name}.{pname} got no gradient"
    assert isinstance(term.weight, float) and term.weight == 1.0
    assert term.kind in ("logits", "features")
    if term.kind == "features":
        assert term.student_layer == "student.layer" and term.teacher_layer == "teacher.layer"
        assert term.adapter in ("auto", "none", "linear", "conv1x1", "conv3x3")
        assert isinstance(term.needs_index, bool)


@pytest.mark.parametrize("name", sorted(set(losses.list()) - NOT_ZERO_WHEN_EQUAL))
def test_zero_when_student_equals_teacher(name):
    term = build(name)
    student, teacher, extra = make_inputs(name, term, same=True)
    same = term(student, teacher, *extra).item()
    assert same == pytest.approx(0.0, abs=1e-5)
    different, teacher, extra = make_inputs(name, term)
    assert term(different, teacher, *extra).item() > max(100 * same, 1e-5)  # and not zero for everything


@pytest.mark.parametrize("name", sorted(set(losses.list()) - {"kd"}))  # kd_loss predates rank checks
def test_wrong_rank_is_refused_naming_the_loss(name):
    term = build(name)
    _, _, extra = make_inputs(name, term)
    flat = torch.randn(8, requires_grad=True)
    with pytest.raises(ValueError, match=rf"^{name}: .*shape \(8,\)"):
        term(flat, torch.randn(8), *extra)


@pytest.mark.parametrize(("name", "shape"), [("at", (8, 16)), ("nst", (8, 16)), ("attention_kl", (4, 5, 5))])
def test_ranks_a_method_cannot_use_are_refused(name, shape):
    term = build(name)
    with pytest.raises(ValueError, match=rf"^{name}: student"):
        term(torch.randn(shape), torch.randn(shape))


def test_weight_is_stored_not_applied():
    s, t, _ = make_inputs("dkd", build("dkd"))
    assert losses.DKD(weight=3.0)(s, t, torch.zeros(4, dtype=torch.long)).item() == pytest.approx(
        losses.DKD()(s, t, torch.zeros(4, dtype=torch.long)).item()
    )
    assert losses.SP("a", "b", weight=3.0).weight == 3.0


# --- Logit terms against direct references -------------------------------------------------------------------------


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(6, 5, generator=g) * 3,
        torch.randn(6, 5, generator=g) * 3,
        torch.randint(0, 5, (6,), generator=g),
    )


def reference_dkd(s, t, y, alpha, beta, T):
    total = 0.0
    for z_s, z_t, gt in zip(s.double().numpy(), t.double().numpy(), y.tolist(), strict=True):
        p_s, p_t = softmax(z_s / T), softmax(z_t / T)
        tckd = kl([p_t[gt], 1 - p_t[gt]], [p_s[gt], 1 - p_s[gt]])
        nckd = kl(np.delete(p_t, gt) / (1 - p_t[gt]), np.delete(p_s, gt) / (1 - p_s[gt]))
        total += alpha * tckd + beta * nckd
    return T**2 * total / len(y)


@pytest.mark.parametrize(("alpha", "beta", "T"), [(1.0, 8.0, 4.0), (0.5, 2.0, 1.0), (0.0, 1.0, 2.0)])
def test_dkd_matches_the_formula(logits, alpha, beta, T):
    s, t, y = logits
    got = dkd_loss(s, t, y, alpha=alpha, beta=beta, temperature=T)
    assert got.item() == pytest.approx(reference_dkd(s, t, y, alpha, beta, T), rel=1e-5)


def test_dkd_decomposes_kd(logits):
    """The paper's identity: KD = TCKD + (1 - p_t[gt]) * NCKD, sample by sample."""
    s, t, y = logits
    T = 2.0
    for i in range(len(y)):
        p_gt = F.softmax(t[i] / T, dim=-1)[y[i]].item()
        dkd = dkd_loss(s[i : i + 1], t[i : i + 1], y[i : i + 1], alpha=1.0, beta=1 - p_gt, temperature=T)
        kd = kd_loss(s[i : i + 1], t[i : i + 1], y[i : i + 1], temperature=T, alpha=0.0)
        assert dkd.item() == pytest.approx(kd.item(), rel=1e-4)


def test_dkd_ignores_unlabelled_samples_and_flattens_tokens(logits):
    s, t, y = logits
    y_partial = y.clone()
    y_partial[4:] = -100
    got = dkd_loss(s, t, y_partial, alpha=1.0, beta=8.0, temperature=4.0)
    assert got.item() == pytest.approx(reference_dkd(s[:4], t[:4], y[:4], 1.0, 8.0, 4.0), rel=1e-5)
    flat = dkd_loss(s, t, y, alpha=1.0, beta=8.0, temperature=4.0)
    tokens = dkd_loss(s.view(2, 3, 5), t.view(2, 3, 5), y.view(2, 3), alpha=1.0, beta=8.0, temperature=4.0)
    assert tokens.item() == pytest.approx(flat.item())


@pytest.mark.parametrize(("beta", "gamma", "T"), [(1.0, 1.0, 1.0), (2.0, 2.0, 4.0), (1.0, 0.0, 2.0)])
def test_dist_matches_the_formula(logits, beta, gamma, T):
    s, t, _ = logits
    y_s = np.stack([softmax(z / T) for z in s.double().numpy()])
    y_t = np.stack([softmax(z / T) for z in t.double().numpy()])
    inter = 1 - np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(y_s, y_t, strict=True)])
    intra = 1 - np.mean([np.corrcoef(a, b)[0, 1] for a, b in zip(y_s.T, y_t.T, strict=True)])
    expected = T**2 * (beta * inter + gamma * intra)
    assert dist_loss(s, t, beta=beta, gamma=gamma, temperature=T).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_reverse_kl_matches_the_formula(logits, T):
    s, t, _ = logits
    expected = T**2 * np.mean(
        [kl(softmax(a / T), softmax(b / T)) for a, b in zip(s.double().numpy(), t.double().numpy(), strict=True)]
    )
    assert reverse_kl_loss(s, t, temperature=T).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("T", [1.0, 3.0])
def test_jsd_matches_the_formula(logits, T):
    s, t, _ = logits
    total = 0.0
    for a, b in zip(s.double().numpy(), t.double().numpy(), strict=True):
        p, q = softmax(a / T), softmax(b / T)
        m = (p + q) / 2
        total += 0.5 * kl(p, m) + 0.5 * kl(q, m)
    assert jsd_loss(s, t, temperature=T).item() == pytest.approx(T**2 * total / len(s), rel=1e-5)
    assert jsd_loss(t, s, temperature=T).item() == pytest.approx(jsd_loss(s, t, temperature=T).item(), rel=1e-6)
    far = torch.tensor([[100.0, 0.0]]), torch.tensor([[0.0, 100.0]])
    assert jsd_loss(*far, temperature=1.0).item() == pytest.approx(math.log(2), rel=1e-4)  # the bound


def test_logit_mse_matches_the_formula(logits):
    s, t, _ = logits
    expected = ((s.double().numpy() - t.double().numpy()) ** 2).mean()
    assert logit_mse_loss(s, t).item() == pytest.approx(expected, rel=1e-6)


def test_logit_terms_refuse_mismatched_shapes(logits):
    s, t, y = logits
    for term in (losses.DKD(), losses.DIST(), losses.ReverseKL(), losses.JSD(), losses.LogitMSE()):
        with pytest.raises(ValueError, match="differ"):
            term(s, t[:, :4], y)
    with pytest.raises(ValueError, match="temperature"):
        losses.DKD(temperature=0.0)


# --- Feature terms against direct references ------------------------------------------------------------------------


def feats(*shape, seed=0, scale=1.0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale


def test_hint_matches_the_formula_and_refuses_other_shapes():
    s, t = feats(4, 8, 3, 3, seed=1), feats(4, 8, 3, 3, seed=2)
    assert hint_loss(s, t).item() == pytest.approx(((s.double() - t.double()) ** 2).mean().item(), rel=1e-6)
    with pytest.raises(ValueError, match="hint: .*adapter"):
        hint_loss(feats(4, 6, 3, 3), t)
    assert losses.Hint("a", "b").adapter == "auto"


def reference_at(s, t):
    def q(f):
        a = (f**2).mean(1).reshape(len(f), -1)
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    return ((q(s) - q(t)) ** 2).mean()


def test_at_matches_the_formula():
    s, t = feats(4, 6, 5, 5, seed=1), feats(4, 10, 5, 5, seed=2)  # channel counts may differ
    assert at_loss(s, t).item() == pytest.approx(reference_at(s.double().numpy(), t.double().numpy()), rel=1e-5)


def test_at_pools_the_student_attention_map_to_the_teachers_size():
    s, t = feats(2, 6, 8, 8, seed=1), feats(2, 10, 4, 4, seed=2)
    a_s = (s.double().numpy() ** 2).mean(1)  # (B, 8, 8)
    pooled = a_s.reshape(2, 4, 2, 4, 2).mean((2, 4))  # 2x2 blocks: (B, 4, 4)
    q_s = pooled.reshape(2, -1) / np.linalg.norm(pooled.reshape(2, -1), axis=1, keepdims=True)
    a_t = (t.double().numpy() ** 2).mean(1).reshape(2, -1)
    q_t = a_t / np.linalg.norm(a_t, axis=1, keepdims=True)
    assert at_loss(s, t).item() == pytest.approx(((q_s - q_t) ** 2).mean(), rel=1e-5)
    assert torch.isfinite(at_loss(t, s))  # a smaller student map is upsampled


def test_sp_matches_the_formula():
    s, t = feats(5, 3, 2, 2, seed=1), feats(5, 7, seed=2)  # any feature sizes: only B x B relations are compared
    b = 5
    total = 0.0
    f_s, f_t = s.double().numpy().reshape(b, -1), t.double().numpy().reshape(b, -1)
    g_s, g_t = f_s @ f_s.T, f_t @ f_t.T
    for i in range(b):
        row_s, row_t = g_s[i] / np.linalg.norm(g_s[i]), g_t[i] / np.linalg.norm(g_t[i])
        total += ((row_s - row_t) ** 2).sum()
    assert sp_loss(s, t).item() == pytest.approx(total / b**2, rel=1e-5)


def test_pkt_matches_the_formula():
    s, t = feats(6, 4, 2, 2, seed=1), feats(6, 9, seed=2)
    eps = 1e-7

    def conditional(f):
        f = f.reshape(len(f), -1)
        n = len(f)
        k = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                k[i, j] = (np.dot(f[i], f[j]) / (np.linalg.norm(f[i]) * np.linalg.norm(f[j])) + 1) / 2
        return k / k.sum(1, keepdims=True)

    p_s, p_t = conditional(s.double().numpy()), conditional(t.double().numpy())
    expected = (p_t * np.log((p_t + eps) / (p_s + eps))).mean()
    assert pkt_loss(s, t).item() == pytest.approx(expected, rel=1e-4)


def reference_rkd(s, t, w_d, w_a):
    def huber(x, y):
        d = abs(x - y)
        return 0.5 * d * d if d < 1 else d - 0.5

    def relations(f):
        n = len(f)
        dist = [[np.linalg.norm(f[i] - f[j]) for j in range(n)] for i in range(n)]
        mu = sum(dist[i][j] for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
        angle = {}
        for i in range(n):
            for j in range(n):
                for k in range(n):
                    e_ij = (f[j] - f[i]) / np.linalg.norm(f[j] - f[i]) if i != j else 0 * f[i]
                    e_ik = (f[k] - f[i]) / np.linalg.norm(f[k] - f[i]) if i != k else 0 * f[i]
                    angle[i, j, k] = float(np.dot(e_ij, e_ik))
        return {(i, j): dist[i][j] / mu for i in range(n) for j in range(n)}, angle

    d_s, a_s = relations(s)
    d_t, a_t = relations(t)
    loss_d = np.mean([huber(d_s[key], d_t[key]) for key in d_s])
    loss_a = np.mean([huber(a_s[key], a_t[key]) for key in a_s])
    return w_d * loss_d + w_a * loss_a


def test_rkd_matches_the_formula():
    s, t = feats(5, 3, seed=1, scale=2.0), feats(5, 4, seed=2)
    expected = reference_rkd(s.double().numpy(), t.double().numpy(), 25.0, 50.0)
    assert rkd_loss(s, t).item() == pytest.approx(expected, rel=1e-5)
    assert rkd_loss(s, t, distance_weight=1.0, angle_weight=0.0).item() == pytest.approx(
        reference_rkd(s.double().numpy(), t.double().numpy(), 1.0, 0.0), rel=1e-5
    )
    one = rkd_loss(feats(1, 3), feats(1, 4))  # a batch of one has no relations: zero, not NaN
    assert one.item() == 0.0


def test_nst_matches_the_formula():
    s, t = feats(2, 3, 3, 3, seed=1), feats(2, 5, 3, 3, seed=2)

    def maps(f):
        f = f.reshape(f.shape[0], f.shape[1], -1)
        return f / np.linalg.norm(f, axis=2, keepdims=True)

    m_s, m_t = maps(s.double().numpy()), maps(t.double().numpy())

    def kernel_mean(a, b):
        return np.mean([np.dot(x, y) ** 2 for x in a for y in b])

    expected = np.mean(
        [kernel_mean(a, a) + kernel_mean(b, b) - 2 * kernel_mean(a, b) for a, b in zip(m_s, m_t, strict=True)]
    )
    assert nst_loss(s, t).item() == pytest.approx(expected, rel=1e-5)
    assert torch.isfinite(nst_loss(feats(2, 3, 6, 6), t))  # another spatial size is resized


def test_vid_matches_the_formula_with_its_own_regressor():
    s, t = feats(3, 4, 2, 2, seed=1), feats(3, 6, 2, 2, seed=2)
    term = VID("a", "b")
    got = term(s, t)  # the first call sizes the regressor: 4 -> 6 -> 6 -> 6
    w1, w2, w3 = (w.detach().double().numpy()[:, :, 0, 0] for w in (term.conv1, term.conv2, term.conv3))
    assert w1.shape == (6, 4) and w2.shape == (6, 6) and w3.shape == (6, 6)
    x = s.double().numpy()
    h = np.maximum(np.einsum("oc,bchw->bohw", w1, x), 0)
    h = np.maximum(np.einsum("oc,bchw->bohw", w2, h), 0)
    mu = np.einsum("oc,bchw->bohw", w3, h)
    var = np.log1p(np.exp(term.log_scale.detach().double().numpy())) + 1e-5
    assert var == pytest.approx(np.full(6, 5.0))  # the initial variance
    var = var[None, :, None, None]
    expected = (0.5 * ((mu - t.double().numpy()) ** 2 / var + np.log(var))).mean()
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_vid_is_lazy_until_the_first_forward_and_then_an_ordinary_module():
    term = VID("a", "b", mid_channels=3)
    assert term.has_uninitialized_params()
    with torch.no_grad():  # the Distiller's sizing forward
        term.eval()(feats(2, 4, 4, 4), feats(2, 5, 2, 2))
    assert [tuple(p.shape) for p in term.parameters()] == [(3, 4, 1, 1), (3, 3, 1, 1), (5, 3, 1, 1), (5,)]
    fresh = VID("a", "b", mid_channels=3)
    fresh.load_state_dict(term.state_dict())
    s, t = feats(2, 4, 4, 4, seed=3), feats(2, 5, 2, 2, seed=4)
    assert fresh(s, t).item() == pytest.approx(term(s, t).item())
    assert torch.isfinite(VID("a", "b")(feats(2, 4), feats(2, 5)))  # (B, D) vectors as 1x1 maps


# --- CRD ------------------------------------------------------------------------------------------------------------


def reference_nce(probs, num_samples, eps=1e-7):
    """-1/B sum_b [log h(pos) + sum_k log(1 - h(neg_k))], h(x) = x / (x + K/N), written out."""
    total = 0.0
    for row in probs:
        k = len(row) - 1
        noise = k / num_samples
        total += math.log(row[0] / (row[0] + noise + eps))
        total += sum(math.log(noise / (x + noise + eps)) for x in row[1:])
    return -total / len(probs)


def reference_crd(g_s, g_t, student_bank, teacher_bank, contrast_index, norms, T):
    n = len(student_bank)
    p_s = [
        [math.exp(np.dot(teacher_bank[k], g_s[b]) / T) / norms[0] for k in row] for b, row in enumerate(contrast_index)
    ]
    p_t = [
        [math.exp(np.dot(student_bank[k], g_t[b]) / T) / norms[1] for k in row] for b, row in enumerate(contrast_index)
    ]
    return reference_nce(p_s, n) + reference_nce(p_t, n)


def unit(*shape, seed):
    return F.normalize(feats(*shape, seed=seed), dim=-1)


def test_crd_loss_matches_the_formula():
    g_s, g_t, s_bank, t_bank = unit(3, 4, seed=1), unit(3, 4, seed=2), unit(20, 4, seed=3), unit(20, 4, seed=4)
    contrast_index = torch.tensor([[0, 5, 7, 7], [1, 2, 3, 19], [2, 0, 11, 1]])
    norms = torch.tensor([30.0, 25.0])
    s_scores = losses.contrast_scores(g_s, t_bank, contrast_index, temperature=0.5)
    t_scores = losses.contrast_scores(g_t, s_bank, contrast_index, temperature=0.5)
    got = crd_loss(s_scores, t_scores, norms, num_samples=20)
    as_np = [x.double().numpy() for x in (g_s, g_t, s_bank, t_bank)]
    expected = reference_crd(*as_np, contrast_index.tolist(), norms.tolist(), 0.5)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_crd_module_matches_the_formula_with_uniform_negatives():
    term = CRD("a", "b", num_samples=40, nce_k=6, feat_dim=4, nce_t=0.2).eval()
    s, t, index = feats(5, 3, 2, 2, seed=1), feats(5, 7, seed=2), torch.tensor([3, 0, 39, 12, 7])
    term(s, t, index)  # sizes the heads (their initialisation draws from the RNG too)
    torch.manual_seed(123)
    got = term(s, t, index)
    torch.manual_seed(123)
    negatives = torch.randint(40, (5, 6))  # uniform over all samples, from the global RNG
    contrast_index = torch.cat([index[:, None], negatives], 1).tolist()

    def embed(head, f):
        e = f.double().numpy().reshape(len(f), -1) @ head.weight.detach().double().numpy().T
        e = e + head.bias.detach().double().numpy()
        return e / np.linalg.norm(e, axis=1, keepdims=True)

    g_s, g_t = embed(term.embed_student, s), embed(term.embed_teacher, t)
    s_bank, t_bank = term.student_bank.double().numpy(), term.teacher_bank.double().numpy()
    # Z unset (eval mode never sets it): N * mean of this batch's scores
    z_s = 40 * np.mean([math.exp(np.dot(t_bank[k], g_s[b]) / 0.2) for b, r in enumerate(contrast_index) for k in r])
    z_t = 40 * np.mean([math.exp(np.dot(s_bank[k], g_t[b]) / 0.2) for b, r in enumerate(contrast_index) for k in r])
    expected = reference_crd(g_s, g_t, s_bank, t_bank, contrast_index, [z_s, z_t], 0.2)
    assert got.item() == pytest.approx(expected, rel=1e-4)


def test_crd_memory_moves_in_training_mode_only():
    term = CRD("a", "b", num_samples=64, nce_k=16, feat_dim=8, momentum=0.5)
    s, t, index = feats(4, 16, 2, 2, seed=1), feats(4, 32, seed=2), torch.tensor([3, 10, 20, 7])
    with torch.no_grad():
        term.eval()(s, t, index)  # the Distiller's sizing forward
    before = (term.student_bank.clone(), term.teacher_bank.clone())
    term.eval()(s, t, index)
    torch.testing.assert_close(term.student_bank, before[0], rtol=0, atol=0)
    torch.testing.assert_close(term.teacher_bank, before[1], rtol=0, atol=0)
    assert (term.norms < 0).all()  # Z not fixed by an eval batch

    term.train()(s, t, index)
    with torch.no_grad():
        g_s = F.normalize(term.embed_student(s.flatten(1)), dim=1)
        g_t = F.normalize(term.embed_teacher(t.flatten(1)), dim=1)
    for bank, old, g in ((term.student_bank, before[0], g_s), (term.teacher_bank, before[1], g_t)):
        expected = F.normalize(0.5 * old[index] + 0.5 * g, dim=1)
        torch.testing.assert_close(bank[index], expected)
        others = torch.ones(64, dtype=torch.bool)
        others[index] = False
        torch.testing.assert_close(bank[others], old[others], rtol=0, atol=0)
    assert (term.norms > 0).all()  # Z fixed by the first training batch ...
    norms = term.norms.clone()
    term(s, t, index)
    torch.testing.assert_close(term.norms, norms, rtol=0, atol=0)  # ... and kept


def test_crd_memory_estimate_and_refusals():
    assert CRD.memory_estimate(50_000, 128) == 2 * 50_000 * 128 * 4
    term = CRD("a", "b", num_samples=64, nce_k=16, feat_dim=8)
    assert term.memory_bytes() == CRD.memory_estimate(64, 8) == 4096
    assert "memory_estimate" in CRD.__dict__ and isinstance(CRD.__dict__["memory_estimate"], staticmethod)
    with pytest.raises(ValueError, match=r"crd: nce_k .*nce_k=64 with 64 training samples"):
        CRD("a", "b", num_samples=64, nce_k=64)
    with pytest.raises(ValueError, match="nce_k"):
        CRD("a", "b", num_samples=64, nce_k=100)
    # refused before anything is allocated: this would need 9766 MB
    with pytest.raises(ValueError, match=r"crd: the memory banks would take 9766 MB .*max_memory_mb=4096"):
        CRD("a", "b", num_samples=10_000_000, feat_dim=128)
    with pytest.raises(ValueError, match="max_memory_mb=1"):
        CRD("a", "b", num_samples=100_000, feat_dim=128, max_memory_mb=1)
    with pytest.raises(ValueError, match=r"crd: index must be \(4,\)"):
        term(feats(4, 8), feats(4, 8), torch.arange(3))


# --- Attention terms ------------------------------------------------------------------------------------------------


def attention(*shape, seed):
    return feats(*shape, seed=seed, scale=2.0).softmax(-1)


def reference_attention_kl(s, t):
    b, h, q, _ = s.shape
    total = sum(kl(t[i, j, k], s[i, j, k]) for i in range(b) for j in range(h) for k in range(q))
    return total / (b * h * q)


def test_attention_kl_and_mse_match_the_formulas():
    s, t = attention(2, 3, 4, 5, seed=1), attention(2, 3, 4, 5, seed=2)  # cross-attention shapes too
    s_np, t_np = s.double().numpy(), t.double().numpy()
    assert attention_kl_loss(s, t).item() == pytest.approx(reference_attention_kl(s_np, t_np), rel=1e-5)
    assert attention_mse_loss(s, t).item() == pytest.approx(((s_np - t_np) ** 2).mean(), rel=1e-5)


def test_attention_kl_is_finite_for_masked_keys():
    s, t = attention(1, 1, 3, 4, seed=1), attention(1, 1, 3, 4, seed=2)
    t = t * torch.tensor([1.0, 1.0, 1.0, 0.0])  # the teacher gives a padded key no weight
    t = t / t.sum(-1, keepdim=True)
    expected = reference_attention_kl(s.double().numpy(), t.double().numpy())
    assert attention_kl_loss(s, t).item() == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("name", sorted(ATTENTION))
def test_attention_head_mismatch_is_refused_or_averaged(name):
    s, t = attention(2, 4, 5, 5, seed=1), attention(2, 12, 5, 5, seed=2)
    with pytest.raises(ValueError, match=rf"^{name}: student has 4 heads, teacher 12; set heads='mean'"):
        build(name)(s, t)
    got = losses.LOSSES.get(name)("a", "b", heads="mean")(s, t)
    s_mean, t_mean = s.double().numpy().mean(1, keepdims=True), t.double().numpy().mean(1, keepdims=True)
    reference = reference_attention_kl if name == "attention_kl" else lambda a, b: ((a - b) ** 2).mean()
    expected = reference(s_mean, t_mean)
    assert got.item() == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match=rf"^{name}: .*sequence length"):
        build(name)(attention(2, 4, 5, 5, seed=1), attention(2, 4, 6, 6, seed=2))
    with pytest.raises(ValueError, match="heads must be"):
        AttentionKL("a", "b", heads="sum")


def test_crd_draws_negatives_only_from_training_rows(monkeypatch):
    torch.manual_seed(0)
    crd = CRD("s", "t", num_samples=64, nce_k=16, feat_dim=8, train_rows=torch.arange(0, 64, 2))  # even rows train
    drawn = []
    randint = torch.randint

    def spy(high, size, **kwargs):
        picks = randint(high, size, **kwargs)
        drawn.append(crd.negative_pool[picks])
        return picks

    monkeypatch.setattr(torch, "randint", spy)
    crd(torch.randn(4, 8, requires_grad=True), torch.randn(4, 8), torch.tensor([0, 2, 4, 6]))
    assert drawn and all((d % 2 == 0).all() for d in drawn)
