"""Scaled dot-product attention and multi-head attention.

Attention(Q, K, V) = softmax(Q Kᵀ / √d_k + M) V,   M = 0 where allowed, -∞ where masked
MultiHead(q, k, v) = Concat(head_1 … head_h) W_o,   head_i = Attention(q W_q^i, k W_k^i, v W_v^i)
"""

from __future__ import annotations

import math

import numpy as np

from dlab.scratch.layers import linear_backward, linear_forward, softmax, softmax_backward

Array = np.ndarray


def attention_forward(
    q: Array, k: Array, v: Array, mask: Array | None = None
) -> tuple[Array, tuple]:
    """q (..., T, d), k (..., S, d), v (..., S, dv), mask (..., T, S) bool with True = may attend."""
    scale = 1 / math.sqrt(q.shape[-1])
    scores = (q @ np.swapaxes(k, -1, -2)) * scale  # (..., T, S)
    if mask is not None:
        scores = np.where(mask, scores, -np.inf)
    weights = softmax(scores)
    return weights @ v, (q, k, v, weights, scale)


def attention_backward(dy: Array, cache: tuple) -> tuple[Array, Array, Array]:
    """dq, dk, dv from the upstream gradient dy (..., T, dv)."""
    q, k, v, weights, scale = cache
    dv = np.swapaxes(weights, -1, -2) @ dy
    dscores = (
        softmax_backward(dy @ np.swapaxes(v, -1, -2), weights) * scale
    )  # masked entries: weight 0, gradient 0
    return dscores @ k, np.swapaxes(dscores, -1, -2) @ q, dv


def _heads(x: Array, heads: int) -> Array:
    n, t, d = x.shape
    return x.reshape(n, t, heads, d // heads).transpose(0, 2, 1, 3)  # (N, h, T, d/h)


def _merge(x: Array) -> Array:
    n, h, t, dh = x.shape
    return x.transpose(0, 2, 1, 3).reshape(n, t, h * dh)  # (N, T, D)


def mha_forward(
    query: Array,
    key: Array,
    value: Array,
    params: dict[str, Array],
    heads: int,
    mask: Array | None = None,
) -> tuple[Array, tuple]:
    """params: w_q, b_q, w_k, b_k, w_v, b_v, w_o, b_o (torch's in_proj split in three, out_proj)."""
    q, cq = linear_forward(query, params["w_q"], params["b_q"])
    k, ck = linear_forward(key, params["w_k"], params["b_k"])
    v, cv = linear_forward(value, params["w_v"], params["b_v"])
    attended, ca = attention_forward(
        _heads(q, heads),
        _heads(k, heads),
        _heads(v, heads),
        None if mask is None else mask[:, None],
    )
    y, co = linear_forward(_merge(attended), params["w_o"], params["b_o"])
    return y, (cq, ck, cv, ca, co, heads)


def mha_backward(dy: Array, cache: tuple) -> tuple[Array, Array, Array, dict[str, Array]]:
    cq, ck, cv, ca, co, heads = cache
    grads: dict[str, Array] = {}
    dmerged, grads["w_o"], grads["b_o"] = linear_backward(dy, co)
    dq, dk, dv = attention_backward(_heads(dmerged, heads), ca)
    dquery, grads["w_q"], grads["b_q"] = linear_backward(_merge(dq), cq)
    dkey, grads["w_k"], grads["b_k"] = linear_backward(_merge(dk), ck)
    dvalue, grads["w_v"], grads["b_v"] = linear_backward(_merge(dv), cv)
    return dquery, dkey, dvalue, grads


def causal_mask(length: int) -> Array:
    """(T, T) bool, True where position t may attend to s: s ≤ t (no peeking at the future)."""
    return np.tril(np.ones((length, length), dtype=bool))


def positional_encoding(length: int, d_model: int) -> Array:
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d)): (T, d),
    added to the embeddings, so that attention (blind to order) can tell positions apart."""
    position = np.arange(length)[:, None]
    rate = np.exp(np.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
    table = np.zeros((length, d_model))
    table[:, 0::2] = np.sin(position * rate)
    table[:, 1::2] = np.cos(position * rate[: d_model // 2])
    return table
