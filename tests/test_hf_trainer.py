"""DistillationTrainer: token-level distillation as a transformers.Trainer, unchanged by gradient accumulation."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.e2e  # every test trains whole runs with transformers.Trainer

from distill.hf import DistillationTrainer  # noqa: E402
from distill.losses.token_kd import TokenKD  # noqa: E402

VOCAB, LENGTH = 20, 12


def _gpt2(width: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = transformers.GPT2Config(
        vocab_size=VOCAB,
        n_positions=LENGTH,
        n_embd=width,
        n_layer=1,
        n_head=2,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
    )
    return transformers.GPT2LMHeadModel(config)


class Sequences(torch.utils.data.Dataset):
    """16 sequences whose prompts (label -100) differ in length: batches count different numbers of tokens."""

    def __init__(self):
        generator = torch.Generator().manual_seed(0)
        self.ids = torch.randint(VOCAB, (16, LENGTH), generator=generator)
        self.labels = self.ids.clone()
        for row in range(16):
            self.labels[row, : (row * 5) % (LENGTH - 2)] = -100  # row 0 counts its first label: shifted away

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def _train(tmp_path, batch: int, accumulate: int, fused: bool) -> tuple[torch.nn.Module, torch.nn.Module, list]:
    student, teacher = _gpt2(8, seed=1), _gpt2(16, seed=2)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / f"out{batch}"),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulate,
        max_steps=2,
        learning_rate=0.5,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        seed=0,
        dataloader_drop_last=True,
    )
    trainer = DistillationTrainer(
        model=student,
        teacher=teacher,
        loss=TokenKD("reverse_kl", alpha=0.3),
        fused=fused,
        args=args,
        train_dataset=Sequences(),
    )
    trainer.train()
    return student, teacher, trainer.state.log_history


@pytest.mark.parametrize("fused", [True, False])
def test_accumulation_of_four_batches_gives_the_step_of_one_batch_of_four(tmp_path, fused):
    whole, _, whole_logs = _train(tmp_path, batch=4, accumulate=1, fused=fused)
    accumulated, _, logs = _train(tmp_path, batch=1, accumulate=4, fused=fused)
    for a, b in zip(whole.parameters(), accumulated.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    steps = [entry for entry in logs if "kd" in entry]
    assert len(steps) == 2 and all("ce" in entry for entry in steps)
    for got, expected in zip(steps, [entry for entry in whole_logs if "kd" in entry], strict=True):
        assert got["kd"] == pytest.approx(expected["kd"], rel=1e-4)
        assert got["loss"] == pytest.approx(expected["loss"], rel=1e-4)


def test_the_teacher_learns_nothing_and_the_student_does(tmp_path):
    student, teacher, _ = _train(tmp_path, batch=4, accumulate=1, fused=True)
    for trained, fresh in ((teacher, _gpt2(16, seed=2)), (student, _gpt2(8, seed=1))):
        pairs = zip(trained.state_dict().values(), fresh.state_dict().values(), strict=True)
        same = all(torch.equal(a, b) for a, b in pairs)
        assert same == (trained is teacher)
