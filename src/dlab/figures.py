"""The lessons' figures, drawn by code from dlab.scratch's own formulas (never pasted images).

`draw(name)` returns a matplotlib Figure of its own (no pyplot: nothing global is touched); a
notebook shows it when it is a cell's last expression, `dlab lesson N --figures DIR` writes a
lesson's figures as PNG files, and the documentation site shows each below the code that draws
it. The figures: the activation functions and their slopes, im2col, the LSTM cell, an attention
heat map, and a loss landscape with three optimizers' paths.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dlab.errors import DlabError, did_you_mean

FIGURES: dict[str, Callable[[], Any]] = {}
DRAWN = re.compile(r"""figures\.draw\(["'](\w+)["']\)""")  # how a lesson's code names a figure


def figure(name: str) -> Callable[[Callable[[], Any]], Callable[[], Any]]:
    def register(fn: Callable[[], Any]) -> Callable[[], Any]:
        FIGURES[name] = fn
        return fn

    return register


def draw(name: str) -> Any:
    """The named figure, freshly drawn."""
    if name not in FIGURES:
        raise DlabError(f"figure: none called '{name}'{did_you_mean(name, FIGURES)}")
    return FIGURES[name]()


def named_in(lesson: Path) -> list[str]:
    """The figures a lesson's code draws, in order."""
    return DRAWN.findall(lesson.read_text(encoding="utf-8"))


def write_figures(lesson: Path, folder: Path) -> list[Path]:
    """Write the lesson's figures to `folder` as NAME.png; their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in named_in(lesson):
        path = folder / f"{name}.png"
        draw(name).savefig(path, bbox_inches="tight")
        written.append(path)
    return written


def png(name: str) -> bytes:
    """The named figure as PNG bytes (for the documentation site)."""
    from io import BytesIO

    buffer = BytesIO()
    draw(name).savefig(buffer, format="png", bbox_inches="tight")
    return buffer.getvalue()


@figure("activation_functions")
def activation_functions() -> Any:
    """ReLU, sigmoid, tanh and GELU (left) and their derivatives (right), from dlab.scratch."""
    from dlab.report.plots import subplots
    from dlab.scratch import layers

    fig, (values, slopes) = subplots(1, 2, figsize=(9, 3.4))
    x = np.linspace(-4, 4, 401)
    for name in ("relu", "sigmoid", "tanh", "gelu"):
        y, cache = getattr(layers, f"{name}_forward")(x)
        slope = getattr(layers, f"{name}_backward")(np.ones_like(x), cache)
        values.plot(x, y, label=name)
        slopes.plot(x, slope, label=name)
    values.set(title="f(x)", xlabel="x", ylim=(-1.5, 4))
    slopes.set(title="f′(x): what back-propagation multiplies by", xlabel="x", ylim=(-0.2, 1.2))
    slopes.axhline(0.25, color="grey", lw=0.8, ls=":")
    slopes.annotate("sigmoid: at most ¼", (0, 0.25), (1.2, 0.42), arrowprops={"arrowstyle": "->"})
    for ax in (values, slopes):
        ax.grid(alpha=0.3)
        ax.legend(frameon=False)
    fig.tight_layout()
    return fig


@figure("im2col")
def im2col_picture() -> Any:
    """A 4×4 image and a 2×2 kernel: every receptive field becomes a column, and the
    convolution one matrix product (dlab.scratch.conv.im2col's own output)."""
    from matplotlib.patches import Rectangle

    from dlab.report.plots import subplots
    from dlab.scratch import conv

    image = np.arange(1, 17, dtype=float).reshape(1, 1, 4, 4)
    columns, ho, wo = conv.im2col(image, 2, 2, 1, 0, 1)  # (1, 4, 9)
    fig, (left, right) = subplots(1, 2, figsize=(9, 3.6), gridspec_kw={"width_ratios": [1, 2]})
    left.imshow(image[0, 0], cmap="Blues", vmin=-8, vmax=20)
    for (i, j), value in np.ndenumerate(image[0, 0]):
        left.text(j, i, f"{value:.0f}", ha="center", va="center")
    left.add_patch(Rectangle((0.5, -0.5), 2, 2, fill=False, ec="crimson", lw=2.5))
    left.set(title="input 4×4, kernel 2×2, stride 1", xticks=[], yticks=[])
    right.imshow(columns[0], cmap="Blues", vmin=-8, vmax=20)
    for (i, j), value in np.ndenumerate(columns[0]):
        right.text(j, i, f"{value:.0f}", ha="center", va="center")
    right.add_patch(Rectangle((0.5, -0.5), 1, 4, fill=False, ec="crimson", lw=2.5))
    right.set(
        title=f"im2col: {ho}×{wo} = {ho * wo} columns of 2·2 = 4 values",
        xticks=range(ho * wo),
        yticks=[],
        xlabel="output position (row-major)",
    )
    fig.tight_layout()
    return fig


def _box(ax: Any, x: float, y: float, text: str, color: str, width: float = 1.85) -> None:
    from matplotlib.patches import FancyBboxPatch

    corner = (x - width / 2, y - 0.45)
    ax.add_patch(FancyBboxPatch(corner, width, 0.9, boxstyle="round,pad=0.05", fc=color, ec="k"))
    ax.text(x, y, text, ha="center", va="center", fontsize=9)


def _node(ax: Any, x: float, y: float, sign: str, color: str) -> None:
    from matplotlib.patches import Circle

    ax.add_patch(Circle((x, y), 0.28, fc="white", ec=color, zorder=3))
    ax.text(x, y, sign, ha="center", va="center", color=color, fontsize=12, zorder=4)


def _arrow(ax: Any, a: tuple[float, float], b: tuple[float, float], color: str = "k") -> None:
    from matplotlib.patches import FancyArrowPatch

    ax.add_patch(FancyArrowPatch(a, b, arrowstyle="->", mutation_scale=13, lw=1.3, color=color))


@figure("lstm_cell")
def lstm_cell() -> Any:
    """The LSTM cell: the cell state's straight path (top), the four gates, and what each does."""
    from dlab.report.plots import subplots

    fig, ax = subplots(figsize=(9, 4.6))
    ax.set(xlim=(0, 12.4), ylim=(-0.2, 6.2), xticks=[], yticks=[], aspect="equal")
    ax.set_frame_on(False)
    red = "crimson"
    _arrow(ax, (0.2, 5.2), (12.3, 5.2), red)  # the cell state: changed only by × and +
    ax.text(0.2, 5.5, "$c_{t-1}$", color=red, fontsize=11)
    ax.text(11.6, 5.5, "$c_t$", color=red, fontsize=11)
    for x, y, sign, color in ((2.5, 5.2, "×", red), (5.5, 5.2, "+", red), (5.5, 3.5, "×", "k")):
        _node(ax, x, y, sign, color)
    _node(ax, 10.4, 2.4, "×", "k")
    _box(ax, 10.4, 3.8, "tanh", "white", 1.0)
    gates = (
        (2.5, "f = σ(·)\nforget: keep\nhow much of c", "#fde0dd"),
        (4.55, "i = σ(·)\ninput: write\nhow much of g", "#e0ecf4"),
        (6.6, "g = tanh(·)\ncandidate\nvalues", "#e5f5e0"),
        (8.65, "o = σ(·)\noutput: show\nhow much", "#fff7bc"),
    )
    for x, text, color in gates:
        _box(ax, x, 1.5, text, color)
        ax.plot([x, x], [0.35, 1.0], color="grey", lw=1)
    ax.plot([1.2, 8.65], [0.35, 0.35], color="grey", lw=1)
    ax.text(0.1, 0.35, "$[h_{t-1}, x_t]$", va="center", fontsize=10)
    for a, b in (
        ((2.5, 2.0), (2.5, 4.9)),  # f scales the old cell state
        ((4.55, 2.0), (5.3, 3.3)),  # i and g meet...
        ((6.6, 2.0), (5.7, 3.3)),
        ((5.5, 3.8), (5.5, 4.9)),  # ...and i ⊙ g is added
        ((10.4, 5.2), (10.4, 4.3)),  # tanh(c_t)...
        ((10.4, 3.3), (10.4, 2.7)),
        ((9.4, 1.7), (10.15, 2.25)),  # ...times o
        ((10.7, 2.4), (12.3, 2.4)),
    ):
        _arrow(ax, a, b)
    ax.text(11.6, 2.6, "$h_t$", fontsize=11)
    ax.set_title("$c_t = f \\odot c_{t-1} + i \\odot g$,    $h_t = o \\odot \\tanh(c_t)$")
    return fig


@figure("attention_heatmap")
def attention_heatmap() -> Any:
    """Causal self-attention weights over 12 positions, the queries and keys being the positional
    encodings: every row sums to one, the future (upper right) gets nothing, and nearby
    positions score highest (dlab.scratch.attention)."""
    from dlab.report.plots import subplots
    from dlab.scratch import attention

    length = 12
    encoding = attention.positional_encoding(length, 16) * 2.0
    _, cache = attention.attention_forward(
        encoding[None], encoding[None], encoding[None], attention.causal_mask(length)[None]
    )
    weights = cache[3][0]
    fig, ax = subplots(figsize=(5.2, 4.4))
    image = ax.imshow(weights, cmap="viridis", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, shrink=0.8, label="weight")
    ax.set(
        title="causal self-attention weights",
        xlabel="key position (attended to)",
        ylabel="query position",
    )
    return fig


def _landscape_paths(steps: int = 60) -> dict[str, np.ndarray]:
    """θ's path under SGD, momentum and Adam on J(θ) = ½ θᵀ diag(1, 20) θ from (−4, 1.5)."""
    from dlab.scratch import optim

    curvature = np.array([1.0, 20.0])
    settings = {
        "SGD (α 0.09)": (optim.sgd, {"lr": 0.09}),
        "momentum (α 0.03, μ 0.8)": (optim.sgd, {"lr": 0.03, "momentum": 0.8}),
        "Adam (α 0.3)": (optim.adam, {"lr": 0.3}),
    }
    paths = {}
    for label, (rule, hyper) in settings.items():
        theta, state, path = np.array([-4.0, 1.5]), {}, []
        for _ in range(steps):
            path.append(theta)
            theta, state = rule(theta, curvature * theta, state, **hyper)
        paths[label] = np.array([*path, theta])
    return paths


@figure("loss_landscape")
def loss_landscape() -> Any:
    """An ill-conditioned bowl (20× steeper in θ₂): SGD zig-zags across the valley, momentum
    carries along it, Adam rescales each coordinate (dlab.scratch.optim's own updates)."""
    from dlab.report.plots import subplots

    a, b = np.meshgrid(np.linspace(-4.5, 1.5, 200), np.linspace(-2, 2, 200))
    loss = 0.5 * (a**2 + 20 * b**2)
    fig, ax = subplots(figsize=(7.5, 4.2))
    ax.contour(a, b, loss, levels=np.geomspace(0.05, 60, 14), cmap="Greys", linewidths=0.8)
    for label, path in _landscape_paths().items():
        ax.plot(path[:, 0], path[:, 1], marker=".", ms=3, lw=1.2, label=label)
    ax.plot(0, 0, marker="*", ms=12, color="black")
    ax.set(title="J(θ) = ½(θ₁² + 20 θ₂²): 60 steps from (−4, 1.5)", xlabel="θ₁", ylabel="θ₂")
    ax.legend(frameon=False, loc="lower right")
    return fig
