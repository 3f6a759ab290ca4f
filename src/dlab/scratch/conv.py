"""Convolution and pooling, vectorised with im2col.

    y[n, f, i, j] = b[f] + Σ_c Σ_u Σ_v x[n, c, s·i + d·u - p, s·j + d·v - p] · w[f, c, u, v]

im2col gathers every receptive field into a column, so the whole convolution is one matrix
product; its backward pass is a matrix product plus a scatter-add of the columns back (col2im).
"""

from __future__ import annotations

import numpy as np

Array = np.ndarray


def output_size(size: int, kernel: int, stride: int, padding: int, dilation: int) -> int:
    """⌊(size + 2p - d(k-1) - 1) / s⌋ + 1."""
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _indices(
    channels: int,
    height: int,
    width: int,
    kh: int,
    kw: int,
    stride: int,
    padding: int,
    dilation: int,
):
    ho, wo = (
        output_size(height, kh, stride, padding, dilation),
        output_size(width, kw, stride, padding, dilation),
    )
    if ho <= 0 or wo <= 0:
        raise ValueError(
            f"a {kh}×{kw} kernel (dilation {dilation}) does not fit a {height}×{width} input with padding {padding}"
        )
    rows = np.repeat(np.arange(kh) * dilation, kw)  # kernel row of each of the kh·kw taps
    cols = np.tile(np.arange(kw) * dilation, kh)
    rows = (
        np.tile(rows, channels)[:, None] + stride * np.repeat(np.arange(ho), wo)[None, :]
    )  # (C·kh·kw, ho·wo)
    cols = np.tile(cols, channels)[:, None] + stride * np.tile(np.arange(wo), ho)[None, :]
    chans = np.repeat(np.arange(channels), kh * kw)[:, None]
    return chans, rows, cols, ho, wo


def im2col(
    x: Array, kh: int, kw: int, stride: int, padding: int, dilation: int
) -> tuple[Array, int, int]:
    """(N, C, H, W) -> (N, C·kh·kw, ho·wo): every receptive field as a column."""
    _, channels, height, width = x.shape
    chans, rows, cols, ho, wo = _indices(channels, height, width, kh, kw, stride, padding, dilation)
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    return padded[:, chans, rows, cols], ho, wo


def col2im(
    columns: Array,
    shape: tuple[int, ...],
    kh: int,
    kw: int,
    stride: int,
    padding: int,
    dilation: int,
) -> Array:
    """Scatter-add columns back to an (N, C, H, W) image: the adjoint of im2col."""
    n, channels, height, width = shape
    chans, rows, cols, _, _ = _indices(channels, height, width, kh, kw, stride, padding, dilation)
    padded = np.zeros((n, channels, height + 2 * padding, width + 2 * padding))
    np.add.at(padded, (slice(None), chans, rows, cols), columns)
    return padded[:, :, padding : padding + height, padding : padding + width]


def conv2d_forward(
    x: Array, w: Array, b: Array | None, stride: int = 1, padding: int = 0, dilation: int = 1
) -> tuple[Array, tuple]:
    """x (N, C, H, W), w (F, C, kh, kw), b (F,) -> y (N, F, ho, wo)."""
    filters, _, kh, kw = w.shape
    columns, ho, wo = im2col(x, kh, kw, stride, padding, dilation)  # (N, C·kh·kw, ho·wo)
    y = np.einsum("fk,nkp->nfp", w.reshape(filters, -1), columns)
    if b is not None:
        y = y + b[None, :, None]
    return y.reshape(x.shape[0], filters, ho, wo), (
        x.shape,
        columns,
        w,
        b is not None,
        stride,
        padding,
        dilation,
    )


def conv2d_backward(dy: Array, cache: tuple) -> tuple[Array, Array, Array | None]:
    """dx by col2im of Wᵀ dy, dW = Σ_n dy columnsᵀ, db = Σ dy."""
    shape, columns, w, has_bias, stride, padding, dilation = cache
    filters, _, kh, kw = w.shape
    flat = dy.reshape(dy.shape[0], filters, -1)  # (N, F, ho·wo)
    dw = np.einsum("nfp,nkp->fk", flat, columns).reshape(w.shape)
    dcolumns = np.einsum("fk,nfp->nkp", w.reshape(filters, -1), flat)
    dx = col2im(dcolumns, shape, kh, kw, stride, padding, dilation)
    return dx, dw, flat.sum(axis=(0, 2)) if has_bias else None


def _pool_columns(x: Array, kernel: int, stride: int, padding: int, fill: float):
    n, c, h, w = x.shape
    flat = x.reshape(n * c, 1, h, w)
    if padding:
        flat = np.pad(
            flat, ((0, 0), (0, 0), (padding, padding), (padding, padding)), constant_values=fill
        )
    columns, ho, wo = im2col(flat, kernel, kernel, stride, 0, 1)  # (N·C, k·k, ho·wo)
    return columns, ho, wo


def maxpool2d_forward(
    x: Array, kernel: int, stride: int | None = None, padding: int = 0
) -> tuple[Array, tuple]:
    """The largest value in each kernel×kernel window (padding counts as -∞, as in torch)."""
    stride = stride or kernel
    columns, ho, wo = _pool_columns(x, kernel, stride, padding, -np.inf)
    winner = columns.argmax(axis=1)  # (N·C, ho·wo)
    y = np.take_along_axis(columns, winner[:, None], axis=1)[:, 0]
    return y.reshape(x.shape[0], x.shape[1], ho, wo), (x.shape, winner, kernel, stride, padding)


def maxpool2d_backward(dy: Array, cache: tuple) -> Array:
    """Each window's gradient goes to the position of its maximum."""
    shape, winner, kernel, stride, padding = cache
    n, c, h, w = shape
    dcolumns = np.zeros((n * c, kernel * kernel, winner.shape[1]))
    np.put_along_axis(dcolumns, winner[:, None], dy.reshape(n * c, 1, -1), axis=1)
    dx = col2im(
        dcolumns, (n * c, 1, h + 2 * padding, w + 2 * padding), kernel, kernel, stride, 0, 1
    )
    return dx[:, :, padding : padding + h, padding : padding + w].reshape(shape)


def avgpool2d_forward(
    x: Array, kernel: int, stride: int | None = None, padding: int = 0
) -> tuple[Array, tuple]:
    """The mean of each window (zero padding included in the count, torch's default)."""
    stride = stride or kernel
    columns, ho, wo = _pool_columns(x, kernel, stride, padding, 0.0)
    return columns.mean(axis=1).reshape(x.shape[0], x.shape[1], ho, wo), (
        x.shape,
        kernel,
        stride,
        padding,
    )


def avgpool2d_backward(dy: Array, cache: tuple) -> Array:
    """Each window's gradient is shared equally by its kernel² inputs."""
    shape, kernel, stride, padding = cache
    n, c, h, w = shape
    dcolumns = np.repeat(dy.reshape(n * c, 1, -1) / kernel**2, kernel * kernel, axis=1)
    dx = col2im(
        dcolumns, (n * c, 1, h + 2 * padding, w + 2 * padding), kernel, kernel, stride, 0, 1
    )
    return dx[:, :, padding : padding + h, padding : padding + w].reshape(shape)


def conv1d_forward(
    x: Array, w: Array, b: Array | None, stride: int = 1, padding: int = 0, dilation: int = 1
) -> tuple[Array, tuple]:
    """x (N, C, T), w (F, C, k), b (F,) -> y (N, F, t_out): a 2-D convolution over an image one
    row high, with a kernel one row high (and no padding of that row).

        y[n, f, t] = b[f] + Σ_c Σ_u x[n, c, s·t + d·u − p] · w[f, c, u]
    """
    padded = np.pad(x, ((0, 0), (0, 0), (padding, padding)))[:, :, None, :]  # (N, C, 1, T + 2p)
    y, cache = conv2d_forward(padded, w[:, :, None, :], b, stride, 0, dilation)
    return y[:, :, 0, :], (cache, padding)


def conv1d_backward(dy: Array, cache: tuple) -> tuple[Array, Array, Array | None]:
    """dx (N, C, T), dw (F, C, k), db (F,): conv2d's backward, with the row and the padding
    taken off again."""
    cache2d, padding = cache
    dx, dw, db = conv2d_backward(dy[:, :, None, :], cache2d)
    dx = dx[:, :, 0, :]
    return dx[:, :, padding : dx.shape[-1] - padding], dw[:, :, 0, :], db
