"""What a language-model stage trains: a model on its next-token cross-entropy (`NextToken`: the teacher and
the student alone), or a student learning every token's distribution from a frozen teacher (`TokenDistiller`).

Both report means over the batch's counted tokens and the count itself (`tokens`), so the training loop
weighs batches, and the micro-batches of an accumulation step, by their tokens.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.cache.tokens import TokenCache, cached_views
from distill.data.text import UNLABELLED
from distill.errors import DistillError
from distill.losses.attention import attention_kl_loss
from distill.losses.token import combine, shift_for_next_token, token_divergence
from distill.losses.token_kd import TokenKD
from distill.taps import make_adapter


def next_token_loss(logits: Tensor, ids_labels: Tensor) -> tuple[Tensor, Tensor]:
    """Mean next-token cross-entropy over the counted tokens of (B, S, V) logits and (B, S) labels, and the
    count (0 counted gives 0, not NaN)."""
    logits, labels = shift_for_next_token(logits, ids_labels)
    tokens = (labels != UNLABELLED).sum()
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), reduction="sum")
    return total / tokens.clamp_min(1), tokens


class NextToken(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        loss, tokens = next_token_loss(self.model(batch["input"]), batch["label"])
        return {"loss": loss, "tokens": tokens}


class TokenDistiller(nn.Module):
    """Student + frozen teacher + a `TokenKD`, and optionally two more terms: `hidden_weight` times the MSE
    between the student's final hidden states, mapped to the teacher's width by a linear adapter, and the
    teacher's; `attention_weight` times the KL between their last layers' head-averaged attention maps
    (MiniLM). Both over the positions whose next token counts.

    The teacher is held apart (not a submodule): its weights stay out of the optimizer and the checkpoints;
    the adapter trains with the student and is not saved with it. `vocab` ids are compared (fewer than the
    output layers hold when `method.shared_vocab` lets padded vocabularies meet)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        loss: TokenKD,
        *,
        vocab: int,
        fused: bool,
        chunk_size: int | None = None,
        hidden_weight: float = 0.0,
        attention_weight: float = 0.0,
        cache: TokenCache | None = None,
    ):
        super().__init__()
        self.cache = cache  # training batches read the teacher's top-k from it
        self.student, self.loss = student, loss
        self._teacher = (teacher.eval().requires_grad_(False),)
        self.vocab, self.fused, self.chunk_size = vocab, fused, chunk_size
        self.hidden_weight, self.attention_weight = hidden_weight, attention_weight
        if fused:
            check_fusable(student, teacher)
        if hidden_weight:
            widths = torch.Size([1, student.head.weight.shape[1]]), torch.Size([1, teacher.head.weight.shape[1]])
            self.adapter = make_adapter("auto", *widths, "method.hidden_weight")

    @property
    def teacher(self) -> nn.Module:
        return self._teacher[0]

    def shard_frozen(self, shard: Callable[[nn.Module], None]) -> None:
        """The teacher's blocks sharded (train.shard)."""
        shard(self.teacher)

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        ids, labels = batch["input"], batch["label"]
        if self.cache is not None and self.training:
            return self._from_cache(ids, labels, batch["index"])
        if self.teacher.head.weight.device != ids.device:  # moved once (a sharded teacher's blocks are in place)
            self.teacher.to(ids.device)
        student_hidden, student_maps = self._inner(self.student, ids)
        with torch.no_grad():
            teacher_hidden, teacher_maps = self._inner(self.teacher, ids)
        out = self.loss(
            student_hidden,
            teacher_hidden,
            labels,
            student_head=self.student.head,
            teacher_head=self.teacher.head,
            vocab=self.vocab,
            fused=self.fused,
            chunk_size=self.chunk_size,
        )
        parts, loss = {"kd": out.soft, "ce": out.hard}, out.loss
        counted = labels[:, 1:] != UNLABELLED  # (B, S-1): positions whose next token the loss counts
        if self.hidden_weight:
            difference = self.adapter(student_hidden[:, :-1][counted]) - teacher_hidden[:, :-1][counted].float()
            parts["hidden"] = difference.pow(2).sum() / max(difference.numel(), 1)  # 0, not NaN, with none counted
            loss = loss + self.hidden_weight * parts["hidden"]
        if self.attention_weight:  # the rows of counted positions: (N, heads, 1, S) each
            rows = [maps[:, :, :-1].transpose(1, 2)[counted].unsqueeze(2) for maps in (student_maps, teacher_maps)]
            parts["attention"] = attention_kl_loss(rows[0], rows[1].float(), heads="mean")
            loss = loss + self.attention_weight * parts["attention"]
        return {"loss": loss, **parts, "tokens": out.tokens}

    def _from_cache(self, ids: Tensor, labels: Tensor, index: Tensor) -> dict[str, Tensor]:
        """The loss with the teacher's side read from the top-k cache (see `distill.cache.tokens`)."""
        log_probs = self.student(ids)[..., : self.vocab].float().log_softmax(-1)  # (B, S, V), once for both terms
        student_view, teacher_view = cached_views(log_probs, self.cache, index)  # (B, S, k [+ 1])
        log_probs, targets = shift_for_next_token(log_probs, labels)
        settings = {key: value for key, value in self.loss.settings.items() if key != "ignore_index"}
        counted = targets != self.loss.ignore_index  # (B, S-1)
        soft = token_divergence(student_view[:, :-1][counted], teacher_view[:, :-1][counted], **settings).sum()
        hard = F.nll_loss(log_probs[counted], targets[counted], reduction="sum")
        out = combine(soft, hard, counted.sum(), alpha=self.loss.alpha, num_tokens=None)
        return {"loss": out.loss, "kd": out.soft, "ce": out.hard, "tokens": out.tokens}

    def _inner(self, model: nn.Module, ids: Tensor) -> tuple[Tensor, Tensor | None]:
        """Final hidden states, and the last layer's attention weights when the attention term needs them."""
        if self.attention_weight:
            return model.hidden_and_attention(ids)
        return model.hidden(ids), None


def check_fusable(student: nn.Module, teacher: nn.Module) -> None:
    """The fused loss computes logits as `head(hidden)` from the head's plain weight: refuse models where that
    is not their logits."""
    if not all(getattr(model, "fusable", True) for model in (student, teacher)):
        raise DistillError(
            "a Hugging Face model here post-processes its logits (soft-capping or a scale), which "
            "the fused loss from hidden states would skip; set method.fused: false"
        )
    if hasattr(student.head, "lora_A"):
        raise DistillError(
            "student.lora adapts the output layer, whose plain weight the fused loss reads; leave "
            "it out of student.lora.targets or set method.fused: false"
        )


class OnPolicy(nn.Module):
    """On-policy distillation (GKD; Agarwal et al., 2024): with probability `student_share` a training batch's
    completions are replaced by the student's own samples (prompt tokens kept and masked out of the loss), so
    the teacher grades every token the student wrote; then `distiller` as usual. Samples use the key-value
    cache, one forward per token, in eval mode and without gradients; evaluation uses the data's completions."""

    def __init__(
        self,
        distiller: TokenDistiller,
        *,
        student_share: float,
        temperature: float,
        max_new_tokens: int,
        top_k: int | None,
        pad_id: int,
        context: int,
    ):
        super().__init__()
        self.distiller, self.context = distiller, context  # `context`: the run's, which both models take
        self.student_share, self.temperature, self.max_new_tokens, self.top_k = (
            student_share,
            temperature,
            max_new_tokens,
            top_k,
        )
        self.pad_id = pad_id

    def forward(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        if self.training and torch.rand(()) < self.student_share:
            batch = self.sampled(batch)
        return self.distiller(batch)

    def sampled(self, batch: dict[str, Tensor]) -> dict[str, Tensor]:
        """The batch with each row's completion written by the student: rows of one prompt length sampled
        together, right-padded (label -100) to the longest."""
        ids, labels = batch["input"], batch["label"]
        prompt_lengths = (labels != UNLABELLED).int().argmax(1)  # the first counted token ends the prompt
        student = self.distiller.student
        end_id = getattr(student, "end_id", None)
        mode = student.training
        student.eval()  # sampling without dropout
        rows: list[tuple[Tensor, Tensor]] = [(ids[i], labels[i]) for i in range(len(ids))]
        try:
            for length in prompt_lengths.unique().tolist():
                new_tokens = min(self.max_new_tokens, self.context - length)
                group = (prompt_lengths == length).nonzero().squeeze(1)
                if length == 0 or new_tokens < 1:  # no prompt, or no room after it: the data's row stays
                    continue
                new = student.generate(ids[group, :length], new_tokens, temperature=self.temperature, top_k=self.top_k)
                tokens = new.tolist() if end_id is not None else None  # one copy to the host for every row's end
                sampled_rows = zip(group.tolist(), new.clone(), strict=True)  # clone: out of inference mode
                for j, (row, sampled) in enumerate(sampled_rows):
                    if tokens is not None:
                        sampled = sampled[: until_end(tokens[j], end_id)]
                    prompt = ids[row, :length]
                    rows[row] = (
                        torch.cat([prompt, sampled]),
                        torch.cat([torch.full_like(prompt, UNLABELLED), sampled]),
                    )
        finally:
            student.train(mode)
        longest = max(len(row_ids) for row_ids, _ in rows)
        padded = torch.full((len(rows), longest), self.pad_id, dtype=ids.dtype, device=ids.device)
        targets = torch.full_like(padded, UNLABELLED)
        for i, (row_ids, row_labels) in enumerate(rows):
            padded[i, : len(row_ids)], targets[i, : len(row_labels)] = row_ids, row_labels
        return {**batch, "input": padded, "label": targets}


def until_end(tokens: list[int], end_id: int | None) -> int:
    """How many of a sample's `tokens` count: through the first end token (what follows is padding)."""
    return tokens.index(end_id) + 1 if end_id is not None and end_id in tokens else len(tokens)
