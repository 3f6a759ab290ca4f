"""Models for tables: rows of standardised numbers and category codes (see `dlab.data.tables`).

- `tab_mlp`: each categorical column through its own embedding (size min(16, 1.6·n^0.56) for n
  levels, the fastai rule), concatenated with the numeric columns, then (linear -> batch norm ->
  ReLU -> dropout) per hidden layer;
- `ft_transformer` (Gorishniy et al. 2021, "Revisiting deep learning models for tabular data"):
  a feature tokenizer turns every column into a d-dimensional token (a numeric value x_j into
  x_j·W_j + b_j, a category into its embedding + b_j), a [CLS] token joins them, pre-norm
  Transformer layers mix the columns, and the [CLS] token's final state gives the logits.

Code 0 of every categorical column is its unknown bucket: a level never seen in training.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from dlab.data.bundle import DataMeta
from dlab.recipe import ModelConfig
from dlab.registry import MODELS
from dlab.tasks import task_of


class TableModelConfig(ModelConfig):
    """How a table model reads numbers."""

    numbers: Literal["linear", "piecewise"] = Field(
        "linear",
        description="linear: each number as it is; piecewise: a piecewise-linear encoding over "
        "bins at the training quantiles (Gorishniy et al. 2022)",
    )
    bins: int = Field(16, ge=2, le=256, description="numbers: piecewise: bins per column")


class TabMLPConfig(TableModelConfig):
    """An MLP over numeric columns and embedded categories."""

    hidden: list[int] = Field(default_factory=lambda: [128, 64], description="hidden widths")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout after each hidden layer")
    batch_norm: bool = Field(True, description="batch norm before each hidden activation")
    embedding_dim: int | None = Field(
        None, ge=1, description="size of every category embedding (default: by level count)"
    )


class FTTransformerConfig(TableModelConfig):
    """FT-Transformer; the defaults are a small version of the paper's (d 192, 3 layers)."""

    dim: int = Field(64, ge=8, description="token size d")
    depth: int = Field(3, ge=1, description="Transformer layers")
    heads: int = Field(8, ge=1, description="attention heads (must divide dim)")
    ffn_factor: float = Field(4 / 3, gt=0, description="feed-forward width as a multiple of d")
    attention_dropout: float = Field(0.2, ge=0, lt=1)
    ffn_dropout: float = Field(0.1, ge=0, lt=1, description="dropout in each layer's residuals")


class Columns(nn.Module):
    """Splits an encoded row into numeric values and category codes (clamped to known codes)."""

    def __init__(self, meta: DataMeta):
        super().__init__()
        details = meta.details
        self.register_buffer("numeric", torch.tensor(details.numeric(), dtype=torch.long))
        self.register_buffer("categorical", torch.tensor(details.categorical(), dtype=torch.long))
        self.levels = [len(details.columns[j].levels) + 1 for j in details.categorical()]
        self.register_buffer("highest", torch.tensor(self.levels, dtype=torch.long) - 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        codes = x[:, self.categorical].round().long().clamp(min=0)
        return x[:, self.numeric], torch.minimum(codes, self.highest)


class PiecewiseLinear(nn.Module):
    """Piecewise-linear encoding of numbers (Gorishniy, Rubachev & Babenko 2022): with bin edges
    b_0 < ... < b_T at a column's training quantiles, x becomes T values, component t being
    clamp((x - b_{t-1}) / (b_t - b_{t-1}), 0, 1): how far x has come through bin t. A model then
    sees where in the distribution a value lies, step by step, as a tree's splits do."""

    def __init__(self, meta: DataMeta, bins: int):
        super().__init__()
        from dlab.data.tables import scale

        columns = [meta.details.columns[j] for j in meta.details.numeric()]
        left = torch.zeros(len(columns), bins)
        width = torch.full((len(columns), bins), math.inf)  # unused bins stay 0
        for k, column in enumerate(columns):
            quantiles = np.asarray(column.quantiles, dtype=np.float64)
            if len(quantiles) == 0:
                continue
            picked = quantiles[np.round(np.linspace(0, len(quantiles) - 1, bins + 1)).astype(int)]
            edges = torch.from_numpy(scale(column, np.unique(picked))).double()
            used = len(edges) - 1
            left[k, :used], width[k, :used] = edges[:-1].float(), edges.diff().float()
        self.register_buffer("left", left)
        self.register_buffer("width", width)
        self.bins = bins

    def forward(self, numbers: torch.Tensor) -> torch.Tensor:  # (B, n) -> (B, n, bins)
        return ((numbers.unsqueeze(-1) - self.left) / self.width).clamp(0, 1)


def embedding_size(levels: int) -> int:
    return max(2, min(16, round(1.6 * levels**0.56)))


class TabMLP(nn.Module):
    """[numbers, emb_1(code_1), ..., emb_k(code_k)] -> MLP -> logits."""

    def __init__(self, meta: DataMeta, config: TabMLPConfig):
        super().__init__()
        self.columns = Columns(meta)
        sizes = [config.embedding_dim or embedding_size(n) for n in self.columns.levels]
        self.embeddings = nn.ModuleList(
            nn.Embedding(n, size) for n, size in zip(self.columns.levels, sizes, strict=True)
        )
        self.piecewise = (
            PiecewiseLinear(meta, config.bins) if config.numbers == "piecewise" else None
        )
        per_number = config.bins if self.piecewise is not None else 1
        layers: list[nn.Module] = []
        width = len(self.columns.numeric) * per_number + sum(sizes)
        for size in config.hidden:
            layers.append(nn.Linear(width, size, bias=not config.batch_norm))
            if config.batch_norm:
                layers.append(nn.BatchNorm1d(size))
            layers += [nn.ReLU(), nn.Dropout(config.dropout)]
            width = size
        layers.append(nn.Linear(width, task_of(meta).output_size(meta)))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        numbers, codes = self.columns(x)
        if self.piecewise is not None:
            numbers = self.piecewise(numbers).flatten(1)
        parts = [numbers] + [emb(codes[:, k]) for k, emb in enumerate(self.embeddings)]
        return self.layers(torch.cat(parts, dim=1))  # (B, columns) -> (B, classes)


class FeatureTokenizer(nn.Module):
    """Every column -> one d-dimensional token: x_j·W_j + b_j, or E_j[code] + b_j."""

    def __init__(self, columns: Columns, dim: int, piecewise: PiecewiseLinear | None = None):
        super().__init__()
        numeric, levels = len(columns.numeric), columns.levels
        bound = 1 / math.sqrt(dim)
        self.piecewise = piecewise
        shape = (numeric, piecewise.bins, dim) if piecewise is not None else (numeric, dim)
        self.weight = nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(numeric + len(levels), dim).uniform_(-bound, bound))
        self.embedding = nn.Embedding(max(sum(levels), 1), dim)
        nn.init.uniform_(self.embedding.weight, -bound, bound)
        # each column's first row in the shared table (a fresh tensor: a slice would share storage)
        offsets = [sum(levels[:k]) for k in range(len(levels))]
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long))

    def forward(self, numbers: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        if self.piecewise is not None:  # (B, numeric, bins) @ (numeric, bins, d)
            tokens = torch.einsum("bnt,ntd->bnd", self.piecewise(numbers), self.weight)
        else:
            tokens = numbers.unsqueeze(-1) * self.weight  # (B, numeric, d)
        if codes.shape[1]:
            tokens = torch.cat([tokens, self.embedding(codes + self.offsets)], dim=1)
        return tokens + self.bias  # (B, columns, d)


class FTTransformer(nn.Module):
    """Feature tokens + [CLS] -> pre-norm Transformer encoder -> logits from [CLS]."""

    def __init__(self, meta: DataMeta, config: FTTransformerConfig):
        super().__init__()
        if config.dim % config.heads:
            from dlab.errors import RecipeError

            raise RecipeError(f"model.heads: {config.heads} does not divide model.dim {config.dim}")
        self.columns = Columns(meta)
        piecewise = PiecewiseLinear(meta, config.bins) if config.numbers == "piecewise" else None
        self.tokenizer = FeatureTokenizer(self.columns, config.dim, piecewise)
        self.cls = nn.Parameter(torch.empty(1, 1, config.dim).uniform_(-0.1, 0.1))
        layer = nn.TransformerEncoderLayer(
            config.dim,
            config.heads,
            dim_feedforward=max(1, round(config.dim * config.ffn_factor)),
            dropout=config.ffn_dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        layer.self_attn.dropout = config.attention_dropout
        self.encoder = nn.TransformerEncoder(layer, config.depth, enable_nested_tensor=False)
        self.head = nn.Sequential(
            nn.LayerNorm(config.dim),
            nn.ReLU(),
            nn.Linear(config.dim, task_of(meta).output_size(meta)),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.tokenizer(*self.columns(x))
        tokens = torch.cat([self.cls.expand(len(tokens), -1, -1), tokens], dim=1)
        return self.head(self.encoder(tokens)[:, 0])  # (B, columns) -> (B, classes)


# what registry-wide tests and `dlab list models` show a table model: 3 numbers, 2 categories
EXAMPLE_META = DataMeta(
    dataset="example_table",
    task="tabular",
    input_kind="table",
    input_shape=(5,),
    num_classes=2,
    classes=["no", "yes"],
    details={
        "columns": [
            {
                "name": "age",
                "kind": "numeric",
                "fill": 40.0,
                "mean": 40.0,
                "std": 12.0,
                "quantiles": [18.0, 25.0, 33.0, 40.0, 52.0, 75.0],
            },
            {"name": "job", "kind": "categorical", "fill": "a", "levels": ["a", "b", "c"]},
            {
                "name": "amount",
                "kind": "numeric",
                "fill": 2.0,
                "mean": 2.5,
                "std": 1.5,
                "quantiles": [0.0, 0.0, 0.0, 1.0, 4.0, 9.0],
            },
            {"name": "housing", "kind": "categorical", "fill": "own", "levels": ["own", "rent"]},
            {"name": "months", "kind": "numeric", "fill": 12.0, "mean": 18.0, "std": 9.0},
        ],
        "target": "risk",
        "positive": 1,
        "prior": [0.7, 0.3],
    },
)
SERVES = {"tasks": ("tabular",), "inputs": ("table",)}  # checked by models.build

MODELS.register(
    "tab_mlp",
    config=TabMLPConfig,
    summary="MLP with category embeddings and batch norm, for tables",
    example_meta=EXAMPLE_META,
    **SERVES,
)(lambda cfg, meta: TabMLP(meta, cfg))
MODELS.register(
    "ft_transformer",
    config=FTTransformerConfig,
    summary="FT-Transformer: a token per column, a Transformer over columns",
    example_meta=EXAMPLE_META,
    **SERVES,
)(lambda cfg, meta: FTTransformer(meta, cfg))
