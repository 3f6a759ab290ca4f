"""Small networks built only from dlab.scratch pieces, trained with their hand-written backward.

- `train_mlp` and `train_cnn`: scikit-learn's 8×8 digits, ≥ 95% test accuracy.
- `train_char_rnn`: a vanilla RNN over characters (Karpathy's min-char-rnn, batched), whose loss
  falls below the unigram entropy: it learns which character follows which.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from dlab.scratch import conv, layers, optim, recurrent

Array = np.ndarray


@dataclass
class Result:
    """What a from-scratch training run reached."""

    test_accuracy: float = 0.0
    losses: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


def _init(rng: np.random.Generator, fan_out: int, fan_in: int, *kernel: int) -> Array:
    """He initialisation for ReLU layers: N(0, 2/fan_in)."""
    fan = fan_in * math.prod(kernel)
    return rng.normal(0, math.sqrt(2 / fan), size=(fan_out, fan_in, *kernel))


def digits(seed: int = 0) -> tuple[Array, Array, Array, Array]:
    """Digits scaled to [0, 1], split 80/20 (stratified, fixed)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    x = data.images / 16.0
    return train_test_split(x, data.target, test_size=0.2, random_state=seed, stratify=data.target)


def _fit(
    params: dict[str, Array],
    loss_and_grads: Callable,
    x: Array,
    y: Array,
    epochs: int,
    lr: float,
    batch: int,
    seed: int,
) -> list[float]:
    rng = np.random.default_rng(seed)
    states: dict[str, dict] = {k: {} for k in params}
    losses = []
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch):
            index = order[start : start + batch]
            loss, grads = loss_and_grads(params, x[index], y[index])
            for name in params:
                params[name], states[name] = optim.adam(
                    params[name], grads[name], states[name], lr=lr
                )
            losses.append(loss)
    return losses


def mlp_forward(params: dict[str, Array], x: Array) -> tuple[Array, list]:
    h, c1 = layers.linear_forward(x.reshape(len(x), -1), params["w1"], params["b1"])
    a, r1 = layers.relu_forward(h)
    logits, c2 = layers.linear_forward(a, params["w2"], params["b2"])
    return logits, [c1, r1, c2]


def mlp_loss(params: dict[str, Array], x: Array, y: Array) -> tuple[float, dict[str, Array]]:
    logits, (c1, r1, c2) = mlp_forward(params, x)
    loss, cache = layers.cross_entropy_forward(logits, y)
    grads: dict[str, Array] = {}
    da, grads["w2"], grads["b2"] = layers.linear_backward(layers.cross_entropy_backward(cache), c2)
    _, grads["w1"], grads["b1"] = layers.linear_backward(layers.relu_backward(da, r1), c1)
    return loss, grads


def train_mlp(epochs: int = 30, hidden: int = 64, seed: int = 0) -> Result:
    """64 -> hidden -> 10 with ReLU, Adam, on the digits."""
    x_train, x_test, y_train, y_test = digits(seed)
    rng = np.random.default_rng(seed)
    params = {
        "w1": _init(rng, hidden, 64),
        "b1": np.zeros(hidden),
        "w2": _init(rng, 10, hidden) / 2,
        "b2": np.zeros(10),
    }
    losses = _fit(params, mlp_loss, x_train, y_train, epochs, 3e-3, 32, seed)
    predictions = mlp_forward(params, x_test)[0].argmax(1)
    return Result(float((predictions == y_test).mean()), losses)


def cnn_forward(params: dict[str, Array], x: Array) -> tuple[Array, list]:
    h, cc = conv.conv2d_forward(x[:, None], params["k1"], params["c1"], padding=1)  # (N, 8, 8, 8)
    a, r1 = layers.relu_forward(h)
    p, mp = conv.maxpool2d_forward(a, 2)  # (N, 8, 4, 4)
    logits, cl = layers.linear_forward(p.reshape(len(x), -1), params["w"], params["b"])
    return logits, [cc, r1, mp, cl, p.shape]


def cnn_loss(params: dict[str, Array], x: Array, y: Array) -> tuple[float, dict[str, Array]]:
    logits, (cc, r1, mp, cl, pooled_shape) = cnn_forward(params, x)
    loss, cache = layers.cross_entropy_forward(logits, y)
    grads: dict[str, Array] = {}
    dp, grads["w"], grads["b"] = layers.linear_backward(layers.cross_entropy_backward(cache), cl)
    da = conv.maxpool2d_backward(dp.reshape(pooled_shape), mp)
    _, grads["k1"], grads["c1"] = conv.conv2d_backward(layers.relu_backward(da, r1), cc)
    return loss, grads


def train_cnn(epochs: int = 30, channels: int = 8, seed: int = 0) -> Result:
    """conv 3×3 (padding 1) -> ReLU -> max-pool 2 -> linear, on the digits."""
    x_train, x_test, y_train, y_test = digits(seed)
    rng = np.random.default_rng(seed)
    params = {
        "k1": _init(rng, channels, 1, 3, 3),
        "c1": np.zeros(channels),
        "w": _init(rng, 10, channels * 16) / 2,
        "b": np.zeros(10),
    }
    losses = _fit(params, cnn_loss, x_train, y_train, epochs, 3e-3, 32, seed)
    predictions = cnn_forward(params, x_test)[0].argmax(1)
    return Result(float((predictions == y_test).mean()), losses)


def unigram_entropy(text: str) -> float:
    """Entropy (nats) of the character distribution: the loss of a model that ignores context."""
    _, counts = np.unique(
        np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32), return_counts=True
    )
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def train_char_rnn(
    text: str,
    hidden: int = 128,
    steps: int = 600,
    length: int = 25,
    batch: int = 32,
    lr: float = 5e-3,
    seed: int = 0,
) -> Result:
    """A vanilla RNN reading `length` characters at a time; returns the smoothed training loss curve."""
    chars = sorted(set(text))
    index = {c: i for i, c in enumerate(chars)}
    data = np.array([index[c] for c in text])
    vocab = len(chars)
    rng = np.random.default_rng(seed)
    p = recurrent.RecurrentWeights(
        rng.normal(0, 0.01, (hidden, vocab)),
        rng.normal(0, 1 / math.sqrt(hidden), (hidden, hidden)) * 0.5,
        np.zeros(hidden),
        np.zeros(hidden),
    )
    head = {"w": rng.normal(0, 0.01, (vocab, hidden)), "b": np.zeros(vocab)}
    states: dict[str, dict] = {}
    curve, smooth = [], math.log(vocab)
    eye = np.eye(vocab)
    for _ in range(steps):
        starts = rng.integers(0, len(data) - length - 1, batch)
        window = data[starts[:, None] + np.arange(length + 1)]
        x, y = eye[window[:, :-1]], window[:, 1:]  # one-hot inputs (N, T, V), targets (N, T)
        outputs, caches = recurrent.rnn_forward(x, np.zeros((batch, hidden)), p)
        logits, cl = layers.linear_forward(outputs, head["w"], head["b"])
        loss, cache = layers.cross_entropy_forward(logits.reshape(-1, vocab), y.reshape(-1))
        dlogits = layers.cross_entropy_backward(cache).reshape(logits.shape)
        douts, dw, db = layers.linear_backward(dlogits, cl)
        _, _, grads = recurrent.rnn_backward(douts, caches, p)
        named = {
            "w_ih": (p.w_ih, grads.w_ih),
            "w_hh": (p.w_hh, grads.w_hh),
            "b_ih": (p.b_ih, grads.b_ih),
            "b_hh": (p.b_hh, grads.b_hh),
            "w": (head["w"], dw),
            "b": (head["b"], db),
        }
        norm = math.sqrt(sum(float((g**2).sum()) for _, g in named.values()))
        clip = min(1.0, 5.0 / (norm + 1e-12))  # gradient clipping keeps BPTT stable
        for name, (value, grad) in named.items():
            new, states[name] = optim.adam(value, grad * clip, states.get(name, {}), lr=lr)
            if name in head:
                head[name] = new
            else:
                setattr(p, name, new)
        smooth = 0.95 * smooth + 0.05 * loss
        curve.append(smooth)
    baseline = {"unigram_entropy": unigram_entropy(text), "initial_loss": math.log(vocab)}
    return Result(losses=curve, extra={**baseline, "vocab": vocab})
