"""Rating prediction (explicit feedback): how many stars would this user give this item?

Inputs are (user, item) index pairs, outputs one number each. Evaluation clips predictions to
the rating scale (as Surprise and every published MovieLens figure do) and reports RMSE and MAE
beside two references computed from the training split alone: the global mean, and the
baseline of user and item biases (what matrix factorisation must beat to have learnt anything
from the interactions).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import torch
from pydantic import Field

from dlab.tasks import Details, Task, register

if TYPE_CHECKING:
    from dlab.api import Run
    from dlab.data import DataBundle
    from dlab.data.bundle import Batch, DataMeta
    from dlab.report.sections import Section


class RecommenderDetails(Details):
    """Who and what the indices are, and the training statistics behind the cold-start answer."""

    users: list[str]  # original user ids, in index order
    items: list[str]  # original item ids, in index order
    titles: list[str] = Field(default_factory=list)  # per item, when known
    genres: list[str] = Field(default_factory=list)  # genre names
    item_genres: list[int] = Field(default_factory=list)  # per item: bit g set = genre g
    user_fields: list[str] = Field(default_factory=list)  # side features of users (age, ...)
    user_levels: list[list[str]] = Field(default_factory=list)  # per field, its levels
    user_codes: list[list[int]] = Field(default_factory=list)  # per field, each user's level
    scale: tuple[float, float] = (1.0, 5.0)  # lowest and highest rating
    global_mean: float = 0.0  # mean training rating
    popularity: list[int] = Field(default_factory=list)  # training interactions per item
    item_mean: list[float] = Field(default_factory=list)  # shrunk mean training rating per item
    explicit: bool = True  # ratings (rating task), or interactions scored as logits (ranking)
    cold_start: Literal["popular", "refuse"] = "popular"
    candidates: int = 99  # ranking: negatives each held-out item is ranked against

    def item_genre_names(self, item: int) -> list[str]:
        mask = self.item_genres[item] if item < len(self.item_genres) else 0
        return [g for i, g in enumerate(self.genres) if mask >> i & 1]

    def title(self, item: int) -> str:
        return self.titles[item] if item < len(self.titles) else self.items[item]


def clipped(outputs: torch.Tensor, meta: DataMeta) -> torch.Tensor:
    lo, hi = meta.details.scale
    return outputs.float().clamp(lo, hi)


@register
class Rating(Task):
    """Ratings of (user, item) pairs (explicit feedback): RMSE and MAE in the rating's units."""

    name = "rating"
    Details = RecommenderDetails
    headline = ("rmse", "mae", "bias_rmse", "mean_rmse")
    fit_metrics = ("rmse",)
    verbs = ("recommend", "predict")
    padded_inputs = False

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        from dlab.tasks.recommender import bias_baseline

        pairs, ratings, predicted = [], [], []
        model = run.model.eval()
        with torch.no_grad():
            for inputs, targets in bundle.loader(split).epoch(0):
                pairs.append(inputs)
                ratings.append(targets)
                predicted.append(clipped(model(inputs), bundle.meta))
        pair, rating, guess = torch.cat(pairs), torch.cat(ratings), torch.cat(predicted)
        error = guess - rating
        bias = bias_baseline(bundle, pair) - rating
        mean = bundle.meta.details.global_mean - rating
        per_user = torch.zeros(len(bundle.meta.details.users)).index_add_(
            0, pair[:, 0], error.double().pow(2).float()
        )
        return {
            "samples": len(rating),
            "rmse": float(error.pow(2).mean().sqrt()),
            "mae": float(error.abs().mean()),
            "bias_rmse": float(bias.pow(2).mean().sqrt()),
            "mean_rmse": float(mean.pow(2).mean().sqrt()),
            "squared_error_per_user": per_user.tolist(),
            "ratings_per_user": torch.bincount(pair[:, 0], minlength=len(per_user)).tolist(),
        }

    def output_size(self, meta: DataMeta) -> int:
        return 1

    def example_batch(self, meta: DataMeta, batch: int, generator: torch.Generator) -> Batch:
        return example_pairs(meta, batch, generator), torch.randint(
            int(meta.details.scale[0]),
            int(meta.details.scale[1]) + 1,
            (batch,),
            generator=generator,
        ).float()

    def answer(self, outputs: torch.Tensor, meta: DataMeta, top_k: int = 5) -> list[dict[str, Any]]:
        """The predicted rating of each (user, item) pair, clipped to the scale."""
        return [
            {"rating": round(float(r), 4), "label": f"{float(r):.2f}"}
            for r in clipped(outputs, meta)
        ]

    def report_sections(self) -> list[Section]:
        from dlab.tasks.recommender_report import sections

        return sections()


def example_pairs(meta: DataMeta, batch: int, generator: torch.Generator) -> torch.Tensor:
    """Random (user, item) index pairs of `meta`'s catalogue, distinct while there are enough
    (one pair never gets two ratings)."""
    users, items = len(meta.details.users), len(meta.details.items)
    if batch <= users * items:
        flat = torch.randperm(users * items, generator=generator)[:batch]
    else:
        flat = torch.randint(users * items, (batch,), generator=generator)
    return torch.stack([flat // items, flat % items], 1)
