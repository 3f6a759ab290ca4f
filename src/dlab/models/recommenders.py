"""Recommenders over (user, item) index pairs: (..., 2) in, one score per pair out.

- `mf`: biased matrix factorisation, r̂ = μ + b_u + b_i + p_u·q_i (Koren, Bell & Volinsky 2009);
- `gmf`, `ncf_mlp`, `neumf`: neural collaborative filtering (He et al. 2017): the element-wise
  product of embeddings weighted by a learnt vector, an MLP over their concatenation, and both
  side by side with separate embeddings;
- `autorec`: I-AutoRec (Sedhain et al. 2015), an autoencoder that reconstructs each item's
  column of training ratings through a bottleneck; the reconstruction at user u is the rating;
- `two_tower`: a user tower (id plus age, sex, occupation, ...) and an item tower (id plus
  genres), each an MLP, scored by their dot product: side features let it place a user or film
  with few ratings.

Every model serves both tasks: for rating prediction the output starts at the training mean
(μ), for ranking it is a logit (μ starts at 0). `l2` regularises what each batch touches, as
the classic SGD recipes do: λ·(|p_u|² + |q_i|²) + λ_b·(b_u² + b_i²) averaged over the batch's pairs,
so a rarely rated film is not shrunk every step the way weight decay on the whole table would.
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from dlab.data.bundle import DataMeta
from dlab.recipe import ModelConfig
from dlab.registry import MODELS


class RecommenderConfig(ModelConfig):
    """What every recommender accepts."""

    dim: int = Field(32, ge=1, le=4096, description="embedding size (latent factors)")
    l2: float = Field(0.0, ge=0, description="L2 on the embeddings each batch touches (per pair)")
    bias_l2: float = Field(0.0, ge=0, description="L2 on the user and item biases it touches")
    init_std: float = Field(0.01, gt=0, description="std of the normal initial embeddings")


class NCFConfig(RecommenderConfig):
    """Neural collaborative filtering: GMF, the MLP tower, or NeuMF (both)."""

    hidden: list[int] = Field(
        default_factory=lambda: [64, 32, 16], description="the MLP tower's layer widths"
    )
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout after each MLP layer")


class TwoTowerConfig(NCFConfig):
    """Two towers with side features; `hidden` is each tower's MLP (its last width: the output)."""

    hidden: list[int] = Field(
        default_factory=lambda: [64, 32], description="each tower's layer widths"
    )
    side_dim: int = Field(8, ge=1, description="embedding size of each categorical side feature")


def _start(meta: DataMeta) -> float:
    """μ's initial value: the training mean for ratings, 0 for ranking logits."""
    return float(meta.details.global_mean) if meta.details.explicit else 0.0


def _embedding(count: int, dim: int, std: float) -> nn.Embedding:
    table = nn.Embedding(count, dim)
    nn.init.normal_(table.weight, std=std)
    return table


def _zeros(count: int) -> nn.Embedding:
    table = nn.Embedding(count, 1)
    nn.init.zeros_(table.weight)
    return table


def _tower(width: int, hidden: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = size
    return nn.Sequential(*layers)


class Recommender(nn.Module):
    """Shared parts: the catalogue's size, μ and the per-pair biases, the batch penalty."""

    def __init__(self, meta: DataMeta, config: RecommenderConfig):
        super().__init__()
        self.users, self.items = len(meta.details.users), len(meta.details.items)
        self.mu = nn.Parameter(torch.tensor(_start(meta)))
        self.user_bias, self.item_bias = _zeros(self.users), _zeros(self.items)
        self.l2, self.bias_l2 = config.l2, config.bias_l2

    def split(self, pairs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return pairs[..., 0], pairs[..., 1]

    def biases(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        return self.mu + self.user_bias(u).squeeze(-1) + self.item_bias(i).squeeze(-1)

    def touched(self, u: torch.Tensor, i: torch.Tensor) -> list[torch.Tensor]:
        """The embedding rows a batch of pairs reads, per pair (for the L2 penalty)."""
        return []

    def item_vectors(self) -> torch.Tensor:
        """(items, d): what the model learnt about each item (maps and nearest neighbours)."""
        raise NotImplementedError

    def batch_penalty(self, pairs: torch.Tensor) -> torch.Tensor | None:
        """The mean over the pairs of λ·|rows read|² + λ_b·|biases read|² (None when both are 0)."""
        if not (self.l2 or self.bias_l2):
            return None
        u, i = self.split(pairs)
        total = torch.zeros((), device=pairs.device)
        if self.l2:
            total = total + self.l2 * sum(t.pow(2).sum(-1) for t in self.touched(u, i)).mean()
        if self.bias_l2:
            biases = self.user_bias(u).pow(2) + self.item_bias(i).pow(2)
            total = total + self.bias_l2 * biases.mean()
        return total


class BiasedMF(Recommender):
    """r̂ = μ + b_u + b_i + p_u·q_i."""

    def __init__(self, meta: DataMeta, config: RecommenderConfig):
        super().__init__(meta, config)
        self.user_factors = _embedding(self.users, config.dim, config.init_std)
        self.item_factors = _embedding(self.items, config.dim, config.init_std)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:  # (..., 2) -> (...)
        u, i = self.split(pairs)
        dot = (self.user_factors(u) * self.item_factors(i)).sum(-1)
        return self.biases(u, i) + dot

    def touched(self, u: torch.Tensor, i: torch.Tensor) -> list[torch.Tensor]:
        return [self.user_factors(u), self.item_factors(i)]

    def item_vectors(self) -> torch.Tensor:
        return self.item_factors.weight


class NCF(Recommender):
    """GMF (h·(p_u ⊙ q_i)), the MLP tower over [p_u, q_i], or NeuMF: both, concatenated
    before the output layer, each with its own embeddings."""

    def __init__(self, meta: DataMeta, config: NCFConfig, gmf: bool, mlp: bool):
        super().__init__(meta, config)
        self.gmf, self.mlp = gmf, mlp
        width = 0
        if gmf:
            self.gmf_users = _embedding(self.users, config.dim, config.init_std)
            self.gmf_items = _embedding(self.items, config.dim, config.init_std)
            width += config.dim
        if mlp:
            self.mlp_users = _embedding(self.users, config.dim, config.init_std)
            self.mlp_items = _embedding(self.items, config.dim, config.init_std)
            self.tower = _tower(2 * config.dim, config.hidden, config.dropout)
            width += config.hidden[-1] if config.hidden else 2 * config.dim
        self.out = nn.Linear(width, 1, bias=False)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        u, i = self.split(pairs)
        parts = []
        if self.gmf:
            parts.append(self.gmf_users(u) * self.gmf_items(i))
        if self.mlp:
            parts.append(self.tower(torch.cat([self.mlp_users(u), self.mlp_items(i)], -1)))
        return self.biases(u, i) + self.out(torch.cat(parts, -1)).squeeze(-1)

    def touched(self, u: torch.Tensor, i: torch.Tensor) -> list[torch.Tensor]:
        found: list[torch.Tensor] = []
        if self.gmf:
            found += [self.gmf_users(u), self.gmf_items(i)]
        if self.mlp:
            found += [self.mlp_users(u), self.mlp_items(i)]
        return found

    def item_vectors(self) -> torch.Tensor:
        tables = ([self.gmf_items.weight] if self.gmf else []) + (
            [self.mlp_items.weight] if self.mlp else []
        )
        return torch.cat(tables, 1)


class TwoTower(Recommender):
    """score = μ + b_u + b_i + f(user, side)·g(item, genres)."""

    def __init__(self, meta: DataMeta, config: TwoTowerConfig):
        super().__init__(meta, config)
        details = meta.details
        self.user_id = _embedding(self.users, config.dim, config.init_std)
        self.item_id = _embedding(self.items, config.dim, config.init_std)
        # side features: fixed tables indexed by user / item, rebuilt from the saved metadata
        codes = torch.zeros(self.users, len(details.user_codes), dtype=torch.long)
        for k, column in enumerate(details.user_codes):
            codes[:, k] = torch.tensor(column, dtype=torch.long)
        self.register_buffer("user_codes", codes, persistent=False)
        self.user_sides = nn.ModuleList(
            _embedding(len(levels), config.side_dim, config.init_std)
            for levels in details.user_levels
        )
        genres = len(details.genres)
        masks = torch.tensor(details.item_genres or [0] * self.items, dtype=torch.long)
        multi_hot = (masks[:, None] >> torch.arange(max(genres, 1))) & 1
        self.register_buffer("item_genres", multi_hot.float(), persistent=False)
        self.genre_embedding = nn.Linear(max(genres, 1), config.side_dim, bias=False)
        user_width = config.dim + config.side_dim * len(details.user_levels)
        self.user_tower = _tower(user_width, config.hidden, config.dropout)
        self.item_tower = _tower(config.dim + config.side_dim, config.hidden, config.dropout)

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        u, i = self.split(pairs)
        side = self.user_codes[u]
        user = torch.cat(
            [self.user_id(u), *(table(side[..., k]) for k, table in enumerate(self.user_sides))],
            -1,
        )
        dot = (self.user_tower(user) * self.item_side(i)).sum(-1)
        return self.biases(u, i) + dot

    def item_side(self, i: torch.Tensor) -> torch.Tensor:
        """The item tower's output for items `i`."""
        return self.item_tower(
            torch.cat([self.item_id(i), self.genre_embedding(self.item_genres[i])], -1)
        )

    def item_vectors(self) -> torch.Tensor:
        return self.item_side(torch.arange(self.items, device=self.mu.device))

    def touched(self, u: torch.Tensor, i: torch.Tensor) -> list[torch.Tensor]:
        return [self.user_id(u), self.item_id(i)]


SERVES = {"tasks": ("rating", "ranking"), "inputs": ("pairs",)}  # checked by models.build


class AutoRecConfig(ModelConfig):
    """I-AutoRec: each item's ratings by every user -> hidden units -> every user's rating."""

    hidden: int = Field(500, ge=1, description="bottleneck units (Sedhain et al.: 500)")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the hidden units")


class AutoRec(nn.Module):
    """r̂(u, i) = W_u · sigmoid(V r_i + b) + c_u, where r_i is item i's column of training
    ratings (0 where a user has not rated it).

    The column is a buffer saved with the weights, filled once from the training split before
    the first step (`see_training_data`); scoring the training pairs with MSE is AutoRec's loss
    over the observed entries, except that each asked rating is left out of its input column
    (a denoising autoencoder: Sedhain et al.'s network otherwise copies it through, which
    overfitted MovieLens within five epochs here). For implicit feedback the column holds 1 for
    every interaction."""

    def __init__(self, meta: DataMeta, config: AutoRecConfig):
        super().__init__()
        self.users, self.items = len(meta.details.users), len(meta.details.items)
        self.register_buffer("columns", torch.zeros(self.items, self.users))
        self.encoder = nn.Linear(self.users, config.hidden)
        self.decoder = nn.Linear(config.hidden, self.users)
        self.dropout = nn.Dropout(config.dropout)
        self.explicit = meta.details.explicit

    @torch.no_grad()
    def see_training_data(self, pairs: torch.Tensor, targets: torch.Tensor) -> None:
        """Fill the item columns from the training split (negatives, with target 0, stay 0)."""
        kept = targets > 0
        values = targets[kept].float() if self.explicit else torch.ones(int(kept.sum()))
        self.columns.zero_()
        self.columns[pairs[kept, 1], pairs[kept, 0]] = values.to(self.columns)

    def hidden(self, i: torch.Tensor, leave_out: torch.Tensor | None = None) -> torch.Tensor:
        """The hidden units of items `i`, with user `leave_out`'s entry of each column zeroed."""
        columns = self.columns[i]
        if leave_out is not None:
            columns = columns.scatter(-1, leave_out.unsqueeze(-1), 0.0)
        return torch.sigmoid(self.encoder(columns))

    def forward(self, pairs: torch.Tensor) -> torch.Tensor:
        u, i = pairs[..., 0], pairs[..., 1]
        # in training the asked rating is left out of its column, as it is at test time
        # (otherwise the network learns to copy it through)
        h = self.dropout(self.hidden(i, u if self.training else None))
        return (h * self.decoder.weight[u]).sum(-1) + self.decoder.bias[u]

    def item_vectors(self) -> torch.Tensor:
        return self.hidden(torch.arange(self.items, device=self.columns.device))


# what registry-wide tests and FLOP counts show a recommender: 12 users, 20 items, side features
EXAMPLE_META = DataMeta(
    dataset="example_ratings",
    task="rating",
    input_kind="pairs",
    input_shape=(2,),
    details={
        "users": [f"u{k}" for k in range(12)],
        "items": [f"i{k}" for k in range(20)],
        "genres": ["a", "b", "c"],
        "item_genres": [k % 8 for k in range(20)],
        "user_fields": ["age", "sex"],
        "user_levels": [["young", "old"], ["F", "M"]],
        "user_codes": [[k % 2 for k in range(12)], [k // 6 for k in range(12)]],
        "global_mean": 3.5,
        "popularity": [20 - k for k in range(20)],
    },
)


def _register(name: str, config: type, summary: str, make) -> None:
    """Register a recommender: it serves rating and ranking of pairs, shown EXAMPLE_META."""
    MODELS.register(name, config=config, summary=summary, example_meta=EXAMPLE_META, **SERVES)(
        lambda cfg, meta: make(meta, cfg)
    )


_register("mf", RecommenderConfig, "biased matrix factorisation", BiasedMF)
_register(
    "gmf",
    NCFConfig,
    "NCF's generalised matrix factorisation",
    lambda meta, cfg: NCF(meta, cfg, gmf=True, mlp=False),
)
_register(
    "ncf_mlp",
    NCFConfig,
    "NCF's MLP over user and item embeddings",
    lambda meta, cfg: NCF(meta, cfg, gmf=False, mlp=True),
)
_register(
    "neumf",
    NCFConfig,
    "NeuMF: GMF and the MLP tower together",
    lambda meta, cfg: NCF(meta, cfg, gmf=True, mlp=True),
)
_register("autorec", AutoRecConfig, "I-AutoRec: an autoencoder over each item's ratings", AutoRec)
_register("two_tower", TwoTowerConfig, "user and item towers with side features", TwoTower)
