"""Top-k recommendation from implicit feedback, evaluated as in NCF (He et al. 2017).

Each user's last interaction is held out; the model ranks it among `candidates` (99) items the
user never interacted with: HR@10 is the share of users whose held-out item makes the top 10,
NDCG@10 rewards it by position (1 / log2(rank + 1)). Both come from torchmetrics' retrieval
metrics. Sampled candidates flatter every model, so the report adds full-ranking recall@20
(the held-out item against every item the user has not seen in training) and, on the same
users, two baselines needing no training: the most popular items and item-kNN (cosine
similarity of the items' user sets).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch

from dlab.tasks import Task, register
from dlab.tasks.rating import RecommenderDetails, example_pairs
from dlab.tasks.recommender import item_knn_scores, popularity_scores, ranking_metrics

if TYPE_CHECKING:
    from dlab.api import Run
    from dlab.data import DataBundle
    from dlab.data.bundle import Batch, DataMeta
    from dlab.report.sections import Section

FULL_K = 20  # recall@20 over the full catalogue


@register
class Ranking(Task):
    """Top-k items per user (implicit feedback): HR@10 and NDCG@10, full-ranking recall@20."""

    name = "ranking"
    Details = RecommenderDetails
    headline = ("hit_rate", "ndcg", "recall", "popular_hit_rate", "knn_hit_rate")
    fit_metrics = ("hit_rate",)
    verbs = ("recommend", "predict")
    padded_inputs = False

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        meta = bundle.meta
        users, items = len(meta.details.users), len(meta.details.items)
        inputs, targets = _candidates(bundle, split)
        model = run.model.eval()
        with torch.no_grad():
            scores = torch.cat([model(x).float() for x in inputs.split(256)])
        knn = item_knn_scores(bundle.extra["train_pairs"], users, items)
        popular = popularity_scores(meta)
        rows_u, rows_i = inputs[..., 0], inputs[..., 1]
        report: dict[str, Any] = {"samples": len(targets), "k": 10, "candidates": targets.shape[1]}
        for prefix, candidate_scores in (
            ("", scores),
            ("popular_", popular[rows_i]),
            ("knn_", knn[rows_u, rows_i]),
        ):
            for name, value in ranking_metrics(candidate_scores, targets).items():
                report[prefix + name] = value
        held = rows_i[targets.bool()]  # (U,) the held-out item of each row
        user = rows_u[:, 0]
        seen = bundle.extra["seen_pairs" if split == "test" else "train_pairs"]
        with torch.no_grad():
            full = _all_scores(model, user, items)
        report["recall"] = _recall(full, user, held, seen)
        report["popular_recall"] = _recall(popular.expand(len(user), -1).clone(), user, held, seen)
        report["knn_recall"] = _recall(knn[user].clone(), user, held, seen)
        report["recall_k"] = FULL_K
        return report

    def output_size(self, meta: DataMeta) -> int:
        return 1

    def example_batch(self, meta: DataMeta, batch: int, generator: torch.Generator) -> Batch:
        targets = torch.randint(0, 2, (batch,), generator=generator).float()
        return example_pairs(meta, batch, generator), targets

    def answer(self, outputs: torch.Tensor, meta: DataMeta, top_k: int = 5) -> list[dict[str, Any]]:
        """The ranking score of each (user, item) pair (a logit: higher ranks first)."""
        return [{"score": round(float(s), 4), "label": f"{float(s):.3f}"} for s in outputs]

    def report_sections(self) -> list[Section]:
        from dlab.tasks.recommender_report import sections

        return sections()


def _candidates(bundle: DataBundle, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    inputs, targets = zip(*bundle.loader(split).epoch(0), strict=True)
    return torch.cat(inputs), torch.cat(targets)


def _all_scores(model: Any, users: torch.Tensor, items: int) -> torch.Tensor:
    """(U, items) scores of every item for each user, in chunks of users."""
    catalogue = torch.arange(items)
    rows = []
    for chunk in users.split(64):
        pairs = torch.stack(
            [chunk[:, None].expand(-1, items), catalogue[None].expand(len(chunk), -1)], -1
        )
        rows.append(model(pairs).float())
    return torch.cat(rows)


def _recall(
    scores: torch.Tensor, users: torch.Tensor, held: torch.Tensor, seen: torch.Tensor
) -> float:
    """Share of users whose held-out item ranks in the top FULL_K of the items they have not
    seen (ties count against it)."""
    row = torch.full((int(users.max()) + 1,), -1, dtype=torch.long)
    row[users] = torch.arange(len(users))
    mine = row[seen[:, 0]] >= 0
    scores[row[seen[mine, 0]], seen[mine, 1]] = float("-inf")
    target = scores.gather(1, held[:, None])
    better = (scores >= target).sum(1) - 1  # items scoring at least as high, itself excluded
    return float((better < FULL_K).float().mean())
