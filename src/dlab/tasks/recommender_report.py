"""The report sections of recommender runs (rating and ranking): results beside the baselines,
the rating distribution, error against how much a user has rated (the cold-start curve), a map
of the item embeddings coloured by genre, and the nearest items to the most popular ones."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from dlab.report.context import ReportContext
    from dlab.report.sections import Section

POPULAR_SHOWN = 4  # items whose nearest neighbours are listed
NEIGHBOURS = 5


def sections() -> list[Section]:
    from dlab.report.sections import Section

    return [
        Section("recommender_results", "Results beside the baselines", 40, results),
        Section("ratings", "Ratings and the cold-start curve", 42, ratings),
        Section("item_map", "What the model learnt about the items", 44, item_map),
    ]


def results(ctx: ReportContext) -> str | None:
    """The test metrics of the model and of the references that need no training."""
    from dlab.report.html import escape, note, table

    report = ctx.evaluation.get(ctx.split, {})
    if "rmse" in report:
        rows = [
            ["this model", report["rmse"], report["mae"]],
            ["μ + user and item biases (ALS)", report.get("bias_rmse", float("nan")), ""],
            ["the training mean", report.get("mean_rmse", float("nan")), ""],
        ]
        return (
            f"<p>{report['samples']:,} held-out ratings of the {escape(ctx.split)} split; "
            "predictions clipped to the rating scale.</p>"
            + table(rows, ["predictor", "RMSE", "MAE"])
        )
    if "hit_rate" in report:
        k, full = report.get("k", 10), report.get("recall_k", 20)
        rows = [
            [name, report.get(f"{p}hit_rate"), report.get(f"{p}ndcg"), report.get(f"{p}recall")]
            for name, p in (("this model", ""), ("most popular", "popular_"), ("item-kNN", "knn_"))
        ]
        return (
            f"<p>Each of {report['samples']:,} users' held-out item ranked among "
            f"{report.get('candidates', 100) - 1} items they never rated (HR@{k}, NDCG@{k}), and "
            f"among every item they have not seen (recall@{full}).</p>"
            + table(rows, ["recommender", f"HR@{k}", f"NDCG@{k}", f"recall@{full}"])
        )
    return note("no results yet: run `dlab evaluate RUN`")


def ratings(ctx: ReportContext) -> str | None:
    """How ratings are distributed, and how the error falls as users rate more."""
    from dlab.report.html import figure
    from dlab.report.plots import subplots

    bundle = ctx.bundle
    train = bundle.extra["train_ratings"].numpy()
    report = ctx.evaluation.get(ctx.split, {})
    curve = "squared_error_per_user" in report
    fig, axes = subplots(1, 2 if curve else 1, figsize=(10 if curve else 5, 3.2), squeeze=False)
    values, counts = np.unique(train, return_counts=True)
    axes[0, 0].bar(values, counts, width=0.6 if len(values) < 12 else 0.1, color="#4c72b0")
    axes[0, 0].set(xlabel="rating", ylabel="training ratings", title="rating distribution")
    if curve:
        _cold_start_curve(axes[0, 1], report, bundle.extra["train_pairs"][:, 0])
    fig.tight_layout()
    return figure(fig, "rating distribution and error by ratings per user")


def _cold_start_curve(ax, report: dict, train_users: torch.Tensor) -> None:
    """RMSE of users grouped by how many training ratings they have (log-spaced bins)."""
    squared = np.asarray(report["squared_error_per_user"])
    tested = np.asarray(report["ratings_per_user"])
    known = np.bincount(train_users.numpy(), minlength=len(tested))
    edges = np.unique(np.geomspace(1, max(known.max(), 2), 9).astype(int))
    centres, errors, counts = [], [], []
    for lo, hi in itertools.pairwise(edges):
        members = (known >= lo) & (known < hi) & (tested > 0)
        if members.any():
            centres.append(np.sqrt(lo * hi))
            errors.append(np.sqrt(squared[members].sum() / tested[members].sum()))
            counts.append(int(members.sum()))
    ax.plot(centres, errors, "o-", color="#c44e52")
    for x, y, n in zip(centres, errors, counts, strict=True):  # how many users each point is
        ax.annotate(f"{n}", (x, y), textcoords="offset points", xytext=(0, 6), fontsize=7)
    ax.set_xscale("log")
    ax.set(xlabel="user's training ratings", ylabel="test RMSE", title="the cold-start curve")


def item_map(ctx: ReportContext) -> str | None:
    """A PCA map of the item vectors coloured by main genre, and nearest neighbours."""
    from sklearn.decomposition import PCA

    from dlab.report.html import figure, table
    from dlab.report.plots import subplots

    vectors_of = getattr(ctx.model, "item_vectors", None)
    if vectors_of is None:
        return None
    details = ctx.data_meta.details
    with torch.no_grad():
        vectors = vectors_of().float().cpu().numpy()
    popularity = np.asarray(details.popularity)
    shown = popularity > 0
    points = PCA(n_components=2, random_state=0).fit_transform(vectors[shown])
    fig, ax = subplots(figsize=(7, 5))
    main = [_main_genre(details, i) for i in np.flatnonzero(shown)]
    for genre in sorted(set(main), key=main.count, reverse=True)[:8]:
        at = np.asarray([g == genre for g in main])
        ax.scatter(*points[at].T, s=6, alpha=0.6, label=genre or "(none)")
    ax.legend(fontsize=7, markerscale=2, loc="best")
    ax.set(title="item embeddings (PCA), coloured by first genre", xticks=[], yticks=[])
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True).clip(1e-9)
    rows = []
    for item in np.argsort(-popularity, kind="stable")[:POPULAR_SHOWN]:
        similar = unit @ unit[item]
        similar[item] = -np.inf
        near = np.argsort(-similar, kind="stable")[:NEIGHBOURS]
        rows.append([details.title(int(item)), "; ".join(details.title(int(j)) for j in near)])
    return (
        figure(fig, "item embedding map")
        + f"<h3>Nearest items (cosine) to the {POPULAR_SHOWN} most rated</h3>"
        + table(rows, ["item", f"{NEIGHBOURS} nearest"])
    )


def _main_genre(details, item: int) -> str:
    names = details.item_genre_names(item)
    return names[0] if names else ""
