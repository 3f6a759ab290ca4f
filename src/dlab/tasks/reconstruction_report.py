"""The reconstruction task's report sections: reconstructions beside their inputs, the map of the
codes coloured by the (never trained on) labels, a VAE's samples and a walk between two codes,
the cluster-class table, and the anomaly scores of both groups.

Imported only when a report is built (it pulls in matplotlib).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from dlab.report.context import ReportContext
    from dlab.report.sections import Section

MAP_POINTS = 3000  # codes drawn on the latent map
STEPS = 10  # images of the interpolation


def sections() -> list[Section]:
    from dlab.report.sections import Section

    return [
        Section("reconstructions", "Reconstructions", 20, reconstructions),
        Section(
            "latent_map", "The codes, coloured by the labels the model never saw", 22, latent_map
        ),
        Section("vae_samples", "New images and a walk between two codes", 24, samples),
        Section("clusters", "Clusters against classes", 26, clusters),
        Section("anomalies", "Anomaly scores", 28, anomalies),
    ]


def _split(ctx: ReportContext) -> tuple[torch.Tensor, np.ndarray]:
    bundle = ctx.bundle
    return bundle.loader(ctx.split).inputs, bundle.extra["labels"][ctx.split].numpy()


def reconstructions(ctx: ReportContext) -> str | None:
    """One image of each class (in the split's order) above its reconstruction."""
    from dlab.report.html import figure
    from dlab.report.plots import subplots

    images, labels = _split(ctx)
    picks = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)][:12]
    with torch.no_grad():
        rebuilt = torch.sigmoid(ctx.model.eval()(images[picks]))
    fig, axes = subplots(2, len(picks), figsize=(1.2 * len(picks), 2.6), squeeze=False)
    for j, i in enumerate(picks):
        for row, picture in enumerate((images[i], rebuilt[j])):
            axes[row, j].imshow(_shown(picture), cmap="gray", vmin=0, vmax=1)
            axes[row, j].axis("off")
        axes[0, j].set_title(ctx.data_meta.classes[labels[i]], fontsize=8)
    fig.suptitle("input (top), reconstruction (bottom)", fontsize=10)
    fig.tight_layout()
    return figure(fig, "inputs and their reconstructions")


def _shown(picture: torch.Tensor) -> np.ndarray:
    array = picture.numpy()
    return array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)


def latent_map(ctx: ReportContext) -> str | None:
    """The codes projected on their two principal axes (the codes themselves when 2-D)."""
    from sklearn.decomposition import PCA

    from dlab.report.html import figure
    from dlab.report.plots import subplots

    images, labels = _split(ctx)
    keep = np.random.default_rng(0).permutation(len(labels))[:MAP_POINTS]
    with torch.no_grad():
        codes = ctx.model.eval().encode(images[keep]).flatten(1).numpy()
    points = codes if codes.shape[1] == 2 else PCA(2, random_state=0).fit_transform(codes)
    fig, ax = subplots(figsize=(6, 5))
    classes = ctx.data_meta.classes
    for c in np.unique(labels[keep]):
        mine = labels[keep] == c
        ax.scatter(*points[mine].T, s=4, alpha=0.6, label=classes[c])
    ax.legend(markerscale=3, fontsize=7, ncol=2)
    axes = "z₁, z₂" if codes.shape[1] == 2 else "first two principal axes of z"
    ax.set(title=f"{len(keep):,} codes of the {ctx.split} split ({axes})", xticks=[], yticks=[])
    fig.tight_layout()
    return figure(fig, "latent map coloured by label")


def samples(ctx: ReportContext) -> str | None:
    """A VAE's decoded z ~ N(0, I), and decoded codes on the line between two test images."""
    from dlab.report.html import figure
    from dlab.report.plots import subplots

    model = ctx.model.eval()
    if not hasattr(model, "sample"):
        return None
    drawn = model.sample(16, torch.Generator().manual_seed(0))
    images, labels = _split(ctx)
    a, b = int(np.flatnonzero(labels == labels[0])[0]), int(np.flatnonzero(labels != labels[0])[0])
    with torch.no_grad():
        ends = model.encode(images[[a, b]])
        weights = torch.linspace(0, 1, STEPS)[:, None]
        walk = torch.sigmoid(model.decode((1 - weights) * ends[0] + weights * ends[1]))
    fig, axes = subplots(3, max(8, STEPS), figsize=(1.1 * max(8, STEPS), 3.6), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for j, picture in enumerate(drawn):
        axes[j // 8, j % 8].imshow(_shown(picture), cmap="gray", vmin=0, vmax=1)
    for j, picture in enumerate(walk):
        axes[2, j].imshow(_shown(picture), cmap="gray", vmin=0, vmax=1)
    fig.suptitle(
        "samples from N(0, I) (top two rows); from one test image's code to another's", fontsize=9
    )
    fig.tight_layout()
    return figure(fig, "VAE samples and interpolation")


def clusters(ctx: ReportContext) -> str | None:
    from dlab.report.html import escape, figure, note
    from dlab.report.plots import subplots

    report = ctx.evaluation.get(ctx.split, {})
    if "contingency" not in report:
        return note(f"no evaluation yet: run `dlab evaluate {ctx.path} --split {ctx.split}`")
    table = np.asarray(report["contingency"])
    classes = ctx.data_meta.classes[: table.shape[1]]
    fig, ax = subplots(figsize=(0.5 * table.shape[1] + 2, 0.4 * table.shape[0] + 1.5))
    ax.imshow(table / np.maximum(table.sum(1, keepdims=True), 1), cmap="Blues")
    for (i, j), count in np.ndenumerate(table):
        if count:
            ax.text(j, i, str(count), ha="center", va="center", fontsize=6)
    mapping = report.get("cluster_classes", {})
    ax.set_yticks(
        range(len(table)),
        [f"{i} → {mapping.get(str(i), '-')}" for i in range(len(table))],
        fontsize=7,
    )
    ax.set_xticks(range(len(classes)), classes, fontsize=7)
    ax.set(xlabel="true class (never seen in training)", ylabel="cluster → matched class")
    fig.tight_layout()
    return (
        f"<p>k-means on the codes of the training images, {escape(ctx.split)} split: clustering "
        f"accuracy {report['cluster_accuracy']:.4f} (clusters matched one-to-one to classes by "
        f"the Hungarian algorithm), NMI {report['nmi']:.4f}, ARI {report['ari']:.4f}.</p>"
        + figure(fig, "cluster-class contingency table")
    )


def anomalies(ctx: ReportContext) -> str | None:
    from dlab.report.html import escape, figure
    from dlab.report.plots import subplots

    report = ctx.evaluation.get(ctx.split, {})
    histogram = report.get("anomaly_histogram")
    if histogram is None:
        return None
    edges = np.asarray(histogram["edges"])
    fig, ax = subplots(figsize=(6, 3))
    for group, color in (("normal", "#4c72b0"), ("anomalous", "#dd8452")):
        counts = np.asarray(histogram[group], dtype=float)
        ax.stairs(
            counts / max(counts.sum(), 1), edges, label=group, color=color, fill=True, alpha=0.5
        )
    ax.set(xlabel="reconstruction error (BCE summed over the pixels)", ylabel="share of the group")
    ax.legend()
    fig.tight_layout()
    held = ", ".join(ctx.data_meta.details.anomalies)
    return (
        f"<p>Classes never trained on ({escape(held)}) against the rest of the {escape(ctx.split)} "
        f"split: AUROC {report['anomaly_auroc']:.4f}, average precision {report['anomaly_ap']:.4f} "
        f"(a random score: {report['anomaly_share']:.4f}).</p>"
        + figure(fig, "anomaly score histograms")
    )
