"""Recurrent layers and back-propagation through time, with torch's parameter layout.

    RNN   h_t = tanh(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
    LSTM  i, f, g, o = σ, σ, tanh, σ of (W_ih x_t + b_ih + W_hh h_{t-1} + b_hh), split in four
          c_t = f ⊙ c_{t-1} + i ⊙ g,   h_t = o ⊙ tanh(c_t)
    GRU   r, z = σ(W_i{r,z} x_t + b_i{r,z} + W_h{r,z} h_{t-1} + b_h{r,z})
          n = tanh(W_in x_t + b_in + r ⊙ (W_hn h_{t-1} + b_hn)),   h_t = (1 - z) ⊙ n + z ⊙ h_{t-1}

Inputs are (N, T, D); outputs (N, T, H) and the final state. Backward walks t = T-1 … 0, adding
each step's parameter gradients and carrying dh (and dc) to the step before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dlab.scratch.layers import sigmoid_forward

Array = np.ndarray


@dataclass
class RecurrentWeights:
    """W_ih (G·H, D), W_hh (G·H, H), b_ih, b_hh (G·H,) with G = 1 (RNN), 4 (LSTM) or 3 (GRU)."""

    w_ih: Array
    w_hh: Array
    b_ih: Array
    b_hh: Array

    def zeros(self) -> RecurrentWeights:
        return RecurrentWeights(
            *(np.zeros_like(a) for a in (self.w_ih, self.w_hh, self.b_ih, self.b_hh))
        )


def _sigmoid(x: Array) -> Array:
    return sigmoid_forward(x)[0]


# --- RNN --------------------------------------------------------------------------------------


def rnn_cell_forward(x: Array, h: Array, p: RecurrentWeights) -> tuple[Array, tuple]:
    """One step: h' = tanh(W_ih x + b_ih + W_hh h + b_hh)."""
    h_next = np.tanh(x @ p.w_ih.T + p.b_ih + h @ p.w_hh.T + p.b_hh)
    return h_next, (x, h, h_next)


def rnn_cell_backward(
    dh_next: Array, cache: tuple, p: RecurrentWeights, grads: RecurrentWeights
) -> tuple[Array, Array]:
    """Adds this step's parameter gradients to `grads`; returns dx and dh for the step before."""
    x, h, h_next = cache
    da = dh_next * (1 - h_next**2)  # through tanh
    grads.w_ih += da.T @ x
    grads.w_hh += da.T @ h
    grads.b_ih += da.sum(0)
    grads.b_hh += da.sum(0)
    return da @ p.w_ih, da @ p.w_hh


def rnn_forward(x: Array, h0: Array, p: RecurrentWeights) -> tuple[Array, list]:
    """Outputs (N, T, H) of an RNN over x (N, T, D) from h0 (N, H)."""
    h, outputs, caches = h0, [], []
    for t in range(x.shape[1]):
        h, cache = rnn_cell_forward(x[:, t], h, p)
        outputs.append(h)
        caches.append(cache)
    return np.stack(outputs, axis=1), caches


def rnn_backward(
    d_outputs: Array, caches: list, p: RecurrentWeights
) -> tuple[Array, Array, RecurrentWeights]:
    """Back-propagation through time: dx (N, T, D), dh0 (N, H) and the parameter gradients."""
    grads = p.zeros()
    dx = np.zeros((d_outputs.shape[0], d_outputs.shape[1], p.w_ih.shape[1]))
    dh = np.zeros_like(d_outputs[:, 0])
    for t in reversed(range(d_outputs.shape[1])):
        dx[:, t], dh = rnn_cell_backward(d_outputs[:, t] + dh, caches[t], p, grads)
    return dx, dh, grads


# --- LSTM -------------------------------------------------------------------------------------


def lstm_cell_forward(
    x: Array, h: Array, c: Array, p: RecurrentWeights
) -> tuple[Array, Array, tuple]:
    """One step: the gates i, f, g, o (torch's order, each H wide) from x (N, D) and h (N, H);
    returns h', c' and the cache the backward step needs."""
    gates = x @ p.w_ih.T + p.b_ih + h @ p.w_hh.T + p.b_hh
    i, f, g, o = np.split(gates, 4, axis=-1)
    i, f, g, o = _sigmoid(i), _sigmoid(f), np.tanh(g), _sigmoid(o)
    c_next = f * c + i * g
    tanh_c = np.tanh(c_next)
    return o * tanh_c, c_next, (x, h, c, i, f, g, o, tanh_c)


def lstm_cell_backward(
    dh_next: Array, dc_next: Array, cache: tuple, p: RecurrentWeights, grads: RecurrentWeights
):
    """Adds this step's parameter gradients to `grads`; returns dx, dh and dc for the step before."""
    x, h, c, i, f, g, o, tanh_c = cache
    do = dh_next * tanh_c
    dc = dc_next + dh_next * o * (1 - tanh_c**2)
    di, df, dg = dc * g, dc * c, dc * i
    dgates = np.concatenate(
        [di * i * (1 - i), df * f * (1 - f), dg * (1 - g**2), do * o * (1 - o)], axis=-1
    )
    grads.w_ih += dgates.T @ x
    grads.w_hh += dgates.T @ h
    grads.b_ih += dgates.sum(0)
    grads.b_hh += dgates.sum(0)
    return dgates @ p.w_ih, dgates @ p.w_hh, dc * f


def lstm_forward(x: Array, h0: Array, c0: Array, p: RecurrentWeights) -> tuple[Array, Array, list]:
    """Outputs (N, T, H) and the final cell state."""
    h, c, outputs, caches = h0, c0, [], []
    for t in range(x.shape[1]):
        h, c, cache = lstm_cell_forward(x[:, t], h, c, p)
        outputs.append(h)
        caches.append(cache)
    return np.stack(outputs, axis=1), c, caches


def lstm_backward(
    d_outputs: Array, caches: list, p: RecurrentWeights, dc_last: Array | None = None
):
    """dx, dh0, dc0 and the parameter gradients."""
    grads = p.zeros()
    dx = np.zeros((d_outputs.shape[0], d_outputs.shape[1], p.w_ih.shape[1]))
    dh = np.zeros_like(d_outputs[:, 0])
    dc = np.zeros_like(dh) if dc_last is None else dc_last
    for t in reversed(range(d_outputs.shape[1])):
        dx[:, t], dh, dc = lstm_cell_backward(d_outputs[:, t] + dh, dc, caches[t], p, grads)
    return dx, dh, dc, grads


# --- GRU --------------------------------------------------------------------------------------


def gru_cell_forward(x: Array, h: Array, p: RecurrentWeights) -> tuple[Array, tuple]:
    """One step: r, z, n (torch's order) from x (N, D) and h (N, H); returns h' and the cache."""
    xi = x @ p.w_ih.T + p.b_ih  # (N, 3H): r, z, n parts of the input
    hh = h @ p.w_hh.T + p.b_hh
    xr, xz, xn = np.split(xi, 3, axis=-1)
    hr, hz, hn = np.split(hh, 3, axis=-1)
    r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
    n = np.tanh(xn + r * hn)
    return (1 - z) * n + z * h, (x, h, r, z, n, hn)


def gru_cell_backward(
    dh_next: Array, cache: tuple, p: RecurrentWeights, grads: RecurrentWeights
) -> tuple[Array, Array]:
    """Adds this step's parameter gradients to `grads`; returns dx and dh for the step before."""
    x, h, r, z, n, hn = cache
    dn = dh_next * (1 - z)
    dz = dh_next * (h - n)
    dn_pre = dn * (1 - n**2)
    dr = dn_pre * hn
    dr_pre, dz_pre = dr * r * (1 - r), dz * z * (1 - z)
    d_xi = np.concatenate([dr_pre, dz_pre, dn_pre], axis=-1)
    d_hh = np.concatenate([dr_pre, dz_pre, dn_pre * r], axis=-1)
    grads.w_ih += d_xi.T @ x
    grads.w_hh += d_hh.T @ h
    grads.b_ih += d_xi.sum(0)
    grads.b_hh += d_hh.sum(0)
    return d_xi @ p.w_ih, d_hh @ p.w_hh + dh_next * z


def gru_forward(x: Array, h0: Array, p: RecurrentWeights) -> tuple[Array, list]:
    h, outputs, caches = h0, [], []
    for t in range(x.shape[1]):
        h, cache = gru_cell_forward(x[:, t], h, p)
        outputs.append(h)
        caches.append(cache)
    return np.stack(outputs, axis=1), caches


def gru_backward(
    d_outputs: Array, caches: list, p: RecurrentWeights
) -> tuple[Array, Array, RecurrentWeights]:
    grads = p.zeros()
    dx = np.zeros((d_outputs.shape[0], d_outputs.shape[1], p.w_ih.shape[1]))
    dh = np.zeros_like(d_outputs[:, 0])
    for t in reversed(range(d_outputs.shape[1])):
        dx[:, t], dh = gru_cell_backward(d_outputs[:, t] + dh, caches[t], p, grads)
    return dx, dh, grads
