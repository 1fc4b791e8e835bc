import pytest
import torch
from torch.utils.data import DataLoader

from conftest import blobs, tiny_net
from distill import Distiller, DistillError, Supervised, losses
from distill.train import evaluate
from distill.train.steps import SETUP_ROWS


def batch(n=4, in_features=8, num_classes=3):
    return {"input": torch.randn(n, in_features), "label": torch.randint(0, num_classes, (n,))}


def test_forward_returns_the_loss_and_each_part(student, teacher):
    d = Distiller(student, teacher, [losses.KD(temperature=2.0, alpha=0.5)])
    out = d(batch())
    assert set(out) == {"loss", "kd", "accuracy"}  # training: the teacher's side is left for evaluation
    assert set(d.eval()(batch())) == {"loss", "kd", "accuracy", "teacher_accuracy", "agreement"}
    d.train()
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    torch.testing.assert_close(out["loss"], out["kd"])


def test_weights_scale_each_term_and_repeated_terms_get_names(student, teacher):
    kd1, kd2 = losses.KD(temperature=2.0, alpha=0.0, weight=0.25), losses.KD(temperature=4.0, alpha=0.0, weight=2.0)
    d = Distiller(student, teacher, [kd1, kd2])
    out = d(batch())
    assert {"kd", "kd_2"} <= set(out)
    torch.testing.assert_close(out["loss"], 0.25 * out["kd"] + 2.0 * out["kd_2"])


def test_gradients_reach_the_student_and_never_the_teacher(student, teacher):
    teacher_before = [p.clone() for p in teacher.parameters()]
    d = Distiller(student, teacher, [losses.KD()])
    d(batch())["loss"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(a, b) for a, b in zip(teacher_before, teacher.parameters(), strict=True))


def test_the_teacher_is_not_part_of_the_trainable_module(student, teacher):
    d = Distiller(student, teacher, [losses.KD()])
    assert {id(p) for p in d.parameters()} == {id(p) for p in student.parameters()}
    assert all(k.startswith("student.") for k in d.state_dict())
    d.train()
    assert not d.teacher.model.training


def test_bf16_teacher_leaves_the_callers_teacher_in_float32(student, teacher):
    d = Distiller(student, teacher, [losses.KD()], teacher_dtype=torch.bfloat16)
    out = d(batch())
    assert torch.isfinite(out["loss"])
    assert next(teacher.parameters()).dtype == torch.float32
    assert next(d.teacher.model.parameters()).dtype == torch.bfloat16


def test_logit_shape_mismatch_is_a_clear_error(student):
    d = Distiller(student, tiny_net(num_classes=5), [losses.KD()])
    with pytest.raises(DistillError, match=r"student logits \(4, 3\) and teacher logits \(4, 5\)"):
        d(batch())


def test_a_distiller_needs_terms(student, teacher):
    with pytest.raises(DistillError, match="at least one loss term"):
        Distiller(student, teacher, [])


@pytest.mark.e2e
def test_fit_trains_the_student_towards_the_teacher(student, teacher, loaders):
    train, val = loaders
    from distill.train import TrainOptions, fit

    fit(Supervised(teacher), train, val, TrainOptions(epochs=15, optimizer="adamw", lr=0.02, progress=False))
    d = Distiller(student, teacher, [losses.KD(temperature=2.0, alpha=0.5)])
    history = d.fit(train, val, epochs=15, optimizer="adamw", lr=0.02, progress=False)
    last = history.epochs[-1]
    assert last["val/teacher_accuracy"] > 0.9
    assert last["val/agreement"] > 0.8
    assert history.epochs[-1]["train/kd"] < history.epochs[0]["train/kd"]


def test_a_term_may_not_take_a_reported_name(student, teacher):
    class Accuracy(torch.nn.Module):
        kind = "logits"
        weight = 1.0

        def forward(self, s, t, y):
            return s.sum()

    with pytest.raises(DistillError, match="may not be named 'accuracy'"):
        Distiller(student, teacher, [Accuracy()])


def test_a_bf16_teacher_keeps_token_ids_integers():
    vocab, classes = 1000, 3
    teacher = torch.nn.Sequential(torch.nn.Embedding(vocab, 8), torch.nn.Flatten(), torch.nn.Linear(16, classes))
    student = torch.nn.Sequential(torch.nn.Embedding(vocab, 4), torch.nn.Flatten(), torch.nn.Linear(8, classes))
    d = Distiller(student, teacher, [losses.KD()], teacher_dtype=torch.bfloat16)
    ids = torch.tensor([[999, 513], [1, 2]])  # 999 and 513 are not exact in bfloat16
    out = d({"input": ids, "label": torch.tensor([0, 1])})
    assert torch.isfinite(out["loss"])


def test_a_live_teacher_runs_on_the_validation_rows_once_a_run():
    train, val = blobs()
    teacher, rows = tiny_net(hidden=32), []
    teacher.register_forward_hook(lambda module, inputs, output: rows.append(len(inputs[0])))
    distiller = Distiller(tiny_net(hidden=8), teacher, [losses.KD(temperature=2.0, alpha=0.5)])
    history = distiller.fit(DataLoader(train, batch_size=16, shuffle=True), DataLoader(val, batch_size=32), epochs=3)
    assert sum(rows) == 3 * len(train) + len(val) + SETUP_ROWS  # and the sizing forward's few rows
    agreement = [record["val/agreement"] for record in history.epochs]
    distiller.teacher._remembered.clear()  # computed afresh, the validation figures are the same
    assert evaluate(distiller, DataLoader(val, batch_size=32), torch.device("cpu"))["val/agreement"] == agreement[-1]


def test_a_remembered_teacher_output_is_not_served_for_other_rows_under_the_same_indices():
    train, val = blobs()
    distiller = Distiller(tiny_net(hidden=8), tiny_net(hidden=32), [losses.KD(temperature=2.0, alpha=0.5)]).eval()
    batch = next(iter(DataLoader(val, batch_size=8)))
    other = {**batch, "input": next(iter(DataLoader(train, batch_size=8)))["input"]}  # indices 0..7 of both
    first, _ = distiller.teacher(batch, remember=True)
    assert torch.equal(distiller.teacher(other, remember=True)[0], distiller.teacher(other)[0])
    assert not torch.equal(first, distiller.teacher(other)[0])
