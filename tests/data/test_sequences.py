"""Language-model blocks, translation pairs and time-series windows (no look-ahead)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlab.data import build
from dlab.data.sequences import TokenBlockLoader
from dlab.data.tokenizers import BOS, EOS
from dlab.errors import DataError
from dlab.recipe import from_dict


def data_config(**fields):
    return from_dict({"data": fields, "model": {"name": "mlp"}}).data


@pytest.mark.shared_data
def test_tinyshakespeare_like_nanogpt(real_data_dir):
    bundle = build(data_config(name="tinyshakespeare", block_size=64), seed=0)
    assert bundle.meta.details.vocab_size == 65 and bundle.tokenizer.vocab_size == 65
    assert bundle.meta.sizes == {"train": 1_003_854, "val": 111_540}
    assert bundle.meta.task == "language_model" and bundle.test is None
    x, y = next(bundle.train.epoch(0))
    assert x.shape == y.shape == (64, 64)
    assert torch.equal(x[:, 1:], y[:, :-1])  # targets are the inputs shifted by one
    text = (real_data_dir / "tinyshakespeare" / "input.txt").read_text()
    assert (
        bundle.tokenizer.decode(bundle.val.tokens.tolist()) == text[1_003_854:]
    )  # the last 10%, lossless


def test_blocks_cover_the_stream_with_a_moving_offset():
    tokens = torch.arange(1000)
    loader = TokenBlockLoader(tokens, 10, 8, shuffle=True, seed=3)
    assert len(loader) == len(TokenBlockLoader(tokens, 10, 8, shuffle=True, seed=4))
    starts = [torch.cat([x[:, 0] for x, _ in loader.epoch(e)]) for e in range(6)]
    assert len(set(starts[0].tolist())) == loader.num_samples  # distinct blocks
    offsets = [{int(s) % 10 for s in epoch} for epoch in starts]
    assert all(len(o) == 1 for o in offsets)  # one offset per epoch...
    assert len(set().union(*offsets)) > 1  # ...that moves between epochs
    assert [x.tolist() for x, _ in loader.epoch(1, start=3)] == [
        x.tolist() for x, _ in loader.epoch(1)
    ][3:]
    with pytest.raises(DataError, match="block_size: 10 is longer than the text"):
        TokenBlockLoader(torch.arange(5), 10, 2)


def test_text_file_with_bpe_and_errors(tmp_path):
    path = tmp_path / "story.txt"
    path.write_text("Once upon a time there was a lab. " * 300)
    bundle = build(
        data_config(
            name="text_file",
            path=str(path),
            tokenizer={"kind": "bpe", "vocab_size": 300},
            block_size=16,
        ),
        seed=0,
    )
    assert bundle.meta.details.tokenizer == "bpe"
    x, _ = next(bundle.train.epoch(0))
    assert "upon a time" in bundle.tokenizer.decode(
        x[0].tolist()
    ) or "lab" in bundle.tokenizer.decode(x[0].tolist())
    (tmp_path / "empty.txt").write_text("\n\n")
    with pytest.raises(DataError, match="empty.txt: the file is empty"):
        build(data_config(name="text_file", path=str(tmp_path / "empty.txt")))


@pytest.mark.shared_data
def test_multi30k_pairs(real_data_dir):
    bundle = build(data_config(name="multi30k", limit=2000), seed=0)
    assert bundle.meta.sizes == {"train": 2000, "val": 1014, "test": 1000}
    assert len(bundle.extra["texts"]["test"][0]) == 1000
    (_, target_in), target_out = next(bundle.val.epoch(0))
    assert bool((target_in[:, 0] == BOS).all())
    real = target_out != -100
    lengths = real.sum(1)
    assert bool(
        (target_out[torch.arange(len(lengths)), lengths - 1] == EOS).all()
    )  # every target ends with <eos>
    inside = real[:, 1:]  # position i+1 still belongs to the target
    assert torch.equal(
        target_in[:, 1:][inside], target_out[:, :-1][inside]
    )  # teacher forcing: shifted by one
    assert bundle.meta.details.source == "en" and bundle.meta.task == "seq2seq"


def test_pairs_tsv_missing_tab(tmp_path):
    path = tmp_path / "pairs.tsv"
    path.write_text("hello\thallo\ncat\tKatze\nno tab here\n")
    with pytest.raises(DataError, match="pairs.tsv: line 3 has no tab between source and target"):
        build(data_config(name="pairs_tsv", path=str(path)))
    path.write_text("".join(f"word {i}\tWort {i}\n" for i in range(50)))
    bundle = build(
        data_config(name="pairs_tsv", path=str(path), tokenizer={"kind": "word"}), seed=0
    )
    assert bundle.meta.sizes == {"test": 5, "val": 5, "train": 40}


@pytest.mark.shared_data
def test_series_windows_and_splits(real_data_dir):
    bundle = build(data_config(name="sunspots", window=12, horizon=3, scale="none"), seed=0)
    meta = bundle.meta
    assert meta.details.steps == {"train": 216, "val": 31, "test": 62}  # 309 years, 70/10/20
    x, y = bundle.train.sample_batch()
    assert x.shape == (32, 12, 1) and y.shape == (32, 3)
    raw = np.loadtxt(real_data_dir / "timeseries" / "sunspots.csv", delimiter=",", skiprows=1)[:, 1]
    np.testing.assert_allclose(x[0, :, 0].numpy(), raw[:12])  # window 0 = years 1700..1711
    np.testing.assert_allclose(y[0].numpy(), raw[12:15])  # it forecasts 1712..1714
    assert meta.details.naive_mae["test"] > 0


def test_scaling_never_sees_the_future(tmp_path):
    values = np.sin(np.arange(200) / 5.0)
    future_changed = values.copy()
    future_changed[150:] += 100.0  # only the validation/test part differs

    def train_inputs(series):
        path = tmp_path / "s.csv"
        path.write_text("t,v\n" + "".join(f"{i},{v}\n" for i, v in enumerate(series)))
        bundle = build(
            data_config(name="csv_series", path=str(path), column="v", window=10), seed=0
        )
        return bundle.train.inputs, bundle.meta.details.shift

    a, shift_a = train_inputs(values)
    b, shift_b = train_inputs(future_changed)
    assert torch.equal(a, b) and shift_a == shift_b


def test_series_errors(tmp_path):
    path = tmp_path / "short.csv"
    path.write_text("v\n" + "".join(f"{i}\n" for i in range(20)))
    with pytest.raises(
        DataError, match="20 time steps leave 14 for training, too few for window 24"
    ):
        build(data_config(name="csv_series", path=str(path), column="v"))
    with pytest.raises(DataError, match="data.column: .* has no column 'x'"):
        build(data_config(name="csv_series", path=str(path), column="x", window=2))
    path.write_text("v\n1\n2\nthree\n4\n")
    with pytest.raises(DataError, match="row 4, column 'v': 'three' is not a number"):
        build(data_config(name="csv_series", path=str(path), column="v", window=1))
    path.write_text("t,v\n" + "".join(f"{i},{'' if i % 7 == 3 else i}\n" for i in range(60)))
    bundle = build(
        data_config(name="csv_series", path=str(path), column="v", window=4, scale="none"), seed=0
    )
    assert (
        float(bundle.train.inputs[0, 3, 0]) == 3.0
    )  # the gap at step 3 interpolated between 2 and 4
    with pytest.raises(DataError, match="missing values"):
        build(data_config(name="csv_series", path=str(path), column="v", window=4, missing="error"))


def _unscaled(bundle, split):
    """A split's inputs and targets back in the series' units."""
    loader = getattr(bundle, split)
    details = bundle.meta.details
    shift, spread = np.asarray(details.shift), np.asarray(details.spread)
    inputs = loader.inputs.double().numpy() * spread + shift
    targets = loader.targets.double().numpy() * spread[details.target_index]
    return inputs, targets + shift[details.target_index]


def _check_against(bundle, reference: np.ndarray, window: int) -> None:
    """Windows, splits and the naive baseline of `bundle` equal those cut from `reference`."""
    steps = len(reference)
    n_test, n_val = round(0.2 * steps), round(0.1 * steps)
    n_train = steps - n_val - n_test
    assert bundle.meta.details.steps == {"train": n_train, "val": n_val, "test": n_test}
    inputs, targets = _unscaled(bundle, "test")  # the test split keeps its order
    first = n_train + n_val
    np.testing.assert_allclose(inputs[0], reference[first - window : first], rtol=1e-5)
    np.testing.assert_allclose(targets[:, 0], reference[first:, 0], rtol=1e-5)
    inputs, targets = _unscaled(bundle, "train")  # kept in time order (shuffled per epoch)
    np.testing.assert_allclose(targets[:, 0], reference[window:n_train, 0], rtol=1e-5)
    np.testing.assert_allclose(inputs[-1], reference[n_train - 1 - window : n_train - 1], rtol=1e-5)
    naive = np.abs(np.diff(reference[first - 1 :, 0])).mean()  # "the last value seen"
    assert bundle.meta.details.naive_mae["test"] == pytest.approx(naive, rel=1e-4)


def test_co2_is_statsmodels_weekly_series_with_its_gaps_interpolated(data_dir):
    import statsmodels.api as sm

    co2 = sm.datasets.co2.load_pandas().data["co2"]
    assert co2.isna().sum() == 59  # the gaps the summary promises to fill
    reference = co2.interpolate(method="linear").to_numpy()[:, None]
    bundle = build(data_config(name="co2", window=24), seed=0)
    _check_against(bundle, reference, 24)
    assert bundle.meta.details.columns == ["co2"]


def test_elnino_is_one_monthly_series_read_year_by_year(data_dir):
    import statsmodels.api as sm

    table = sm.datasets.elnino.load_pandas().data  # one row per year: YEAR, JAN ... DEC
    reference = table.iloc[:, 1:].to_numpy().reshape(-1, 1)  # Jan 1950, Feb 1950, ...
    assert reference.shape == (732, 1) and reference[0, 0] == 23.11
    bundle = build(data_config(name="elnino", window=12), seed=0)
    _check_against(bundle, reference, 12)
    with pytest.raises(DataError, match="elnino is a single monthly series"):
        build(data_config(name="elnino", features=["JAN"]))


def test_macrodata_forecasts_real_gdp_from_chosen_columns(data_dir):
    import statsmodels.api as sm

    table = sm.datasets.macrodata.load_pandas().data
    reference = table[["realgdp", "realcons", "unemp"]].to_numpy()
    bundle = build(data_config(name="macrodata", features=["realcons", "unemp"], window=8), seed=0)
    assert bundle.meta.details.columns == ["realgdp", "realcons", "unemp"]
    assert bundle.meta.input_shape == (8, 3)
    _check_against(bundle, reference, 8)
    infl = build(data_config(name="macrodata", column="infl", window=8), seed=0)
    assert infl.meta.details.columns == ["infl"]
    _check_against(infl, table[["infl"]].to_numpy(), 8)
