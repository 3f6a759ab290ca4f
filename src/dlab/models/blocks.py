"""Transformer building blocks shared by the encoder classifier, the encoder-decoder and GPT:
positional encodings, the feed-forward layer, the block itself, and sampling. Attention has its
own file, `attention.py`.

The positional encoding is *added* to the embeddings (the seed tutorial multiplied them, which
also zeroes the gradient wherever the encoding is 0).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dlab.models.attention import KVCache, MultiHeadAttention

__all__ = [
    "FeedForward",
    "KVCache",
    "LearnedPosition",
    "MultiHeadAttention",
    "SinusoidalPosition",
    "TransformerBlock",
    "positional_encoding",
    "sample_next",
]


class SinusoidalPosition(nn.Module):
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...), added to the input."""

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        position = torch.arange(max_len, dtype=torch.float32)[:, None]
        rate = torch.exp(
            torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model)
        )
        table = torch.zeros(max_len, d_model)
        table[:, 0::2] = torch.sin(position * rate)
        table[:, 1::2] = torch.cos(position * rate[: d_model // 2])
        self.register_buffer("table", table, persistent=False)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        _check_length(start + x.shape[1], len(self.table))
        return x + self.table[start : start + x.shape[1]].to(x.dtype)  # (B, T, D)


class LearnedPosition(nn.Module):
    """A learned vector per position, added to the input."""

    def __init__(self, d_model: int, max_len: int):
        super().__init__()
        self.table = nn.Embedding(max_len, d_model)
        nn.init.normal_(self.table.weight, std=0.02)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        _check_length(start + x.shape[1], self.table.num_embeddings)
        positions = torch.arange(start, start + x.shape[1], device=x.device)
        return x + self.table(positions)  # (B, T, D)


def _check_length(length: int, limit: int) -> None:
    if length > limit:
        from dlab.errors import InputError

        raise InputError(
            f"a sequence of {length} tokens is longer than the model's {limit} positions (data.max_length)"
        )


def positional_encoding(kind: str, d_model: int, max_len: int) -> nn.Module:
    """'sinusoidal' or 'learned'."""
    return (
        SinusoidalPosition(d_model, max_len)
        if kind == "sinusoidal"
        else LearnedPosition(d_model, max_len)
    )


class FeedForward(nn.Sequential):
    """Linear -> activation -> dropout -> linear, applied at every position."""

    def __init__(self, d_model: int, hidden: int, dropout: float, activation: str = "gelu"):
        super().__init__(
            nn.Linear(d_model, hidden),
            nn.GELU() if activation == "gelu" else nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, d_model),
        )


class TransformerBlock(nn.Module):
    """Self-attention (+ cross-attention in a decoder) + feed-forward, each with a residual and a norm.

    norm_first=True is pre-norm (GPT-2, more stable); False is the original post-norm (Vaswani et al.).
    """

    checkpoint_unit = (
        True  # train.activation_checkpointing recomputes this block in the backward pass
    )

    def __init__(
        self,
        d_model: int,
        heads: int,
        ff: int,
        dropout: float,
        norm_first: bool = True,
        cross: bool = False,
        activation: str = "gelu",
    ):
        super().__init__()
        self.norm_first = norm_first
        self.attention = MultiHeadAttention(d_model, heads, dropout)
        self.norm1 = nn.LayerNorm(d_model)
        self.cross = MultiHeadAttention(d_model, heads, dropout) if cross else None
        self.norm_cross = nn.LayerNorm(d_model) if cross else None
        self.ff = FeedForward(d_model, ff, dropout, activation)
        self.norm2 = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)

    def _residual(self, x: torch.Tensor, norm: nn.Module, sublayer) -> torch.Tensor:
        if self.norm_first:
            return x + self.drop(sublayer(norm(x)))
        return norm(x + self.drop(sublayer(x)))

    def forward(
        self,
        x: torch.Tensor,
        *,
        padding: torch.Tensor | None = None,
        causal: bool = False,
        memory: torch.Tensor | None = None,
        memory_padding: torch.Tensor | None = None,
        cache: KVCache | None = None,
        cross_cache: KVCache | None = None,
    ) -> torch.Tensor:
        x = self._residual(
            x,
            self.norm1,
            lambda h: self.attention(h, key_padding=padding, causal=causal, cache=cache),
        )
        if self.cross is not None:
            x = self._residual(
                x,
                self.norm_cross,
                lambda h: self.cross(h, memory, key_padding=memory_padding, cache=cross_cache),
            )
        return self._residual(x, self.norm2, self.ff)


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Choose the next token from (B, V) logits: greedy at temperature 0, else sampled after top-k/top-p."""
    if temperature <= 0:
        return logits.argmax(-1)
    probabilities = sampling_logits(logits, temperature, top_k, top_p).softmax(-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)


def sampling_logits(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
) -> torch.Tensor:
    """The logits `sample_next` draws from: divided by the temperature, −∞ outside the top k
    and outside the smallest set whose probability reaches top_p (float32 at least)."""
    logits = (logits if logits.dtype == torch.float64 else logits.float()) / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        ordered, order = logits.sort(dim=-1, descending=True)
        cumulative = ordered.softmax(-1).cumsum(-1)
        drop = (
            cumulative - ordered.softmax(-1) > top_p
        )  # keep the smallest set whose mass reaches top_p
        logits = logits.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
    return logits
