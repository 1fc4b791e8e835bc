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


class GPT(nn.Module):
    def __init__(
        self, vocab_size: int, *, context: int = 128, layers: int = 4, heads: int = 4, width: int = 128,
        dropout: float = 0.0,
    ):  # fmt: skip
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


def _init(module: nn.Module) -> None:
    if isinstance(module, nn.Linear | nn.Embedding):
        nn.init.normal_(module.weight, std=0.02)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)
