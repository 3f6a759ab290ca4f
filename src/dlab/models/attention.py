"""Attention: scaled dot-product multi-head attention and the key/value cache of generation.

    attention(Q, K, V) = softmax(Q Kᵀ / √d_k + mask) V            (F.scaled_dot_product_attention)

Masks are boolean, True = may attend. Padding masks come from `tokens != pad_id`; causal masks let
position t see positions ≤ t only.
"""

from __future__ import annotations

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
