"""Transformer building blocks shared by the encoder classifier, the encoder-decoder and GPT.

    attention(Q, K, V) = softmax(Q Kᵀ / √d_k + mask) V            (F.scaled_dot_product_attention)

Masks are boolean, True = may attend. Padding masks come from `tokens != pad_id`; causal masks let
position t see positions ≤ t only. The positional encoding is *added* to the embeddings (the seed
tutorial multiplied them, which also zeroes the gradient wherever the encoding is 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class KVCache:
    """Keys and values of the positions generated so far, for one attention layer."""

    keys: torch.Tensor | None = None  # (B, heads, S, head_dim)
    values: torch.Tensor | None = None

    @property
    def length(self) -> int:
        """Positions cached."""
        return 0 if self.keys is None else self.keys.shape[2]

    def append(self, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add this step's keys and values; return all of them."""
        if self.keys is not None:
            keys, values = (
                torch.cat([self.keys, keys], dim=2),
                torch.cat([self.values, values], dim=2),
            )
        self.keys, self.values = keys, values
        return keys, values

    def reorder(self, index: torch.Tensor) -> None:
        """Keep the rows `index` (beam search: each surviving beam takes its parent's history)."""
        if self.keys is not None:
            self.keys, self.values = self.keys[index], self.values[index]


class MultiHeadAttention(nn.Module):
    """Multi-head attention with separate Q, K, V projections (easy to compare with nn.MultiheadAttention)."""

    def __init__(self, d_model: int, heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if d_model % heads:
            from dlab.errors import RecipeError

            raise RecipeError(f"model.heads: d_model {d_model} is not divisible by {heads} heads")
        self.heads, self.head_dim, self.dropout = heads, d_model // heads, dropout
        self.record_weights = False  # reports switch this on to draw attention maps
        self.last_weights: torch.Tensor | None = (
            None  # (B, heads, T, S) of the last call, when recording
        )
        self.query = nn.Linear(d_model, d_model, bias=bias)
        self.key = nn.Linear(d_model, d_model, bias=bias)
        self.value = nn.Linear(d_model, d_model, bias=bias)
        self.out = nn.Linear(d_model, d_model, bias=bias)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, _ = x.shape
        return x.view(batch, length, self.heads, self.head_dim).transpose(1, 2)  # (B, h, T, hd)

    def forward(
        self,
        query: torch.Tensor,
        key_value: torch.Tensor | None = None,
        *,
        key_padding: torch.Tensor | None = None,
        causal: bool = False,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """Attend from `query` (B, T, D) to `key_value` (B, S, D; default: self-attention).

        key_padding: (B, S) bool, True where the key is padding. cache: for self-attention, keys
        and values of earlier positions (generation; the query positions come after them); for
        cross-attention, the source's keys and values, computed once.
        """
        source = query if key_value is None else key_value
        q = self._split(self.query(query))  # (B, h, T, hd)
        past = 0
        if cache is not None and key_value is not None and cache.keys is not None:
            k, v = (
                cache.keys,
                cache.values,
            )  # cross-attention: the source does not change while decoding
        else:
            k, v = self._split(self.key(source)), self._split(self.value(source))  # (B, h, S, hd)
            if cache is not None and key_value is not None:
                cache.keys, cache.values = k, v
            elif cache is not None:
                past = cache.length
                k, v = cache.append(k, v)
        mask = None
        if key_padding is not None:
            mask = ~key_padding[:, None, None, :]  # (B, 1, 1, S)
        if causal and (mask is not None or past or q.shape[2] != k.shape[2]):
            t, s = q.shape[2], k.shape[2]
            allowed = torch.ones(t, s, dtype=torch.bool, device=q.device).tril(
                diagonal=s - t
            )  # (T, S)
            mask = allowed if mask is None else mask & allowed
            causal = False
        if self.record_weights:
            self.last_weights = self._weights(q, k, mask, causal).detach()
        dropout = self.dropout if self.training else 0.0
        attended = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal
        )
        batch, _, length, _ = attended.shape
        return self.out(attended.transpose(1, 2).reshape(batch, length, -1))  # (B, T, D)

    def _weights(
        self, q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, causal: bool
    ) -> torch.Tensor:
        """softmax(Q Kᵀ / √d + M), computed explicitly (SDPA does not return it)."""
        scores = q @ k.transpose(-1, -2) / self.head_dim**0.5  # (B, h, T, S)
        if causal:
            mask = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).tril()
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(-1)


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
    logits = logits.float() / temperature
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
    probabilities = logits.softmax(-1)
    return torch.multinomial(probabilities, 1, generator=generator).squeeze(-1)
