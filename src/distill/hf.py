"""`DistillationTrainer`: token-level distillation inside a `transformers.Trainer` pipeline (`pip install -e
".[hf]"`), for users whose training already runs on one.

    trainer = DistillationTrainer(model=student, teacher=teacher, loss=TokenKD("reverse_kl", alpha=0.5),
                                  args=TrainingArguments(...), train_dataset=..., data_collator=...)
    trainer.train()

Batches hold `input_ids` and `labels` (-100 where no loss counts), as for causal LM fine-tuning. The loss is
`TokenKD`'s, from hidden states chunk by chunk (`fused=True`, the default) or from the models' own logits,
normalised by the counted tokens of the whole accumulation step, so `gradient_accumulation_steps` leaves it
unchanged. Each term (`kd`, `ce`) is logged beside `loss`. The teacher is frozen and never wrapped or saved.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import torch
from torch import Tensor, nn

from distill.errors import DistillError
from distill.losses.token_kd import TokenKD

try:
    from transformers import Trainer
except ImportError:  # the module still imports, and says what to install when used
    Trainer = object


class DistillationTrainer(Trainer):
    def __init__(
        self,
        *args: Any,
        teacher: nn.Module,
        loss: TokenKD | None = None,
        fused: bool = True,
        chunk_size: int | None = None,
        **kwargs: Any,
    ):
        if Trainer is object:
            raise DistillError("DistillationTrainer needs the transformers package: pip install 'distill[hf]'")
        super().__init__(*args, **kwargs)
        self.teacher = teacher.eval().requires_grad_(False)
        self.token_loss = loss or TokenKD()
        self.fused, self.chunk_size = fused, chunk_size
        self.loss_is_scaled_for_ga = True  # compute_loss divides by the step's tokens itself
        self._terms: dict[str, list[float]] = defaultdict(list)

    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: torch.device) -> tuple[list, Any]:
        """The step's batches and the tokens its loss counts: labels after the causal shift, not before."""
        batches, _ = super().get_batch_samples(epoch_iterator, num_batches, device)
        counted = torch.tensor(sum(int((batch["labels"][:, 1:] != -100).sum()) for batch in batches), device=device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:  # as Trainer does: every rank's
            counted = self.accelerator.gather(counted).sum()
        return batches, counted

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Tensor | int | None = None,
    ) -> Tensor | tuple[Tensor, Any]:
        ids, labels = inputs["input_ids"], inputs["labels"]
        mask = inputs.get("attention_mask")
        self.teacher.to(ids.device)
        student, student_head = _outputs(model, ids, mask, self.fused)
        with torch.no_grad():
            teacher, teacher_head = _outputs(self.teacher, ids, mask, self.fused)
        out = self.token_loss(
            student,
            teacher,
            labels,
            num_items_in_batch,
            student_head=student_head,
            teacher_head=teacher_head,
            fused=self.fused,
            chunk_size=self.chunk_size,
        )
        if model.training:  # evaluation's values are Trainer's to report
            self._terms["kd"].append(out.soft.detach())
            self._terms["ce"].append(out.hard.detach())
        return (out.loss, {"kd": out.soft, "ce": out.hard}) if return_outputs else out.loss

    def log(self, logs: dict[str, float], *args: Any, **kwargs: Any) -> None:
        """Trainer's log, with the mean of each loss term since the last one (summed over a step's batches)."""
        steps = max(len(self._terms["kd"]) / self.args.gradient_accumulation_steps, 1)
        for name, values in self._terms.items():
            if values:
                logs[name] = torch.stack(values).sum().item() / steps  # one sync, at a log
        self._terms.clear()
        super().log(logs, *args, **kwargs)


def _outputs(model: nn.Module, ids: Tensor, mask: Tensor | None, fused: bool) -> tuple[Tensor, nn.Linear | None]:
    """What the loss reads of `model`: for the fused form its (B, S, H) final hidden states and its output
    layer; else its (B, S, V) logits from its own forward, which may post-process them (soft-capping, a scale)
    where `head(hidden)` would not."""
    if fused:
        return _base(model)(input_ids=ids, attention_mask=mask).last_hidden_state, _head(model)
    return model(input_ids=ids, attention_mask=mask).logits, None


def _unwrapped(model: nn.Module) -> nn.Module:
    return getattr(model, "module", model)  # DDP or DataParallel


def _base(model: nn.Module) -> nn.Module:
    return _unwrapped(model).base_model


def _head(model: nn.Module) -> nn.Linear:
    return _unwrapped(model).get_output_embeddings()
