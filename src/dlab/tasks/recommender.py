"""What the recommender tasks share: answering for an id (cold start included), the reference
baselines every figure is reported beside, and ranking metrics over candidate lists."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dlab.errors import InputError

if TYPE_CHECKING:
    from torch import nn

    from dlab.data import DataBundle
    from dlab.data.bundle import DataMeta


class Recommender:
    """A trained model with its catalogue: top-k items for a user, a rating for a pair.

    `seen` holds the (user, item) pairs and ratings of the training data: what `exclude_seen`
    leaves out and what a user "rated highly". An id the model never saw gets the popularity
    fallback (and the answer says so) or a one-line InputError, as the recipe's
    `data.cold_start` chose."""

    def __init__(self, model: nn.Module, meta: DataMeta, seen: torch.Tensor, rated: torch.Tensor):
        self.model, self.meta, self.details = model, meta, meta.details
        self.seen, self.rated = seen, rated
        self._users = {u: i for i, u in enumerate(self.details.users)}
        self._items = {v: i for i, v in enumerate(self.details.items)}
        self.ranks_logits = not self.details.explicit

    def user(self, user_id: Any) -> int | None:
        """The index of `user_id`, None for an unknown one the recipe answers with a fallback."""
        return self._find(self._users, user_id, "user")

    def item(self, item_id: Any) -> int | None:
        return self._find(self._items, item_id, "item")

    def _find(self, index: dict[str, int], key: Any, what: str) -> int | None:
        found = index.get(str(key).strip())
        if found is None and self.details.cold_start == "refuse":
            raise InputError(
                f"{what} {key!r} is not among the {len(index):,} {what}s the model was trained on"
            )
        return found

    @torch.no_grad()
    def scores(self, user: int) -> torch.Tensor:
        """The model's score of every item for `user` (a rating, or a logit when ranking)."""
        items = torch.arange(len(self.details.items))
        out = self.model(torch.stack([torch.full_like(items, user), items], 1)).float()
        if not self.ranks_logits:
            out = out.clamp(*self.details.scale)
        return out

    def recommend(self, user_id: Any, k: int = 10, exclude_seen: bool = True) -> dict[str, Any]:
        """The top `k` items for `user_id`, with titles, scores and genres."""
        if k < 1:
            raise InputError(f"recommend: k must be at least 1, not {k}")
        user = self.user(user_id)
        answer: dict[str, Any] = {"user": str(user_id)}
        if user is None:
            scores = torch.tensor(self.details.popularity, dtype=torch.float)
            answer["fallback"] = f"unknown user {user_id}: the most popular items in training"
        else:
            scores = self.scores(user)
            if exclude_seen:
                scores[self.seen[self.seen[:, 0] == user, 1]] = float("-inf")
            answer["liked"] = self.liked(user)
        top = scores.topk(min(k, int(torch.isfinite(scores).sum()))).indices.tolist()
        answer["items"] = [self.describe(i, float(scores[i])) for i in top]
        return answer

    def liked(self, user: int, count: int = 5) -> list[dict[str, Any]]:
        """What `user` rated highest in training."""
        mine = (self.seen[:, 0] == user).nonzero().flatten()
        order = self.rated[mine].argsort(descending=True, stable=True)[:count]
        return [self.describe(int(self.seen[i, 1]), float(self.rated[i])) for i in mine[order]]

    def describe(self, item: int, score: float) -> dict[str, Any]:
        return {
            "item": self.details.items[item],
            "title": self.details.title(item),
            "score": round(score, 4),
            "genres": self.details.item_genre_names(item),
        }

    @torch.no_grad()
    def rate(self, user_id: Any, item_id: Any) -> dict[str, Any]:
        """The predicted rating (or ranking score) of one pair; an unknown id falls back."""
        user, item = self.user(user_id), self.item(item_id)
        answer: dict[str, Any] = {"user": str(user_id), "item": str(item_id)}
        if user is not None and item is not None:
            score = float(self.model(torch.tensor([[user, item]]))[0])
            if not self.ranks_logits:
                score = min(max(score, self.details.scale[0]), self.details.scale[1])
            answer["title"] = self.details.title(item)
            return {**answer, "rating" if not self.ranks_logits else "score": round(score, 4)}
        if item is None:
            value, why = self.details.global_mean, f"unknown item {item_id}: the mean rating"
        else:
            value = self.details.item_mean[item]
            why = f"unknown user {user_id}: the item's mean rating"
            answer["title"] = self.details.title(item)
        return {**answer, "rating": round(value, 4), "fallback": why}


def bias_baseline(bundle: DataBundle, pairs: torch.Tensor, rounds: int = 10) -> torch.Tensor:
    """Predictions of the baseline μ + b_user + b_item, fitted to the training ratings by
    alternating regularised least squares (Koren 2010; Surprise's BaselineOnly), clipped."""
    details = bundle.meta.details
    train, ratings = bundle.extra["train_pairs"], bundle.extra["train_ratings"].double()
    users, items = len(details.users), len(details.items)
    mu = ratings.mean()
    bu, bi = torch.zeros(users, dtype=torch.double), torch.zeros(items, dtype=torch.double)
    u, i = train[:, 0], train[:, 1]
    n_u = torch.bincount(u, minlength=users).double()
    n_i = torch.bincount(i, minlength=items).double()
    for _ in range(rounds):  # regularisation 10 for items, 15 for users: Surprise's defaults
        bi = torch.zeros(items, dtype=torch.double).index_add_(0, i, ratings - mu - bu[u]) / (
            n_i + 10
        )
        bu = torch.zeros(users, dtype=torch.double).index_add_(0, u, ratings - mu - bi[i]) / (
            n_u + 15
        )
    out = mu + bu[pairs[:, 0]] + bi[pairs[:, 1]]
    return out.float().clamp(*details.scale)


def popularity_scores(meta: DataMeta) -> torch.Tensor:
    """Every item's training interaction count (the most-popular baseline)."""
    return torch.tensor(meta.details.popularity, dtype=torch.float)


def item_knn_scores(train: torch.Tensor, users: int, items: int) -> torch.Tensor:
    """(users, items) scores of item-kNN: Σ over a user's items j of cosine(i, j) (no self)."""
    matrix = torch.zeros(users, items)
    matrix[train[:, 0], train[:, 1]] = 1.0
    norms = matrix.sum(0).sqrt().clamp_min(1e-9)
    similarity = (matrix.T @ matrix) / norms[:, None] / norms[None, :]
    similarity.fill_diagonal_(0)
    return matrix @ similarity


def ranking_metrics(scores: torch.Tensor, targets: torch.Tensor, k: int = 10) -> dict[str, float]:
    """HR@k and NDCG@k of (U, C) candidate scores against (U, C) 0/1 targets (torchmetrics)."""
    from dlab.training.metrics import METRICS, metric_class

    found = {}
    for name in ("hit_rate", "ndcg"):
        metric = metric_class(METRICS["ranking"][name][0])(top_k=k)
        metric.update(scores, targets)
        found[name] = float(metric.compute())
    return found
