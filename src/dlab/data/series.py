"""Time series for forecasting: statsmodels' classic series or any CSV column, cut into windows.

The series is split by time (train, then val, then test); the scaler is fitted on the training
part alone, and a window belongs to a split only if every point it predicts lies in that split,
so nothing from the future leaks into training. Batches are (inputs (B, window, features),
targets (B, horizon)) in scaled units; meta.details holds the scaler to undo it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field

from dlab.data.bundle import DataBundle, DataMeta, TensorLoader
from dlab.data.files import column, read_table
from dlab.data.store import data_dir
from dlab.errors import DataError
from dlab.extras import install_line
from dlab.recipe import DataConfig
from dlab.registry import DATASETS


class SeriesConfig(DataConfig):
    """Fields of forecasting data sets."""

    column: str | None = Field(
        None, description="the column to forecast (each series has a default)"
    )
    features: list[str] = Field(
        default_factory=list, description="other columns fed to the model as inputs"
    )
    window: int = Field(24, ge=1, description="past time steps the model sees")
    horizon: int = Field(1, ge=1, description="future time steps it predicts")
    val_size: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="fraction of the series, after the training part, for validation",
    )
    test_size: float = Field(
        0.2, ge=0, lt=1, description="fraction of the series, at the end, for test"
    )
    scale: Literal["standard", "minmax", "none"] = Field(
        "standard", description="scaling fitted on the training part only"
    )
    missing: Literal["interpolate", "error"] = Field(
        "interpolate", description="what to do with empty or NaN cells"
    )
    batch_size: int = Field(32, gt=0, description="training batch size")


def _numbers(cells: list[str], name: str, path: Path, missing: str) -> np.ndarray:
    values = np.empty(len(cells))
    for row, cell in enumerate(cells, start=2):
        text = cell.strip()
        if text in ("", "NA", "NaN", "nan", "."):
            values[row - 2] = np.nan
            continue
        try:
            values[row - 2] = float(text)
        except ValueError:
            raise DataError(
                f"{path}: row {row}, column '{name}': {text[:20]!r} is not a number"
            ) from None
    gaps = np.isnan(values)
    if gaps.any():
        if missing == "error" or gaps.all():
            raise DataError(
                f"{path}: column '{name}' has {int(gaps.sum())} missing values (data.missing: interpolate fills them)"
            )
        known = np.flatnonzero(~gaps)
        values[gaps] = np.interp(
            np.flatnonzero(gaps), known, values[known]
        )  # linear; ends held flat
    return values


def _scaler(train_part: np.ndarray, scale: str) -> tuple[np.ndarray, np.ndarray]:
    """(shift, spread) per column, from the training part only: value = scaled * spread + shift."""
    if scale == "standard":
        return train_part.mean(axis=0), train_part.std(axis=0).clip(1e-12)
    if scale == "minmax":
        return train_part.min(axis=0), np.ptp(train_part, axis=0).clip(1e-12)
    return np.zeros(train_part.shape[1]), np.ones(train_part.shape[1])


def _windows(
    scaled: np.ndarray, starts: np.ndarray, target: int, config: SeriesConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Inputs (N, window, features) before each start, targets (N, horizon) from it on."""
    inputs = scaled[starts[:, None] + np.arange(-config.window, 0)]
    targets = scaled[starts[:, None] + np.arange(config.horizon), target]
    return inputs, targets


def _loaders(tensors: dict[str, Any], config: SeriesConfig, seed: int) -> list[Any]:
    """Train (shuffled), val and test loaders; None for a split without windows."""
    return [
        TensorLoader(
            *tensors[name],
            config.batch_size if name == "train" else config.eval_batch_size,
            shuffle=name == "train",
            seed=seed,
        )
        if name in tensors
        else None
        for name in ("train", "val", "test")
    ]


def windows_bundle(
    values: np.ndarray,
    target: int,
    config: SeriesConfig,
    dataset: str,
    seed: int,
    columns: list[str],
) -> DataBundle:
    """Scale (training part only), cut windows, and split them by the time of their targets."""
    steps = len(values)
    n_test = round(config.test_size * steps)
    n_val = round(config.val_size * steps)
    n_train = steps - n_val - n_test
    need = config.window + config.horizon
    if n_train < need + 1:
        raise DataError(
            f"{dataset}: {steps} time steps leave {n_train} for training, too few for window {config.window} + "
            f"horizon {config.horizon}; shorten data.window or data.test_size/val_size"
        )
    shift, spread = _scaler(values[:n_train], config.scale)
    scaled = ((values - shift) / spread).astype(np.float32)
    starts = np.arange(config.window, steps - config.horizon + 1)  # first predicted step
    ends = starts + config.horizon  # one past the last predicted step
    masks = {
        "train": ends <= n_train,
        "val": (starts >= n_train) & (ends <= n_train + n_val),
        "test": starts >= n_train + n_val,
    }
    tensors, naive = {}, {}
    for name, mask in masks.items():
        if mask.any():
            inputs, targets = _windows(scaled, starts[mask], target, config)
            tensors[name] = (torch.from_numpy(inputs), torch.from_numpy(targets))
            last = inputs[:, -1, target][:, None]  # naive forecast: the last value seen
            naive[name] = float(np.abs(targets - last).mean() * spread[target])  # in units
    if "val" not in tensors and config.val_size > 0:
        raise DataError(
            f"{dataset}: the validation part is shorter than window {config.window} + horizon {config.horizon}"
        )

    meta = DataMeta(
        dataset=dataset,
        task="regression",
        input_kind="series",
        input_shape=(config.window, values.shape[1]),
        sizes={name: len(pair[1]) for name, pair in tensors.items()},
        details={
            "horizon": config.horizon,
            "columns": columns,
            "target_index": target,
            "scale": config.scale,
            "shift": shift.tolist(),
            "spread": spread.tolist(),
            "naive_mae": naive,
            "steps": {"train": n_train, "val": n_val, "test": n_test},
        },
    )
    return DataBundle(*_loaders(tensors, config, seed), meta)


def series_from_table(
    path: Path, config: SeriesConfig, default_column: str
) -> tuple[np.ndarray, int, list[str]]:
    """The target column (and feature columns) of a CSV file as a (T, F) array."""
    header, rows = read_table(path)
    names = [config.column or default_column, *config.features]
    if len(set(names)) != len(names):
        raise DataError(f"data.features: repeats the target column '{names[0]}'")
    values = np.stack(
        [
            _numbers(
                [
                    r[column(header, n, path, "data.column" if i == 0 else "data.features")]
                    for r in rows
                ],
                n,
                path,
                config.missing,
            )
            for i, n in enumerate(names)
        ],
        axis=1,
    )
    return values, 0, names


def statsmodels_csv(name: str) -> Path:
    """A series CSV: $DLAB_DATA_DIR/timeseries/<name>.csv, else the copy inside statsmodels."""
    local = data_dir() / "timeseries" / f"{name}.csv"
    if local.is_file():
        return local
    spec = importlib.util.find_spec("statsmodels")
    if spec is None or spec.origin is None:
        raise DataError(
            f"{name}: not in {local.parent} and the statsmodels package is not installed "
            f"({install_line('data')})"
        )
    packaged = Path(spec.origin).parent / "datasets" / name / f"{name}.csv"
    if not packaged.is_file():
        raise DataError(f"{name}: statsmodels has no {packaged.name}")
    return packaged


SERIES = {
    "sunspots": ("SUNACTIVITY", "yearly sunspot numbers 1700-2008", "309 years"),
    "co2": ("co2", "weekly CO2 at Mauna Loa 1958-2001 (59 gaps interpolated)", "2,284 weeks"),
    "macrodata": (
        "realgdp",
        "quarterly US macroeconomic series 1959-2009 (14 columns)",
        "203 quarters",
    ),
    "elnino": ("SST", "monthly El Niño sea-surface temperature 1950-2010", "732 months"),
}


def _register(name: str, column_name: str, summary: str, size: str) -> None:
    @DATASETS.register(
        name,
        config=SeriesConfig,
        summary=summary,
        packaged="statsmodels",
        size=size,
        splits="chronological: 70% train / 10% val / 20% test",
        source="statsmodels datasets (CSV)",
    )
    def build(config: SeriesConfig, seed: int = 0) -> DataBundle:
        path = statsmodels_csv(name)
        if (
            name == "elnino"
        ):  # one row per year, twelve month columns: read it as one monthly series
            if config.column not in (None, "SST") or config.features:
                raise DataError(
                    "data.column: elnino is a single monthly series (SST); it has no other columns"
                )
            _, rows = read_table(path)
            months = np.asarray([[float(c) for c in row[1:]] for row in rows]).reshape(-1, 1)
            return windows_bundle(months, 0, config, name, seed, ["SST"])
        values, target, columns = series_from_table(path, config, column_name)
        return windows_bundle(values, target, config, name, seed, columns)


for _name, (_column, _summary, _size) in SERIES.items():
    _register(_name, _column, _summary, _size)


class CsvSeriesConfig(SeriesConfig):
    """Any CSV/TSV file with a header; one row per time step, oldest first."""

    path: str = Field(description="the .csv or .tsv file")
    column: str | None = Field(None, description="the column to forecast (required)")


@DATASETS.register(
    "csv_series",
    config=CsvSeriesConfig,
    summary="your own time series: a column of a CSV/TSV file, one row per step",
    size="yours",
    splits="chronological: from data.val_size and data.test_size",
    source="data.path",
)
def build_csv_series(config: CsvSeriesConfig, seed: int = 0) -> DataBundle:
    if config.column is None:
        raise DataError("data.column: csv_series needs the name of the column to forecast")
    path = Path(config.path).expanduser()
    values, target, columns = series_from_table(path, config, config.column)
    return windows_bundle(values, target, config, path.name, seed, columns)


def naive_baseline(meta: DataMeta, split: str = "test") -> float:
    """Mean absolute error of forecasting 'the last value seen', in the series' units."""
    value = meta.details.naive_mae.get(split)
    return float("nan") if value is None else value
