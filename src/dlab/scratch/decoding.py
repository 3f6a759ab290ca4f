"""Decoding a sequence model: greedy search and beam search over next-token log-probabilities.

A decoder gives log p(y_t | y_<t, x) one step at a time. Greedy search takes the likeliest token
at each step; beam search keeps the `beam` likeliest prefixes (by their summed log-probability)
and extends each by every token, so it can recover from a first step that looked best but was
not. A finished prefix (it ended with `eos`) is kept as it is. Among the finished, the winner has
the best score / length^α (GNMT's length penalty: without it, short outputs always win).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Array = np.ndarray
Step = Callable[[list[int]], Array]  # prefix -> log-probabilities of the next token (V,)


def greedy_decode(step: Step, bos: int, eos: int, max_len: int) -> list[int]:
    """The likeliest token at every step, until `eos` or `max_len` tokens."""
    prefix = [bos]
    while len(prefix) <= max_len and prefix[-1] != eos:
        prefix.append(int(np.argmax(step(prefix))))
    return prefix[1:]


def beam_search(
    step: Step, bos: int, eos: int, max_len: int, beam: int, length_penalty: float = 0.0
) -> tuple[list[int], float]:
    """The best sequence kept by a beam of `beam` prefixes, and its log-probability."""
    beams: list[tuple[list[int], float]] = [([bos], 0.0)]
    finished: list[tuple[list[int], float]] = []
    for _ in range(max_len):
        candidates = []
        for prefix, score in beams:
            log_probs = step(prefix)
            candidates += [
                ([*prefix, token], score + float(log_probs[token]))
                for token in range(len(log_probs))
            ]
        candidates.sort(key=lambda c: c[1], reverse=True)
        beams = []
        for prefix, score in candidates[:beam]:
            (finished if prefix[-1] == eos else beams).append((prefix, score))
        if not beams:
            break
    finished += beams  # what is still open at max_len competes too

    def normalised(candidate: tuple[list[int], float]) -> float:
        return candidate[1] / (len(candidate[0]) - 1) ** length_penalty

    best = max(finished, key=normalised)
    return best[0][1:], best[1]


def sampling_probabilities(
    logits: Array, temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None
) -> Array:
    """The distribution a language model samples its next token from, (B, V): softmax(z / τ),
    restricted to the k likeliest tokens and to the smallest set whose probability reaches p,
    then renormalised. τ < 1 sharpens it, τ > 1 flattens it."""
    z = logits / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.sort(z, axis=-1)[:, -top_k][:, None]
        z = np.where(z < kth, -np.inf, z)
    if top_p is not None and top_p < 1.0:
        order = np.argsort(-z, axis=-1, kind="stable")
        ordered = np.take_along_axis(z, order, axis=-1)
        p = np.exp(ordered - ordered[:, :1])
        p /= p.sum(axis=-1, keepdims=True)
        before = np.cumsum(p, axis=-1) - p  # mass of the likelier tokens
        np.put_along_axis(z, order, np.where(before > top_p, -np.inf, ordered), axis=-1)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)
