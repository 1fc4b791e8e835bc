"""Token-level losses: each against a written-out reference, the fused form against the plain one, and the
normalisation that makes gradient accumulation change nothing."""

from __future__ import annotations

import math

import pytest
import torch

from distill.losses import LossInputError
from distill.losses.token import DIVERGENCES, token_distillation_loss, token_divergence
from distill.losses.token_kd import TokenKD

B, S, V = 3, 6, 7


def _reference(student: torch.Tensor, teacher: torch.Tensor, divergence: str, t: float, beta: float, skew: float):
    """Per-token divergence from the definitions, in float64, one token and one vocabulary entry at a time."""
    values = []
    for s_row, t_row in zip(student.double(), teacher.double(), strict=True):
        q = torch.softmax(s_row / t, -1)  # the student's distribution
        p = torch.softmax(t_row / t, -1)  # the teacher's

        def kl(a, b):
            return sum(a[i] * torch.log(a[i] / b[i]) if a[i] > 0 else 0.0 for i in range(len(a)))

        if divergence == "forward_kl":
            value = kl(p, q)
        elif divergence == "reverse_kl":
            value = kl(q, p)
        elif divergence == "jsd":
            m = beta * p + (1 - beta) * q
            value = beta * kl(p, m) + (1 - beta) * kl(q, m)
        elif divergence == "skew_forward_kl":
            value = kl(p, skew * p + (1 - skew) * q)
        elif divergence == "skew_reverse_kl":
            value = kl(q, skew * q + (1 - skew) * p)
        else:
            value = 0.5 * sum(abs(p[i] - q[i]) for i in range(len(p)))
        values.append(value * t**2)
    return torch.stack(values)


def _reference_loss(student, teacher, labels, divergence, alpha, t, beta=0.5, skew=0.1):
    student, teacher, labels = student[:, :-1].reshape(-1, V), teacher[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1)
    kept = labels != -100
    soft = _reference(student[kept], teacher[kept], divergence, t, beta, skew).sum()
    hard = -torch.log_softmax(student[kept].double(), -1)[torch.arange(int(kept.sum())), labels[kept]].sum()
    return (alpha * hard + (1 - alpha) * soft) / max(int(kept.sum()), 1)


def _inputs(seed: int = 0):
    torch.manual_seed(seed)
    student = torch.randn(B, S, V, requires_grad=True)
    teacher = torch.randn(B, S, V) * 2
    labels = torch.randint(0, V, (B, S))
    labels[0, :3] = -100  # a prompt
    labels[2, 4:] = -100  # padding
    return student, teacher, labels


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize(("alpha", "temperature"), [(0.0, 1.0), (0.4, 2.0)])
def test_each_loss_equals_its_definition_in_value_and_gradient(divergence, alpha, temperature):
    student, teacher, labels = _inputs()
    got = token_distillation_loss(student, teacher, labels, divergence=divergence, alpha=alpha, temperature=temperature)
    double = student.detach().double().requires_grad_()
    expected = _reference_loss(double, teacher, labels, divergence, alpha, temperature)
    assert got.loss.item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert got.tokens.item() == int((labels[:, 1:] != -100).sum())
    (grad,) = torch.autograd.grad(got.loss, student)
    (expected_grad,) = torch.autograd.grad(expected, double)
    torch.testing.assert_close(grad.double(), expected_grad, rtol=1e-4, atol=1e-6)
    assert grad[:, -1].abs().sum() == 0  # the last position predicts nothing
    assert grad[0, :2].abs().sum() == 0  # positions whose next token is a prompt token count for nothing


def test_jsd_ends_are_forward_and_reverse_kl_and_the_middle_is_symmetric():
    student, teacher, labels = _inputs()

    def loss(divergence, **options):
        return token_distillation_loss(student, teacher, labels, divergence=divergence, **options).loss

    assert loss("jsd", beta=0.0).item() == pytest.approx(loss("forward_kl").item())
    assert loss("jsd", beta=1.0).item() == pytest.approx(loss("reverse_kl").item())
    swapped = token_distillation_loss(teacher, student.detach(), labels, divergence="jsd", beta=0.5).loss
    assert loss("jsd", beta=0.5).item() == pytest.approx(swapped.item(), rel=1e-5)


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_zero_when_the_student_is_the_teacher(divergence):
    _, teacher, labels = _inputs()
    assert token_distillation_loss(teacher, teacher, labels, divergence=divergence).loss.item() == pytest.approx(
        0.0, abs=1e-6
    )


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_no_nan_without_counted_tokens_with_masked_vocabulary_or_underflow(divergence):
    student, teacher, labels = _inputs()
    none = token_distillation_loss(student, teacher, torch.full_like(labels, -100), divergence=divergence)
    assert none.loss.item() == 0.0 and none.tokens.item() == 0
    (grad,) = torch.autograd.grad(none.loss, student)
    assert grad.abs().sum() == 0
    masked_student, masked_teacher = student.detach().clone(), teacher.clone()
    masked_student[..., -2:] = -math.inf  # entries neither model may produce
    masked_teacher[..., -2:] = -math.inf
    masked_student.requires_grad_()
    labels = labels.clamp(max=V - 3)
    peaked = masked_teacher * 1e4  # probabilities that underflow to 0 in float32
    for teacher_logits in (masked_teacher, peaked):
        got = token_distillation_loss(masked_student, teacher_logits, labels, divergence=divergence, alpha=0.5)
        (grad,) = torch.autograd.grad(got.loss, masked_student)
        assert torch.isfinite(got.loss) and torch.isfinite(grad).all()


def test_per_token_values_are_sums_over_the_vocabulary():
    student, teacher = torch.zeros(1, 4), torch.tensor([[math.log(3.0), 0.0, 0.0, 0.0]])  # p = (1/2, 1/6, 1/6, 1/6)
    expected = 0.5 * math.log(2) + 3 * (1 / 6) * math.log(2 / 3)
    assert token_divergence(student, teacher, "forward_kl").item() == pytest.approx(expected)
    assert token_divergence(student, teacher, "tv").item() == pytest.approx(0.25)


# --- the fused form --------------------------------------------------------------------------------------------


def _hidden(seed: int = 0, bias: bool = True):
    torch.manual_seed(seed)
    student_head, teacher_head = torch.nn.Linear(5, V, bias=bias), torch.nn.Linear(8, V, bias=bias)
    student_hidden = torch.randn(B, S, 5, requires_grad=True)
    teacher_hidden = torch.randn(B, S, 8)
    _, _, labels = _inputs(seed)
    return student_hidden, student_head, teacher_hidden, teacher_head, labels


def _fused(loss, student_hidden, student_head, teacher_hidden, teacher_head, labels, num_tokens=None, **options):
    return loss(
        student_hidden,
        teacher_hidden,
        labels,
        num_tokens,
        student_head=student_head,
        teacher_head=teacher_head,
        fused=True,
        **options,
    )


@pytest.mark.parametrize("divergence", DIVERGENCES)
@pytest.mark.parametrize("chunk_size", [1, 4, 1000])
@pytest.mark.parametrize("bias", [True, False])
def test_the_fused_form_equals_the_plain_one_in_value_and_gradients(divergence, chunk_size, bias):
    student_hidden, student_head, teacher_hidden, teacher_head, labels = _hidden(bias=bias)
    loss = TokenKD(divergence, alpha=0.3, temperature=1.5)
    plain = loss(student_head(student_hidden), teacher_head(teacher_hidden).detach(), labels)
    trained = [student_hidden, *student_head.parameters()]
    expected = torch.autograd.grad(plain.loss, trained)
    fused = _fused(loss, student_hidden, student_head, teacher_hidden, teacher_head, labels, chunk_size=chunk_size)
    got = torch.autograd.grad(fused.loss, trained)
    torch.testing.assert_close(fused.loss, plain.loss, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(fused.soft, plain.soft.detach(), rtol=1e-5, atol=1e-6)
    assert fused.tokens.item() == plain.tokens.item()
    for a, b in zip(got, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_the_fused_form_gives_the_teacher_no_gradient_and_scales_by_the_incoming_one():
    student_hidden, student_head, teacher_hidden, teacher_head, labels = _hidden()
    fused = _fused(TokenKD("reverse_kl"), student_hidden, student_head, teacher_hidden, teacher_head, labels)
    (3 * fused.loss).backward()
    assert all(p.grad is None for p in teacher_head.parameters())
    once = student_head.weight.grad.clone()
    student_head.zero_grad()
    _fused(TokenKD("reverse_kl"), student_hidden, student_head, teacher_hidden, teacher_head, labels).loss.backward()
    torch.testing.assert_close(once, 3 * student_head.weight.grad)


def test_a_vocabulary_mismatch_is_refused():
    student_hidden, student_head, teacher_hidden, _, labels = _hidden()
    with pytest.raises(LossInputError, match="share a vocabulary"):
        _fused(TokenKD(), student_hidden, student_head, teacher_hidden, torch.nn.Linear(8, V + 1), labels)
    with pytest.raises(LossInputError, match="share a vocabulary"):
        token_distillation_loss(torch.randn(1, 3, V), torch.randn(1, 3, V + 1), torch.zeros(1, 3, dtype=torch.long))


@pytest.mark.parametrize("fused", [False, True])
def test_from_hidden_states_only_the_first_vocab_ids_of_padded_heads_are_compared(fused):
    """TokenKD's one call, as TokenDistiller and DistillationTrainer make it: heads two rows longer than the
    vocabulary compared, fused or not, give the loss of the logits cut to that vocabulary."""
    student_hidden, _, teacher_hidden, _, labels = _hidden()
    torch.manual_seed(1)
    student_head, teacher_head = torch.nn.Linear(5, V + 2), torch.nn.Linear(8, V + 2)
    loss = TokenKD("jsd", alpha=0.3, temperature=1.5)
    plain = loss(student_head(student_hidden)[..., :V], teacher_head(teacher_hidden)[..., :V].detach(), labels)
    expected = torch.autograd.grad(plain.loss, [student_hidden, student_head.weight])
    got = loss(
        student_hidden,
        teacher_hidden,
        labels,
        student_head=student_head,
        teacher_head=teacher_head,
        vocab=V,
        fused=fused,
        chunk_size=4,
    )
    torch.testing.assert_close(got.loss, plain.loss, rtol=1e-5, atol=1e-6)
    assert got.tokens.item() == plain.tokens.item()
    for a, b in zip(torch.autograd.grad(got.loss, [student_hidden, student_head.weight]), expected, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in teacher_head.parameters())


def test_the_fused_form_without_both_heads_is_refused():
    student_hidden, student_head, teacher_hidden, _, labels = _hidden()
    with pytest.raises(LossInputError, match="output layers"):
        TokenKD()(student_hidden, teacher_hidden, labels, fused=True)
    with pytest.raises(LossInputError, match="output layers"):
        TokenKD()(student_hidden, teacher_hidden, labels, student_head=student_head)


def test_the_logit_divergences_import_neither_the_fused_form_nor_the_loss_that_chooses():
    """No import cycle: token.py <- fused.py <- token_kd.py, never back (not even inside a function)."""
    import ast
    from pathlib import Path

    import distill.losses.fused
    import distill.losses.token

    for module, forbidden in ((distill.losses.token, {"fused", "token_kd"}), (distill.losses.fused, {"token_kd"})):
        tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert not {f"distill.losses.{name}" for name in forbidden} & imported, module.__name__


@pytest.mark.parametrize(
    ("option", "value"), [("alpha", 1.5), ("beta", -0.1), ("skew", 0.0), ("skew", 1.0), ("temperature", 0.0)]
)
def test_settings_out_of_range_are_refused(option, value):
    with pytest.raises((LossInputError, ValueError), match=option if option != "temperature" else "temperature"):
        TokenKD("jsd", **{option: value})


def test_the_fused_form_under_bfloat16_autocast_and_without_gradients():
    student_hidden, student_head, teacher_hidden, teacher_head, labels = _hidden()
    expected = _fused(TokenKD(), student_hidden, student_head, teacher_hidden, teacher_head, labels).loss
    with torch.autocast("cpu", dtype=torch.bfloat16):  # train.precision: bf16
        got = _fused(TokenKD(), student_hidden, student_head, teacher_hidden, teacher_head, labels).loss
    got.backward()
    assert student_head.weight.grad.dtype == torch.float32
    torch.testing.assert_close(got, expected)  # the logits stay float32
    with torch.no_grad():  # evaluation: values only
        assert _fused(TokenKD(), student_hidden, student_head, teacher_hidden, teacher_head, labels).loss == expected


# --- accumulation ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fused", [False, True])
def test_accumulating_micro_batches_gives_the_full_batchs_loss_and_gradient(fused):
    """Micro-batches with different counts of counted tokens: each divided by the step's count, they sum to the
    full batch's loss, where a mean of per-batch means would not."""
    student_hidden, student_head, teacher_hidden, teacher_head, labels = _hidden()
    loss = TokenKD("forward_kl", alpha=0.5)

    def run(rows, num_tokens=None):
        if fused:
            return _fused(
                loss, student_hidden[rows], student_head, teacher_hidden[rows], teacher_head, labels[rows], num_tokens
            )
        logits = student_head(student_hidden[rows])
        return loss(logits, teacher_head(teacher_hidden[rows]).detach(), labels[rows], num_tokens)

    full = run(slice(None))
    expected = torch.autograd.grad(full.loss, student_head.weight)
    parts = [slice(0, 1), slice(1, 3)]
    total = sum(int((labels[rows][:, 1:] != -100).sum()) for rows in parts)
    micro = [run(rows, num_tokens=total) for rows in parts]
    assert micro[0].tokens.item() != micro[1].tokens.item()
    accumulated = sum(m.loss for m in micro)
    torch.testing.assert_close(accumulated, full.loss)
    torch.testing.assert_close(torch.autograd.grad(accumulated, student_head.weight)[0], expected[0])
    naive = sum(run(rows).loss for rows in parts) / len(parts)
    assert abs(naive.item() - full.loss.item()) > 1e-3  # the trap this avoids
