"""Matplotlib figures of runs, written as PNG files (no display needed)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works without a display, in CI and over ssh
import matplotlib.pyplot as plt
import numpy as np

from dlab._io import atomic_write


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
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=100)
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
    plt.close(fig)
    return Path(path)
