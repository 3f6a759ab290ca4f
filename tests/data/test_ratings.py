"""Ratings tables: a user's CSV file (every bad input one line), the splits, negative sampling and
candidate lists of the ranking protocol."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlab.data.ratings import (
    NegativeSampler,
    Ratings,
    RatingsCsvConfig,
    SplitConfig,
    candidate_lists,
    index_ids,
    ratings_bundle,
    read_ratings_csv,
    split_rows,
)
from dlab.errors import DataError


def write_csv(path, rows, header="user,item,rating,timestamp"):
    path.write_text(header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def table(users=30, items=40, per_user=12, seed=0) -> Ratings:
    """A table where each user rated `per_user` distinct items at increasing times."""
    rng = np.random.default_rng(seed)
    u, i, t = [], [], []
    for user in range(users):
        chosen = rng.choice(items, per_user, replace=False)
        u += [user] * per_user
        i += list(chosen)
        t += list(rng.permutation(per_user) + 1000 * user)
    n = len(u)
    return Ratings(
        np.asarray(u),
        np.asarray(i),
        rng.integers(1, 6, n).astype(np.float32),
        np.asarray(t, dtype=np.int64),
        [f"u{k}" for k in range(users)],
        [f"i{k}" for k in range(items)],
        (1.0, 5.0),
    )


def test_ids_of_any_type_map_to_contiguous_indices_numbers_in_numeric_order():
    codes, ids = index_ids(np.asarray([10, 2, 10, 33]))
    assert ids == ["2", "10", "33"] and codes.tolist() == [1, 0, 1, 2]
    codes, ids = index_ids(np.asarray(["bob", "al", "bob"]))
    assert ids == ["al", "bob"] and codes.tolist() == [1, 0, 1]


def test_a_csv_becomes_a_table_with_its_ids_kept(tmp_path):
    path = write_csv(tmp_path / "r.csv", [("x", 7, 4, 1), ("y", 7, 2, 2), ("x", 12, 5, 3)])
    found = read_ratings_csv(RatingsCsvConfig(name="ratings_csv", path=str(path)))
    assert found.user_ids == ["x", "y"] and found.item_ids == ["7", "12"]
    rows = sorted(
        zip(found.users.tolist(), found.items.tolist(), found.ratings.tolist(), strict=True)
    )
    assert rows == [(0, 0, 4.0), (0, 1, 5.0), (1, 0, 2.0)]
    assert found.scale == (2.0, 5.0)  # observed, when not declared


@pytest.mark.parametrize(
    ("rows", "header", "fields", "message"),
    [
        ([("a", 1, 3)], "user,item,stars", {}, "no column 'rating'"),
        ([("a", 1, 3)], "user,item,stars", {}, "set data.rating"),
        (
            [("a", 1, 3), ("b", 1, 9)],
            "user,item,rating",
            {"scale": (1, 5)},
            "outside the scale 1-5",
        ),
        ([("a", 1, 3), ("b", 1, 9)], "user,item,rating", {"scale": (1, 5)}, "row 2, 9"),
        ([("a", 1, "good")], "user,item,rating", {}, "'good' is not a number"),
        ([("a", 1, 3), ("a", 1, 4)], "user,item,rating", {}, "user a, item 1"),
        ([("a", 1, 3), ("a", 1, 4)], "user,item,rating", {}, "data.duplicates: mean"),
        ([("a", "", 3)], "user,item,rating", {}, "row 2 has an empty field"),
    ],
)
def test_bad_files_get_one_line_naming_the_problem(tmp_path, rows, header, fields, message):
    path = write_csv(tmp_path / "r.csv", rows, header)
    with pytest.raises(DataError, match=message) as caught:
        read_ratings_csv(RatingsCsvConfig(name="ratings_csv", path=str(path), **fields))
    assert "\n" not in str(caught.value)


def test_duplicate_policies_average_or_keep_the_latest(tmp_path):
    rows = [("a", 1, 2, 30), ("a", 1, 5, 10), ("a", 1, 4, 20), ("b", 2, 1, 5)]
    path = write_csv(tmp_path / "r.csv", rows)
    config = {"name": "ratings_csv", "path": str(path), "timestamp": "timestamp"}
    mean = read_ratings_csv(RatingsCsvConfig(**config, duplicates="mean"))
    last = read_ratings_csv(RatingsCsvConfig(**config, duplicates="last"))
    for found, expected in ((mean, 11 / 3), (last, 2.0)):  # latest is time 30: rating 2
        a = found.user_ids.index("a")
        assert len(found) == 2
        assert float(found.ratings[found.users == a][0]) == pytest.approx(expected)


def test_official_folds_are_disjoint_blocks_that_cover_the_table():
    data = table()
    tests = []
    for fold in range(1, 6):
        rows = split_rows(data, SplitConfig(name="x", split="fold", fold=fold, val_size=0.1))
        tests.append(rows["test"])
        assert rows["test"].tolist() == list(range(rows["test"][0], rows["test"][-1] + 1))
        assert not set(rows["val"]) & set(rows["test"])  # validation from the training part
        assert not set(rows["train"]) & set(rows["val"])
        assert len(rows["train"]) + len(rows["val"]) + len(rows["test"]) == len(data)
    assert sorted(np.concatenate(tests).tolist()) == list(range(len(data)))


def test_leave_last_out_holds_out_each_users_latest_and_the_one_before():
    data = table()
    rows = split_rows(data, SplitConfig(name="x", task="ranking", split="leave_last_out"))
    for user in range(30):
        mine = np.flatnonzero(data.users == user)
        by_time = mine[np.argsort(data.times[mine])]
        assert by_time[-1] in rows["test"] and by_time[-2] in rows["val"]
        assert set(by_time[:-2]) <= set(rows["train"])


def test_ranking_refuses_a_split_that_is_not_leave_one_out():
    with pytest.raises(DataError, match="leave_last_out"):
        split_rows(table(), SplitConfig(name="x", task="ranking", split="random"))


def test_negatives_are_items_the_user_never_chose_and_fixed_by_seed_and_epoch():
    data = table()
    pairs = torch.from_numpy(np.stack([data.users, data.items], 1))
    sampler = NegativeSampler(pairs, 40, negatives=4, batch_size=64, seed=3)
    chosen = {(int(u), int(i)) for u, i in pairs}
    batches = list(sampler.epoch(0))
    inputs, targets = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert len(inputs) == sampler.num_samples == 5 * len(pairs)
    negatives = inputs[targets == 0]
    assert len(negatives) == 4 * len(pairs)
    assert not chosen & {(int(u), int(i)) for u, i in negatives}
    assert {(int(u), int(i)) for u, i in inputs[targets == 1]} == chosen
    again = list(sampler.epoch(0))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches, again, strict=True))
    assert not torch.equal(next(sampler.epoch(1))[0], batches[0][0])
    resumed = list(sampler.epoch(0, start=3))  # a resumed run sees the same rest of the epoch
    assert all(torch.equal(a[0], b[0]) for a, b in zip(batches[3:], resumed, strict=True))


def test_candidate_lists_hide_one_held_out_item_among_unrated_ones():
    data = table()
    rows = np.asarray([0, 12, 24])
    inputs, targets = candidate_lists(data, rows, count=20, seed=0)
    assert inputs.shape == (3, 21, 2) and targets.shape == (3, 21)
    assert targets.sum(1).tolist() == [1.0, 1.0, 1.0]
    for k, row in enumerate(rows):
        user = data.users[row]
        assert (inputs[k, :, 0] == user).all()
        assert int(inputs[k][targets[k].bool()][0, 1]) == data.items[row]
        rated = set(data.items[data.users == user].tolist())
        others = inputs[k][~targets[k].bool()][:, 1].tolist()
        assert len(set(others)) == 20 and not rated & set(others)
    assert len({int(t.argmax()) for t in targets}) > 1  # not always in the same place


def test_a_bundle_keeps_ids_and_training_statistics_for_prediction_time():
    data = table()
    bundle = ratings_bundle("toy", data, SplitConfig(name="x", split="random"), seed=0)
    details = bundle.meta.details
    assert details.users == data.user_ids and details.items == data.item_ids
    train_rows = bundle.extra["train_pairs"]
    assert sum(details.popularity) == len(train_rows)
    assert details.global_mean == pytest.approx(float(bundle.extra["train_ratings"].mean()))
    x, y = next(bundle.train.epoch(0))
    assert x.dtype == torch.long and x.shape[1] == 2 and y.dtype == torch.float32
    assert "seen.npz" in bundle.files
