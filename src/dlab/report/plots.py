"""Matplotlib figures of runs, written as PNG files (no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

from dlab._io import atomic_write


def subplots(*grid: int, figsize: tuple[float, float] | None = None, dpi: int = 100, **options: Any) -> tuple[Figure, Any]:
    """pyplot.subplots without pyplot: a Figure of its own, drawn only by savefig (no display
    needed, in CI or over ssh), and nothing global touched, so a notebook's inline backend and
    its open figures are left as they are."""
    fig = Figure(figsize=figsize, dpi=dpi)
    return fig, fig.subplots(*grid, **options)


def save_confusion_matrix(
    matrix: Sequence[Sequence[int]],
    classes: Sequence[str] | None,
    path: str | Path,
    title: str = "",
) -> Path:
    """A confusion matrix (rows: true class, columns: predicted) with counts, shaded by row share."""
    counts = np.asarray(matrix, dtype=np.int64)
    n = counts.shape[0]
    labels = list(classes) if classes else [str(i) for i in range(n)]
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(4.0, 0.45 * n + 2)
    fig, ax = subplots(figsize=(size, size * 0.9), dpi=100)
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(
                        j,
                        i,
                        str(counts[i, j]),
                        ha="center",
                        va="center",
                        fontsize=8,
                        color="white" if shares[i, j] > 0.5 else "black",
                    )
    ax.set_xticks(range(n), labels, rotation=90 if n > 10 else 0)
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    accuracy = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title}  (accuracy {accuracy:.2%})" if title else f"accuracy {accuracy:.2%}")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of true class")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return Path(path)


def curves_figure(
    series: dict[str, tuple[list[float], list[float]]], title: str, xlabel: str, log_y: bool = False
):
    """One axis with a line per named (x, y) series; single points get markers."""
    fig, ax = subplots(figsize=(5.2, 3.2), dpi=100)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o" if len(xs) < 12 else None, markersize=4, label=label)
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    values = [v for _, ys in series.values() for v in ys if v > 0]
    if log_y and values and max(values) / min(values) > 20:  # a log scale only helps across decades
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def confusion_figures(matrix: Sequence[Sequence[int]], classes: Sequence[str]):
    """Counts and row-normalised shares side by side."""
    counts = np.asarray(matrix, dtype=np.int64)
    n = counts.shape[0]
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    size = max(3.5, 0.42 * n + 1.8)
    fig, axes = subplots(1, 2, figsize=(2 * size + 1, size), dpi=100)
    for ax, values, title in (
        (axes[0], counts, "counts"),
        (axes[1], shares, "share of each true class"),
    ):
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        if n <= 20:
            for i in range(n):
                for j in range(n):
                    text = f"{values[i, j]}" if values is counts else f"{values[i, j]:.2f}"
                    if counts[i, j]:
                        ax.text(
                            j,
                            i,
                            text,
                            ha="center",
                            va="center",
                            fontsize=7,
                            color="white" if shares[i, j] > 0.5 else "black",
                        )
        ax.set_xticks(range(n), classes, rotation=90 if n > 6 else 0, fontsize=8)
        ax.set_yticks(range(n), classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def _as_image(x: Any, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """A normalised (C, H, W) tensor back to a displayable (H, W[, 3]) array in [0, 1]."""
    array = np.asarray(x, dtype=np.float64)
    if mean is not None and std is not None:
        array = array * np.asarray(std)[:, None, None] + np.asarray(mean)[:, None, None]
    array = np.clip(array, 0, 1)
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)


def image_grid(
    images: Sequence[Any],
    captions: Sequence[str],
    colors: Sequence[str],
    mean=None,
    std=None,
    columns: int = 8,
):
    """Images with a coloured caption under each."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = subplots(
        rows, columns, figsize=(columns * 1.35, rows * 1.6), dpi=100, squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption, color in zip(axes.flat, images, captions, colors, strict=False):
        picture = _as_image(image, mean, std)
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, interpolation="nearest")
        ax.set_title(caption, fontsize=7, color=color)
    fig.tight_layout()
    return fig


def attribution_grid(
    images: Sequence[Any], attributions: Sequence[Any], captions: Sequence[str], mean=None, std=None
):
    """Each image above its attribution map (red: evidence for the class, blue: against)."""
    n = len(images)
    fig, axes = subplots(2, n, figsize=(n * 1.5, 3.3), dpi=100, squeeze=False)
    for i in range(n):
        picture = _as_image(images[i], mean, std)
        axes[0, i].imshow(
            picture, cmap="gray" if picture.ndim == 2 else None, interpolation="nearest"
        )
        axes[0, i].set_title(captions[i], fontsize=7)
        attribution = np.asarray(attributions[i]).sum(axis=0)
        limit = max(np.abs(attribution).max(), 1e-12)
        axes[1, i].imshow(attribution, cmap="bwr", vmin=-limit, vmax=limit, interpolation="nearest")
        for ax in axes[:, i]:
            ax.axis("off")
    fig.tight_layout()
    return fig


def filter_grid(weights: np.ndarray):
    """First-layer kernels (out, in, kh, kw) as small images: what each filter responds to."""
    count = min(len(weights), 32)
    columns = min(count, 16)
    rows = -(-count // columns)
    fig, axes = subplots(
        rows, columns, figsize=(columns * 0.7, rows * 0.75), dpi=100, squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for ax, kernel in zip(axes.flat, weights[:count], strict=False):
        if kernel.shape[0] == 3:
            shown = (kernel - kernel.min()) / max(np.ptp(kernel), 1e-12)
            ax.imshow(shown.transpose(1, 2, 0), interpolation="nearest")
        else:
            limit = max(np.abs(kernel[0]).max(), 1e-12)
            ax.imshow(kernel[0], cmap="bwr", vmin=-limit, vmax=limit, interpolation="nearest")
    fig.tight_layout()
    return fig


def attention_figure(weights: list[np.ndarray], tokens: Sequence[str], max_heads: int = 4):
    """Attention weights per layer (rows) and head (columns) for one example."""
    layers_, heads = len(weights), min(weights[0].shape[0], max_heads)
    fig, axes = subplots(
        layers_, heads, figsize=(heads * 2.6, layers_ * 2.5), dpi=100, squeeze=False
    )
    short = [t[:8] for t in tokens]
    for layer, matrix in enumerate(weights):
        for head in range(heads):
            ax = axes[layer, head]
            ax.imshow(matrix[head], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {layer + 1}, head {head + 1}", fontsize=8)
            if len(short) <= 24:
                ax.set_xticks(range(len(short)), short, rotation=90, fontsize=6)
                ax.set_yticks(range(len(short)), short, fontsize=6)
            else:
                ax.axis("off")
    fig.tight_layout()
    return fig


def forecast_figure(actual: np.ndarray, forecast: np.ndarray, naive: np.ndarray, title: str):
    """One-step-ahead forecasts against the truth and the naive last-value forecast."""
    fig, ax = subplots(figsize=(9, 3.2), dpi=100)
    ax.plot(actual, label="actual", color="black", linewidth=1.4)
    ax.plot(forecast, label="model", color="#d9480f", linewidth=1.2)
    ax.plot(naive, label="naive (last value)", color="#868e96", linewidth=1, linestyle="--")
    ax.set_title(title, fontsize=11)
    ax.set_xlabel("test time step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def tuning_figure(trials: Sequence[dict], direction: str, metric: str):
    """Each trial's value (pruned trials marked) and the best so far."""
    fig, ax = subplots(figsize=(6.5, 3.2), dpi=100)
    done = [t for t in trials if t["value"] is not None]
    ax.scatter(
        [t["number"] for t in done],
        [t["value"] for t in done],
        s=18,
        color="#1c7ed6",
        label="completed",
    )
    pruned = [t["number"] for t in trials if t["state"] == "PRUNED"]
    if pruned:
        ax.scatter(pruned, [np.nan] * len(pruned))
        for number in pruned:
            ax.axvline(number, color="#dee2e6", linewidth=1, zorder=0)
    best, line = None, []
    for t in sorted(done, key=lambda t: t["number"]):
        best = (
            t["value"]
            if best is None
            else (min(best, t["value"]) if direction == "minimize" else max(best, t["value"]))
        )
        line.append((t["number"], best))
    if line:
        ax.step(*zip(*line, strict=True), where="post", color="#d9480f", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per trial (grey lines: pruned)", fontsize=11)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def importance_figure(importances: dict[str, float]):
    """Parameter importances as horizontal bars."""
    names = list(importances)[::-1]
    fig, ax = subplots(figsize=(5.5, 0.45 * len(names) + 1.2), dpi=100)
    ax.barh(names, [importances[n] for n in names], color="#5c7cfa")
    ax.set_xlabel("importance (share of the metric's variation)")
    ax.set_title("which parameters mattered", fontsize=11)
    fig.tight_layout()
    return fig


def frames_grid(
    clips: Sequence[Any],
    captions: Sequence[str],
    colors: Sequence[str],
    attributions: Sequence[Any] | None = None,
    columns: int = 4,
):
    """Feature frames of clips (time across, features up, like a spectrogram), each with a
    coloured caption; with `attributions`, each clip above its map (red: for, blue: against)."""
    rows_per = 2 if attributions is not None else 1
    rows = max(1, -(-len(clips) // columns)) * rows_per
    fig, axes = subplots(
        rows, columns, figsize=(columns * 2.4, rows * 1.5), dpi=100, squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for i, (clip, caption, color) in enumerate(zip(clips, captions, colors, strict=False)):
        row, column = (i // columns) * rows_per, i % columns
        clip = np.asarray(clip)
        heard = np.abs(clip).sum(1) > 0
        start = int(heard.argmax()) if heard.any() else 0  # the padding in front is not shown
        axes[row, column].imshow(clip[start:].T, aspect="auto", origin="lower", cmap="magma")
        axes[row, column].set_title(caption, fontsize=7, color=color)
        if attributions is not None:
            saliency = np.asarray(attributions[i])[start:].T
            limit = max(np.abs(saliency).max(), 1e-12)
            axes[row + 1, column].imshow(
                saliency, aspect="auto", origin="lower", cmap="bwr", vmin=-limit, vmax=limit
            )
    fig.tight_layout()
    return fig


def alignment_figure(clips: Sequence[Any], paths: Sequence[Sequence[int]], symbols: Sequence[str]):
    """CTC alignments: each utterance's feature frames, with each symbol the best path emits
    (a run of one non-blank output) written where its first frame falls in the clip."""
    fig, axes = subplots(len(clips), 1, figsize=(9, 1.4 * len(clips)), dpi=100, squeeze=False)
    for ax, clip, path in zip(axes[:, 0], clips, paths, strict=True):
        clip = np.asarray(clip)
        heard = np.abs(clip).sum(1) > 0
        end = len(clip) - int(heard[::-1].argmax()) if heard.any() else len(clip)  # no padding
        ax.imshow(clip[:end].T, aspect="auto", origin="lower", cmap="magma")
        step = len(clip) / max(len(path), 1)  # input frames per output frame
        for j, best in enumerate(path):
            new = best != 0 and (j == 0 or path[j - 1] != best)  # a run's first frame
            if new and (j + 0.5) * step < end:
                ax.text(
                    (j + 0.5) * step,
                    clip.shape[1] - 1,
                    symbols[best - 1],
                    color="#fff",
                    fontsize=9,
                    ha="center",
                    va="top",
                    fontweight="bold",
                )
        ax.set_yticks([])
        ax.set_xlabel("frame", fontsize=7)
    fig.tight_layout()
    return fig
