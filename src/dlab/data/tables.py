"""Tables: one row per case, a target column, numeric and categorical columns.

A table becomes float rows of the same width: each numeric column standardised (its missing
values first filled with the training median), each categorical column as its level's code
(0 is the unknown bucket: a level never seen in training, at test or at prediction time; a
missing value becomes the training split's most frequent level). Every statistic (medians,
means, standard deviations, the levels and their codes) comes from the training split alone and
is saved with the run, so `dlab predict` encodes an applicant exactly as training did.

Column types are declared (`data.numeric`, `data.categorical`) or inferred: a column whose
every value is a number is numeric, one with no numbers categorical; a column with both is
refused (declare it) rather than guessed. Splits: `fold` (k of 5 stratified folds after a
seeded shuffle: a benchmark runs all five) or `random`; validation is carved, stratified, out of
the training part.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from dlab.data.bundle import DataBundle, DataMeta, TensorLoader, split_off
from dlab.errors import DataError, DlabWarning, InputError
from dlab.recipe import DataConfig
from dlab.registry import DATASETS

FOLDS = 5
UNKNOWN = "(unknown)"  # the level of code 0
# missing-value markers besides pandas' own (empty field, NA, NaN, null, ...)
MISSING = ("?",)


class TableConfig(DataConfig):
    """What every table accepts: the target, the column types, the split."""

    target: str = Field("target", description="the column to predict")
    numeric: list[str] | None = Field(
        None, description="columns read as numbers (default: inferred from the values)"
    )
    categorical: list[str] | None = Field(
        None, description="columns read as categories (default: inferred from the values)"
    )
    drop: list[str] = Field(default_factory=list, description="columns to leave out")
    positive: str | None = Field(
        None, description="the class that ROC AUC scores (default: the less frequent one)"
    )
    labels: dict[str, str] = Field(
        default_factory=dict, description="names for target values, e.g. {'1': good, '0': bad}"
    )
    costs: dict[str, dict[str, float]] | None = Field(
        None,
        description="cost of each error, costs[true][predicted]; decisions then minimise the "
        "expected cost",
    )
    numbers: Literal["standard", "quantile"] = Field(
        "standard",
        description="standard: (x - mean) / std; quantile: the training quantile of x mapped "
        "to a standard normal (long-tailed columns such as capital gains)",
    )
    min_count: int = Field(
        1, ge=1, description="a level seen fewer times in training goes to the unknown bucket"
    )
    split: Literal["fold", "random"] = Field(
        "fold", description="fold: block `fold` of 5 stratified folds; random: test_size"
    )
    fold: int = Field(1, ge=1, le=FOLDS, description="which of the 5 folds is the test split")
    test_size: float = Field(0.2, gt=0, lt=1, description="split: random: the test fraction")


class TableCsvConfig(TableConfig):
    """Your own table: a CSV (or TSV) file with a header row."""

    path: str = Field(description="the table (.csv, .tsv; header row required)")


def read_frame(path: Path) -> Any:
    """A CSV/TSV file as a frame of text (types are decided later, column by column)."""
    import pandas as pd

    if not path.is_file():
        raise DataError(f"data.path: {path} is not a file")
    try:
        frame = pd.read_csv(
            path,
            sep=None,
            engine="python",
            dtype=str,
            na_values=list(MISSING),
            skipinitialspace=True,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path}: not a readable CSV file ({str(exc).splitlines()[0]})") from None
    return frame


def column_kinds(frame: Any, config: TableConfig, where: str) -> dict[str, str]:
    """numeric or categorical for every feature column, declared or inferred."""
    import pandas as pd

    declared = {c: "numeric" for c in config.numeric or []}
    for column in config.categorical or []:
        if column in declared:
            raise DataError(f"data.categorical: '{column}' is also in data.numeric")
        declared[column] = "categorical"
    unknown = [c for c in [*declared, *config.drop] if c not in frame.columns]
    if unknown:
        raise DataError(f"{where}: no column '{unknown[0]}' (found {_names(frame)})")
    if config.target in declared:
        raise DataError(f"{where}: '{config.target}' is the target, not a feature")
    kinds = {}
    for column in frame.columns:
        if column == config.target or column in config.drop:
            continue
        values = frame[column].dropna()
        numbers = pd.to_numeric(values.astype(str).str.strip(), errors="coerce")
        text = values[numbers.isna()]
        kind = declared.get(column)
        if kind == "numeric" and len(text):
            raise DataError(
                f"{where}: column '{column}' is declared numeric but row "
                f"{int(text.index[0]) + 2} holds {text.iloc[0]!r}"
            )
        if kind is None and len(text) and len(text) < len(values):
            raise DataError(
                f"{where}: column '{column}' mixes numbers ({len(values) - len(text)}) and text "
                f"({len(text)}, first {text.iloc[0]!r} on row {int(text.index[0]) + 2}); "
                "declare it in data.categorical or data.numeric"
            )
        kinds[column] = kind or ("categorical" if len(text) else "numeric")
    if not kinds:
        raise DataError(f"{where}: no feature columns besides the target '{config.target}'")
    return kinds


def _names(frame: Any) -> str:
    return ", ".join(map(str, frame.columns))


def target_codes(frame: Any, config: TableConfig, where: str) -> tuple[np.ndarray, list[str]]:
    """The target as class indices and the class names (sorted; renamed by data.labels)."""
    if config.target not in frame.columns:
        raise DataError(
            f"{where}: no target column '{config.target}' (found {_names(frame)}); set data.target"
        )
    values = frame[config.target]
    missing = np.flatnonzero(values.isna().to_numpy())
    if len(missing):
        raise DataError(
            f"{where}: target '{config.target}' is missing on {len(missing)} rows (first: row "
            f"{int(missing[0]) + 2}); drop those rows or fill them"
        )
    raw = values.astype(str).str.strip().to_numpy()
    levels, codes = np.unique(raw, return_inverse=True)
    if len(levels) < 2:
        raise DataError(f"{where}: target '{config.target}' has one value ({levels[0]!r})")
    unknown = sorted(set(config.labels) - set(levels))
    if unknown:
        raise DataError(f"data.labels: target has no value {unknown[0]!r} (has {list(levels)})")
    return codes.astype(np.int64), [config.labels.get(v, v) for v in levels]


QUANTILES = 256  # points of each numeric column's training distribution


def fit_columns(frame: Any, kinds: dict[str, str], rows: np.ndarray, config: TableConfig) -> list:
    """Each column's statistics from the training rows: median, mean, std and quantiles of a
    numeric column (after filling); levels (by frequency, then name), their counts and the fill
    level of a categorical one. The quantiles also describe the column to explanations."""
    import pandas as pd

    columns = []
    for name, kind in kinds.items():
        values = frame[name].iloc[rows]
        if kind == "numeric":
            numbers = pd.to_numeric(values, errors="coerce").astype(float)
            median = float(numbers.median()) if numbers.notna().any() else 0.0
            filled = numbers.fillna(median)
            std = float(filled.std(ddof=0))
            standard = config.normalize or config.numbers == "quantile"
            points = np.linspace(0, 1, min(QUANTILES, len(filled)))
            columns.append(
                {"name": name, "kind": kind, "fill": median, "transform": config.numbers,
                 "mean": float(filled.mean()) if standard else 0.0,
                 "std": (std if std > 1e-12 else 1.0) if standard else 1.0,
                 "quantiles": np.quantile(filled.to_numpy(), points).tolist()}
            )  # fmt: skip
            continue
        counts = values.dropna().astype(str).str.strip().value_counts()
        counts = counts[counts >= config.min_count]
        levels = sorted(counts.index, key=lambda v: (-counts[v], v))
        columns.append(
            {"name": name, "kind": kind, "levels": levels, "counts": [int(counts[v]) for v in levels],
             "fill": levels[0] if levels else UNKNOWN}
        )  # fmt: skip
    return columns


def encode(
    frame: Any, columns: list, where: str, strict: bool = False
) -> tuple[torch.Tensor, dict]:
    """Rows of `frame` as float features (standardised numbers, level codes) with the training
    statistics in `columns`; also how many values of each categorical column were unseen.

    `strict` (prediction): a missing column is an InputError, and an unseen level a warning.
    """
    import pandas as pd

    out = np.zeros((len(frame), len(columns)), dtype=np.float32)
    unseen: dict[str, int] = {}
    for j, column in enumerate(columns):
        name = _field(column, "name")
        if name not in frame.columns:
            error = InputError if strict else DataError
            raise error(f"{where}: no column '{name}' (the model reads {_column_list(columns)})")
        values = frame[name]
        if _field(column, "kind") == "numeric":
            numbers = pd.to_numeric(values, errors="coerce")
            bad = numbers.isna() & values.notna()
            if bad.any():
                error = InputError if strict else DataError
                row = int(np.flatnonzero(bad.to_numpy())[0])
                raise error(
                    f"{where}: column '{name}', row {row + 1}: {values.iloc[row]!r} is not a number"
                )
            filled = numbers.astype(float).fillna(_field(column, "fill")).to_numpy()
            out[:, j] = scale(column, filled)
            continue
        levels = _field(column, "levels")
        lookup = {level: code for code, level in enumerate(levels, start=1)}
        text = values.astype(object).where(values.notna(), _field(column, "fill"))
        codes = np.array([lookup.get(str(v).strip(), 0) for v in text], dtype=np.float32)
        out[:, j] = codes
        if (codes == 0).any():
            unseen[name] = int((codes == 0).sum())
            if strict:
                first = str(text.iloc[int(np.flatnonzero(codes == 0)[0])]).strip()
                warnings.warn(
                    f"{where}: column '{name}': {first!r} was never seen in training; it goes to "
                    f"the unknown bucket (known: {', '.join(levels[:8])}{', ...' if len(levels) > 8 else ''})",
                    DlabWarning,
                    stacklevel=2,
                )
    return torch.from_numpy(out), unseen


def normal_scores(values: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    """Each value's position in the training distribution (interpolated between its quantiles;
    ties spread as scikit-learn's QuantileTransformer spreads them) as a standard normal score,
    clipped to ±5.2 (the quantile 1e-7 from either end)."""
    from scipy.special import ndtri

    levels = np.linspace(0, 1, len(quantiles))
    up = np.interp(values, quantiles, levels)
    down = -np.interp(-values, -quantiles[::-1], -levels[::-1])
    return ndtri(np.clip(0.5 * (up + down), 1e-7, 1 - 1e-7)).astype(np.float32)


def scale(column: Any, numbers: np.ndarray) -> np.ndarray:
    """A numeric column's values as the model reads them: standardised, or normal scores."""
    if _field(column, "transform") == "quantile":
        return normal_scores(numbers, np.asarray(_field(column, "quantiles")))
    return ((numbers - _field(column, "mean")) / _field(column, "std")).astype(np.float32)


def _field(column: Any, key: str) -> Any:
    return column.get(key) if isinstance(column, dict) else getattr(column, key)


def _column_list(columns: list) -> str:
    return ", ".join(_field(c, "name") for c in columns)


def split_table(y: np.ndarray, config: TableConfig) -> dict[str, np.ndarray]:
    """Row indices of train, val and test: stratified, a function of data.split_seed only."""
    rows = np.arange(len(y))
    if config.split == "fold":
        from sklearn.model_selection import StratifiedKFold

        if np.bincount(y).min() < FOLDS:
            raise DataError(f"data.split: fold needs at least {FOLDS} rows of every class")
        folds = StratifiedKFold(FOLDS, shuffle=True, random_state=config.split_seed)
        train, test = list(folds.split(rows, y))[config.fold - 1]
    else:
        (train, _), (test, _) = split_off(rows, y, config.test_size, config.split_seed + 1)
    (train, _), held = split_off(train, y[train], config.val_size, config.split_seed + 2)
    if config.limit is not None and config.limit < len(train):
        train = split_off(train, y[train], config.limit, config.split_seed + 3)[1][0]
    splits = {"train": np.sort(train), "test": np.sort(test)}
    if held is not None:
        splits["val"] = np.sort(held[0])
    return splits


def class_costs(config: TableConfig, classes: list[str]) -> list[list[float]] | None:
    """data.costs as a matrix costs[true][predicted] in class order (0 on the diagonal)."""
    if config.costs is None:
        return None
    matrix = [[0.0] * len(classes) for _ in classes]
    for true, row in config.costs.items():
        for predicted, cost in row.items():
            for name in (true, predicted):
                if name not in classes:
                    raise DataError(f"data.costs: '{name}' is not a class ({', '.join(classes)})")
            matrix[classes.index(true)][classes.index(predicted)] = float(cost)
    return matrix


def table_bundle(name: str, frame: Any, config: TableConfig, seed: int, where: str) -> DataBundle:
    """The DataBundle of a table read into `frame` (every cell text or a number)."""
    frame = frame.reset_index(drop=True)
    if len(frame) == 0:
        raise DataError(f"{where}: no rows")
    y, classes = target_codes(frame, config, where)
    kinds = column_kinds(frame, config, where)
    splits = split_table(y, config)
    columns = fit_columns(frame, kinds, splits["train"], config)
    counts = np.bincount(y[splits["train"]], minlength=len(classes))
    positive = int(np.argmin(counts)) if len(classes) == 2 else None
    if config.positive is not None:
        if config.positive not in classes:
            raise DataError(
                f"data.positive: '{config.positive}' is not a class ({', '.join(classes)})"
            )
        positive = classes.index(config.positive)
    meta = DataMeta(
        dataset=name,
        task="tabular",
        input_kind="table",
        input_shape=(len(columns),),
        num_classes=len(classes),
        classes=classes,
        sizes={k: len(v) for k, v in splits.items()},
        details={
            "columns": columns,
            "target": config.target,
            "positive": positive,
            "costs": class_costs(config, classes),
            "prior": (counts / counts.sum()).tolist(),
        },
    )
    loaders = {}
    for split, rows in splits.items():
        inputs, _ = encode(frame.iloc[rows].reset_index(drop=True), columns, where)
        size = config.batch_size if split == "train" else config.eval_batch_size
        targets = torch.from_numpy(y[rows])
        loaders[split] = TensorLoader(inputs, targets, size, shuffle=split == "train", seed=seed)
    return DataBundle(loaders["train"], loaders.get("val"), loaders.get("test"), meta)


@DATASETS.register(
    "table_csv",
    config=TableCsvConfig,
    summary="your own table: a CSV with a target column and numeric/categorical columns",
    size="as many rows as the file holds",
    splits="5 stratified folds / random",
    source="data.path",
)
def build_table_csv(config: TableCsvConfig, seed: int = 0) -> DataBundle:
    path = Path(config.path)
    return table_bundle(path.stem, read_frame(path), config, seed, str(path))


def read_cases(inputs: Any, columns: list, target: str | None = None) -> tuple[Any, list[str]]:
    """Cases to predict as one frame, and a name for each: a DataFrame, a list of dicts (one per
    case), or .csv / .json files (a JSON object or a list of them). A target column, if present,
    is ignored."""
    import json

    import pandas as pd

    if isinstance(inputs, pd.DataFrame):
        frame, names = inputs.reset_index(drop=True), [f"row {i + 1}" for i in range(len(inputs))]
    elif inputs and all(isinstance(i, dict) for i in inputs):
        frame, names = pd.DataFrame(list(inputs)), [f"case {i + 1}" for i in range(len(inputs))]
    else:
        frames, names = [], []
        for item in inputs or []:
            path = Path(item)
            if path.suffix.lower() == ".json":
                try:
                    data = json.loads(path.read_text())
                except (OSError, ValueError) as exc:
                    raise InputError(f"{path}: not a readable JSON file ({exc})") from None
                records = data if isinstance(data, list) else [data]
                if not all(isinstance(r, dict) for r in records):
                    raise InputError(
                        f"{path}: expected an object of column: value (or a list of them)"
                    )
                part = pd.DataFrame(records)
            elif path.suffix.lower() in (".csv", ".tsv", ".txt"):
                try:
                    part = read_frame(path)
                except DataError as exc:
                    raise InputError(str(exc)) from None
            else:
                raise InputError(f"{path}: a table model reads .csv or .json cases")
            frames.append(part)
            names += [
                f"{path.name}:{i + 1}" if len(part) > 1 else path.name for i in range(len(part))
            ]
        if not frames:
            raise InputError("predict: no cases given (a .csv or .json file of column values)")
        frame = pd.concat(frames, ignore_index=True)
    if len(frame) == 0:
        raise InputError("predict: the cases have no rows")
    return frame.drop(columns=[target], errors="ignore") if target else frame, names


def decode_value(column: Any, encoded: float) -> str:
    """An encoded value as the user wrote it: the number, or the level's name."""
    if column.kind == "categorical":
        code = round(encoded)
        return column.levels[code - 1] if 1 <= code <= len(column.levels) else UNKNOWN
    if column.transform == "quantile":
        from scipy.special import ndtr

        levels = np.linspace(0, 1, len(column.quantiles))
        return f"{float(np.interp(ndtr(encoded), levels, column.quantiles)):.4g}"
    return f"{encoded * column.std + column.mean:.4g}"


def background(column: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """The column's training distribution, encoded: values and their weights (summing to 1).
    A numeric column's quantiles weigh alike; a level weighs as often as training saw it."""
    if column.kind == "categorical":
        counts = torch.tensor(column.counts or [1] * len(column.levels), dtype=torch.float32)
        codes = torch.arange(1, len(column.levels) + 1, dtype=torch.float32)
        return codes, counts / counts.sum()
    values = torch.from_numpy(scale(column, np.asarray(column.quantiles, dtype=np.float64)))
    return values.float(), torch.full((len(values),), 1 / len(values))
