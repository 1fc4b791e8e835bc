"""A small GPT: decoder-only transformer for next-token prediction, the LM demo's and tests' model.

Pre-norm blocks of causal self-attention and a 4x GELU MLP, learned positions, a final LayerNorm and an output
layer tied to the token embedding (as GPT-2). `forward(ids)` gives (B, S, V) logits; `hidden(ids)` the final
hidden states (B, S, width) and `head` the output layer, which the fused token loss takes instead of logits;
`hidden_and_attention(ids)` also the last layer's attention weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Cache = tuple[Tensor, Tensor]  # one layer's keys and values so far: (B, heads, length, head width) each


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention. With `record` set, the attention weights are computed explicitly and
    kept in `weights` (B, heads, S, S) for attention-map distillation; otherwise the fused kernel runs."""

    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.dropout = heads, dropout
        self.qkv = nn.Linear(width, 3 * width)
        self.out = nn.Linear(width, width)
        self.record, self.weights = False, None

    def forward(self, x: Tensor) -> Tensor:
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        dropout = self.dropout if self.training else 0.0
        if self.record:
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (B, heads, S, S)
            future = torch.ones(length, length, dtype=torch.bool, device=x.device).triu(1)
            self.weights = scores.masked_fill(future, -math.inf).softmax(-1)
            attended = F.dropout(self.weights, dropout, self.training) @ v
        else:
            attended = F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout)  # (B, heads, S, d)
        return self.out(attended.transpose(1, 2).reshape(batch, length, width))

    def step(self, x: Tensor, past: Cache | None) -> tuple[Tensor, Cache]:
        """Attention of new positions `x` (B, T, width) over the cached keys and values of earlier ones and over
        each other (causally); returns the output and the cache extended by them. Inference only."""
        batch, length, width = x.shape
        q, k, v = self.qkv(x).view(batch, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        # a new position sees every cached one; among several new ones (the prompt), the causal mask holds
        attended = F.scaled_dot_product_attention(q, k, v, is_causal=past is None and length > 1)
        return self.out(attended.transpose(1, 2).reshape(batch, length, width)), (k, v)


class Block(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = CausalSelfAttention(width, heads, dropout)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width), nn.Dropout(dropout)
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))

    def step(self, x: Tensor, past: Cache | None) -> tuple[Tensor, Cache]:
        attended, cache = self.attention.step(self.norm1(x), past)
        x = x + attended
        return x + self.mlp(self.norm2(x)), cache


class GPT(nn.Module):
    def __init__(
        self,
        vocab_size: int,
        *,
        context: int = 128,
        layers: int = 4,
        heads: int = 4,
        width: int = 128,
        dropout: float = 0.0,
    ):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} must be a multiple of heads {heads}")
        self.vocab_size, self.context = vocab_size, context
        self.tokens = nn.Embedding(vocab_size, width)
        self.positions = nn.Embedding(context, width)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, dropout) for _ in range(layers))
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab_size, bias=False)
        self.head.weight = self.tokens.weight  # tied
        self.apply(_init)

    def hidden(self, ids: Tensor) -> Tensor:
        """(B, S) token ids -> (B, S, width) final hidden states."""
        if ids.shape[1] > self.context:
            raise ValueError(f"a sequence of {ids.shape[1]} tokens is longer than the model's context {self.context}")
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.drop(self.tokens(ids) + self.positions(positions))
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def hidden_and_attention(self, ids: Tensor) -> tuple[Tensor, Tensor]:
        """The final hidden states and the last layer's attention weights (B, heads, S, S)."""
        attention = self.blocks[-1].attention
        attention.record = True
        try:
            return self.hidden(ids), attention.weights
        finally:
            attention.record, attention.weights = False, None

    def forward(self, ids: Tensor) -> Tensor:
        return self.head(self.hidden(ids))  # (B, S, V)

    @torch.inference_mode()
    def generate(
        self,
        prompts: Tensor,
        max_new_tokens: int,
        *,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Sample `max_new_tokens` after each of the (B, P) `prompts` (of one length), with a cache of keys and
        values: one forward of one token per new token. Temperature 0 is greedy. Returns the (B, N) new ids."""
        if prompts.shape[1] + max_new_tokens > self.context:
            raise ValueError(
                f"a prompt of {prompts.shape[1]} tokens and {max_new_tokens} new ones pass the "
                f"model's context {self.context}"
            )
        caches: list[Cache | None] = [None] * len(self.blocks)
        ids, position, new = prompts, 0, []
        for _ in range(max_new_tokens):
            positions = torch.arange(position, position + ids.shape[1], device=ids.device)
            x = self.tokens(ids) + self.positions(positions)
            for i, block in enumerate(self.blocks):
                x, caches[i] = block.step(x, caches[i])
            logits = self.head(self.norm(x[:, -1]))  # (B, V)
            position += ids.shape[1]
            ids = sample(logits, temperature=temperature, top_k=top_k, generator=generator)[:, None]
            new.append(ids)
        return torch.cat(new, dim=1)


def sample(logits: Tensor, *, temperature: float, top_k: int | None, generator: torch.Generator | None) -> Tensor:
    """(B, V) logits -> (B,) ids: the most likely at temperature 0, else drawn from softmax(logits / T), among
    the `top_k` most likely when given."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, -math.inf)
    return torch.multinomial(logits.softmax(-1), 1, generator=generator).squeeze(1)


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
