"""User-item ratings for recommendation: one table, its splits, and the loaders of two tasks.

A `Ratings` table holds one row per (user, item) rating with contiguous user and item indices;
the original ids (of any type) are kept, in index order, and saved with the run so that
`dlab recommend RUN --user 196` finds user 196 again. A source (MovieLens-100k, a user's CSV
file) builds the table; this module splits it and makes the loaders:

- rating prediction (explicit feedback): inputs are (user, item) index pairs, targets ratings;
- ranking (implicit feedback, the NCF protocol): every rating is an interaction; training pairs
  are the interactions (target 1) plus `negatives` items the user never rated per interaction
  (target 0), drawn afresh each epoch; validation and test ask, per user, to rank the held-out
  item among 99 items the user never rated.

Splits: `fold` (k of 5 disjoint test blocks, in the table's order: for MovieLens-100k that is
the official u1-u5 folds), `random` (a seeded fraction), `leave_last_out` (per user by time: the
last interaction is the test, the one before validation). Validation is always carved out of the
training part, never the test part.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from dlab.data.bundle import Batch, DataBundle, DataMeta, TensorLoader, epoch_generator
from dlab.errors import DataError
from dlab.recipe import DataConfig
from dlab.registry import DATASETS

FOLDS = 5
# data.task: ratings as they are (explicit feedback), or every rating as an interaction
EXPLICIT = {"rating": True, "ranking": False}


@dataclass
class Ratings:
    """A ratings table: rows of (user index, item index, rating[, time]) and what the ids mean."""

    users: np.ndarray  # (N,) int64 indices into user_ids
    items: np.ndarray  # (N,) int64 indices into item_ids
    ratings: np.ndarray  # (N,) float32
    times: np.ndarray | None  # (N,) int64 (e.g. unix seconds), or None
    user_ids: list[str]
    item_ids: list[str]
    scale: tuple[float, float]
    titles: list[str] = field(default_factory=list)  # per item, if known
    genres: list[str] = field(default_factory=list)  # genre names
    item_genres: np.ndarray | None = None  # (items, genres) 0/1
    user_fields: dict[str, tuple[np.ndarray, list[str]]] = field(
        default_factory=dict
    )  # side feature name -> (code per user, the levels)

    def __len__(self) -> int:
        return len(self.users)

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.user_ids), len(self.item_ids)


def index_ids(values: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Contiguous indices of `values` and the ids in index order (numeric ids sorted as numbers)."""
    unique, codes = np.unique(values, return_inverse=True)  # sorted: numbers as numbers
    return codes.astype(np.int64), [_id_text(v) for v in unique]


def _id_text(value: Any) -> str:
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def check_scale(ratings: np.ndarray, scale: tuple[float, float] | None, where: str) -> tuple:
    """The rating scale (declared or observed); a DataError names the first rating outside it."""
    if not np.isfinite(ratings).all():
        row = int(np.flatnonzero(~np.isfinite(ratings))[0])
        raise DataError(f"{where}: rating on row {row + 1} is not a number")
    if scale is None:
        return float(ratings.min()), float(ratings.max())
    lo, hi = scale
    outside = np.flatnonzero((ratings < lo) | (ratings > hi))
    if len(outside):
        row = int(outside[0])
        raise DataError(
            f"{where}: {len(outside)} ratings outside the scale {lo:g}-{hi:g} "
            f"(first: row {row + 1}, {ratings[row]:g}); fix the file or data.scale"
        )
    return float(lo), float(hi)


def resolve_duplicates(
    table: dict[str, np.ndarray], policy: str, where: str
) -> dict[str, np.ndarray]:
    """Rows with a unique (user, item): refuse duplicates, or keep their mean or the last one."""
    pairs = np.stack([table["user"], table["item"]], 1)
    _, first, inverse, counts = np.unique(
        pairs, axis=0, return_index=True, return_inverse=True, return_counts=True
    )
    inverse = inverse.reshape(-1)
    if (counts == 1).all():
        return table
    repeated = int((counts > 1).sum())
    if policy == "error":
        row = int(np.flatnonzero(counts[inverse] > 1)[0])
        raise DataError(
            f"{where}: {repeated} (user, item) pairs are rated more than once (first: user "
            f"{_id_text(table['user_raw'][row])}, item {_id_text(table['item_raw'][row])}); set "
            "data.duplicates: mean (average them) or last (keep the latest)"
        )
    if policy == "mean":
        sums = np.bincount(inverse, weights=table["rating"])
        keep = np.sort(first)
        out = {k: v[keep] for k, v in table.items()}
        out["rating"] = (sums / counts)[inverse[keep]].astype(np.float32)
        return out
    # last: the latest by time where there are times, else the last row
    order = np.lexsort(
        (np.arange(len(inverse)), table.get("time", np.zeros(len(inverse))), inverse)
    )
    last_of_group = order[np.r_[np.flatnonzero(np.diff(inverse[order])), len(order) - 1]]
    keep = np.sort(last_of_group)
    return {k: v[keep] for k, v in table.items()}


class SplitConfig(DataConfig):
    """How a ratings table is split, and which task its bundle serves."""

    task: Literal["rating", "ranking"] = Field(
        "rating",
        description="rating: predict each rating (RMSE); ranking: rank items a user would pick "
        "(implicit feedback, HR@10 / NDCG@10)",
    )
    split: Literal["fold", "random", "leave_last_out"] = Field(
        "fold",
        description="fold: test block `fold` of 5 (MovieLens: the official u1-u5); random: a "
        "seeded test_size fraction; leave_last_out: each user's last interaction (ranking)",
    )
    fold: int = Field(1, ge=1, le=FOLDS, description="which of the 5 folds is the test split")
    test_size: float = Field(0.2, gt=0, lt=1, description="split: random: the test fraction")
    negatives: int = Field(
        4, ge=1, le=100, description="ranking: sampled non-interacted items per interaction"
    )
    candidates: int = Field(
        99, ge=1, description="ranking: items the held-out one is ranked against (NCF: 99)"
    )
    cold_start: Literal["popular", "refuse"] = Field(
        "popular",
        description="an unknown user or item at prediction: answer with the popularity fallback "
        "(and say so), or refuse naming the id",
    )
    normalize: bool = Field(False, description="(not used: ratings keep their scale)")


def split_rows(table: Ratings, config: SplitConfig) -> dict[str, np.ndarray]:
    """Row indices of train / val / test."""
    n, rng = len(table), np.random.default_rng(config.split_seed)
    if not EXPLICIT[config.task] and config.split != "leave_last_out":
        raise DataError(
            "data.split: ranking is evaluated leave-one-out (NCF protocol); use split: leave_last_out"
        )
    if config.split == "leave_last_out":
        return _leave_last_out(table, config.val_size > 0)
    if config.split == "fold":
        bounds = np.linspace(0, n, FOLDS + 1).round().astype(int)
        test = np.arange(bounds[config.fold - 1], bounds[config.fold])
    else:
        test = np.sort(rng.permutation(n)[: round(config.test_size * n)])
    rest = np.setdiff1d(np.arange(n), test)
    count = round(config.val_size * len(rest)) if config.val_size < 1 else int(config.val_size)
    held = np.sort(np.random.default_rng(config.split_seed + 1).permutation(rest)[:count])
    train = np.setdiff1d(rest, held)
    if config.limit is not None:
        train = np.sort(rng.permutation(train)[: config.limit])
    return {"train": train, "val": held, "test": test} if count else {"train": train, "test": test}


def _leave_last_out(table: Ratings, validate: bool) -> dict[str, np.ndarray]:
    """Per user by time (row order breaks ties): last -> test, the one before -> val; users with
    fewer than three interactions stay wholly in training."""
    times = table.times if table.times is not None else np.arange(len(table))
    order = np.lexsort((np.arange(len(table)), times, table.users))
    users = table.users[order]
    ends = np.r_[np.flatnonzero(np.diff(users)), len(users) - 1]
    counts = np.diff(np.r_[-1, ends])
    enough = counts >= 3
    test = order[ends[enough]]
    val = order[ends[enough] - 1] if validate else np.array([], dtype=np.int64)
    train = np.setdiff1d(np.arange(len(table)), np.r_[test, val])
    splits = {"train": train, "test": np.sort(test)}
    if validate:
        splits["val"] = np.sort(val)
    return splits


def _pairs(table: Ratings, rows: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.stack([table.users[rows], table.items[rows]], 1))


class NegativeSampler:
    """Training batches for implicit feedback: each interaction (target 1) and `negatives`
    items its user has not interacted with in training (target 0), drawn afresh every epoch
    from (seed, epoch) only, so that a resumed run sees the same batches."""

    def __init__(self, pairs: torch.Tensor, items: int, negatives: int, batch_size: int, seed: int):
        self.pairs, self.items, self.negatives = pairs, items, negatives
        self.batch_size, self.seed = batch_size, seed
        self.known = torch.unique(pairs[:, 0] * items + pairs[:, 1])  # sorted keys

    @property
    def num_samples(self) -> int:
        return len(self.pairs) * (1 + self.negatives)

    def __len__(self) -> int:
        return -(-self.num_samples // self.batch_size)

    def to(self, device: torch.device) -> NegativeSampler:
        self.pairs, self.known = self.pairs.to(device), self.known.to(device)
        return self

    def sample_batch(self) -> Batch:
        pairs = self.pairs[: self.batch_size]
        return pairs, torch.ones(len(pairs), device=pairs.device)

    def draw(self, generator: torch.Generator) -> torch.Tensor:
        """(N·negatives, 2) pairs of each training user with items they never interacted with."""
        users = self.pairs[:, 0].cpu().repeat_interleave(self.negatives)
        items = torch.randint(self.items, (len(users),), generator=generator)
        known = self.known.cpu()
        for _ in range(100):  # redraw collisions; each round keeps ~94% on MovieLens
            key = users * self.items + items
            hit = torch.isin(key, known)
            if not hit.any():
                break
            items[hit] = torch.randint(self.items, (int(hit.sum()),), generator=generator)
        return torch.stack([users, items], 1).to(self.pairs.device)

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        generator = epoch_generator(self.seed, epoch)
        negative = self.draw(generator)
        inputs = torch.cat([self.pairs, negative])
        targets = torch.cat([torch.ones(len(self.pairs)), torch.zeros(len(negative))]).to(
            inputs.device
        )
        order = torch.randperm(len(inputs), generator=generator).to(inputs.device)
        for i in range(start, len(self)):
            index = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield inputs[index], targets[index]


def candidate_lists(
    table: Ratings, rows: np.ndarray, count: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per held-out row: its item among `count` items its user never rated, in a random order.

    Returns inputs (U, count + 1, 2) of (user, item) and targets (U, count + 1), 1 at the held-out
    item: a model scores every candidate and is judged by the rank of the 1."""
    n_users, n_items = table.shape
    if count >= n_items:
        raise DataError(f"data.candidates: {count} needs more than {n_items} items")
    rated = np.zeros((n_users, n_items), dtype=bool)
    rated[table.users, table.items] = True
    rng = np.random.default_rng(seed)
    inputs = np.empty((len(rows), count + 1, 2), dtype=np.int64)
    targets = np.zeros((len(rows), count + 1), dtype=np.float32)
    for k, row in enumerate(rows):
        user = table.users[row]
        unrated = np.flatnonzero(~rated[user])
        if len(unrated) < count:
            raise DataError(f"user {table.user_ids[user]} rated all but {len(unrated)} items")
        chosen = np.r_[table.items[row], rng.choice(unrated, count, replace=False)]
        place = rng.permutation(count + 1)
        inputs[k, place, 0], inputs[k, place, 1] = user, chosen
        targets[k, place[0]] = 1.0
    return torch.from_numpy(inputs), torch.from_numpy(targets)


def details_of(table: Ratings, train: np.ndarray, config: SplitConfig) -> dict[str, Any]:
    """What the recommender tasks save about the data: the ids, titles, side features, the
    training statistics behind the cold-start fallback."""
    _n_users, n_items = table.shape
    counts = np.bincount(table.items[train], minlength=n_items)
    sums = np.bincount(table.items[train], weights=table.ratings[train], minlength=n_items)
    mean = float(table.ratings[train].mean()) if len(train) else 0.0
    shrink = 5.0  # an item with few ratings leans on the global mean
    item_mean = (sums + shrink * mean) / (counts + shrink)
    genres = table.item_genres
    return {
        "users": table.user_ids,
        "items": table.item_ids,
        "titles": table.titles,
        "genres": table.genres,
        "item_genres": (
            [int(sum(1 << g for g in np.flatnonzero(row))) for row in genres]
            if genres is not None
            else []
        ),
        "user_fields": list(table.user_fields),
        "user_levels": [levels for _, levels in table.user_fields.values()],
        "user_codes": [codes.tolist() for codes, _ in table.user_fields.values()],
        "scale": list(table.scale),
        "global_mean": mean,
        "popularity": counts.tolist(),
        "item_mean": [round(float(v), 4) for v in item_mean],
        "explicit": EXPLICIT[config.task],
        "cold_start": config.cold_start,
        "candidates": config.candidates,
    }


def ratings_bundle(name: str, table: Ratings, config: SplitConfig, seed: int) -> DataBundle:
    """The DataBundle of `table` for the recipe's task (rating or ranking)."""
    if len(table) == 0:
        raise DataError(f"{name}: no ratings")
    splits = split_rows(table, config)
    train = splits["train"]
    meta = DataMeta(
        dataset=name,
        task=config.task,
        input_kind="pairs",
        input_shape=(2,),
        sizes={k: len(v) for k, v in splits.items()},
        details=details_of(table, train, config),
    )
    loaders: dict[str, Any] = {}
    if EXPLICIT[config.task]:
        for split, rows in splits.items():
            targets = torch.from_numpy(table.ratings[rows].astype(np.float32))
            size = config.batch_size if split == "train" else config.eval_batch_size
            loaders[split] = TensorLoader(
                _pairs(table, rows), targets, size, shuffle=split == "train", seed=seed
            )
    else:
        loaders["train"] = NegativeSampler(
            _pairs(table, train), table.shape[1], config.negatives, config.batch_size, seed
        )
        for split in ("val", "test"):
            if split in splits:
                inputs, targets = candidate_lists(
                    table, splits[split], config.candidates, config.split_seed + 7
                )
                loaders[split] = TensorLoader(inputs, targets, config.eval_batch_size // 16 or 1)
    seen = np.r_[train, splits.get("val", train[:0])]
    return DataBundle(
        loaders["train"],
        loaders.get("val"),
        loaders.get("test"),
        meta,
        extra={
            "train_pairs": _pairs(table, train),
            "train_ratings": torch.from_numpy(table.ratings[train].astype(np.float32)),
            "seen_pairs": _pairs(table, seen),
        },
        files={
            SEEN_FILE: lambda path: save_seen(
                path, _pairs(table, seen), torch.from_numpy(table.ratings[seen])
            )
        },
    )


SEEN_FILE = "seen.npz"  # what each user rated in training: `recommend --exclude-seen` reads it


def save_seen(path: Path, pairs: torch.Tensor, ratings: torch.Tensor) -> None:
    """Write (user, item) index pairs and their ratings, atomically."""
    from dlab._io import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(
                f, pairs=pairs.numpy().astype(np.int32), ratings=ratings.numpy().astype(np.float32)
            )

    atomic_write(path, write)


def load_seen(path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs and ratings of `save_seen` (none if the run has no such file)."""
    if not path.is_file():
        return torch.zeros((0, 2), dtype=torch.long), torch.zeros(0)
    try:
        with np.load(path, allow_pickle=False) as data:
            pairs, ratings = data["pairs"].astype(np.int64), data["ratings"]
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"{path}: unreadable ({exc}); retrain the run") from None
    return torch.from_numpy(pairs), torch.from_numpy(ratings)


class RatingsCsvConfig(SplitConfig):
    """Your own ratings: a CSV (or TSV) file with a user, an item and a rating per row."""

    path: str = Field(description="the ratings file (.csv, .tsv; header row required)")
    user: str = Field("user", description="the column of user ids (any type)")
    item: str = Field("item", description="the column of item ids (any type)")
    rating: str = Field("rating", description="the column of ratings")
    timestamp: str | None = Field(
        None, description="the column of times (needed by split: leave_last_out)"
    )
    scale: tuple[float, float] | None = Field(
        None, description="(lowest, highest) allowed rating; default: as observed"
    )
    duplicates: Literal["error", "mean", "last"] = Field(
        "error", description="a (user, item) rated twice: refuse, average, or keep the latest"
    )
    split: Literal["fold", "random", "leave_last_out"] = Field(
        "random",
        description="fold: block `fold` of 5 after a seeded shuffle; random; leave_last_out",
    )


def read_ratings_csv(config: RatingsCsvConfig) -> Ratings:
    """The table of a user's ratings file, every problem a one-line DataError."""
    import pandas as pd

    path = Path(config.path)
    if not path.is_file():
        raise DataError(f"data.path: {path} is not a file")
    try:
        frame = pd.read_csv(path, sep=None, engine="python", dtype=str)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0]})") from None
    wanted = {"user": config.user, "item": config.item, "rating": config.rating}
    if config.timestamp:
        wanted["time"] = config.timestamp
    for role, column in wanted.items():
        if column not in frame.columns:
            raise DataError(
                f"{path}: no column '{column}' (the {role} column; found "
                f"{', '.join(map(str, frame.columns))}); set data.{role if role != 'time' else 'timestamp'}"
            )
    frame = frame[list(wanted.values())].dropna(how="all")
    missing = frame.isna().any(axis=1).to_numpy()
    if missing.any():
        raise DataError(f"{path}: row {int(np.flatnonzero(missing)[0]) + 2} has an empty field")
    table = {"user_raw": _ids(frame[config.user]), "item_raw": _ids(frame[config.item])}
    table["rating"] = _numbers(frame[config.rating], path, config.rating).astype(np.float32)
    if config.timestamp:
        table["time"] = _numbers(frame[config.timestamp], path, config.timestamp).astype(np.int64)
    scale = check_scale(table["rating"], config.scale, str(path))
    table["user"], user_ids = index_ids(table["user_raw"])
    table["item"], item_ids = index_ids(table["item_raw"])
    table = resolve_duplicates(table, config.duplicates, str(path))
    order = np.random.default_rng(config.split_seed + 3).permutation(len(table["user"]))
    if config.split == "leave_last_out":
        order = np.arange(len(table["user"]))
    return Ratings(
        table["user"][order],
        table["item"][order],
        table["rating"][order],
        table["time"][order] if "time" in table else None,
        user_ids,
        item_ids,
        scale,
    )


def _ids(column: Any) -> np.ndarray:
    """Ids as numbers when every one is an integer (so 2 sorts before 10), else as text."""
    values = column.str.strip().to_numpy()
    try:
        numbers = values.astype(np.float64)
    except ValueError:
        return values.astype(str)
    return numbers.astype(np.int64) if np.all(numbers == np.round(numbers)) else values.astype(str)


def _numbers(column: Any, path: Path, name: str) -> np.ndarray:
    import pandas as pd

    values = pd.to_numeric(column.str.strip(), errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        row = int(bad[0])
        raise DataError(
            f"{path}: column '{name}', row {row + 2}: {column.iloc[row]!r} is not a number"
        )
    return values


@DATASETS.register(
    "ratings_csv",
    config=RatingsCsvConfig,
    summary="your own ratings: a CSV of user, item, rating[, timestamp]",
    size="as many ratings as the file holds",
    splits="random / 5 folds / leave-last-out per user",
    source="data.path",
)
def build_ratings_csv(config: RatingsCsvConfig, seed: int = 0) -> DataBundle:
    return ratings_bundle(Path(config.path).stem, read_ratings_csv(config), config, seed)
