"""Reports: the right sections for every kind of run, edge cases, comparison, and a real browser."""

from __future__ import annotations

import base64
import io
import re
import subprocess

import numpy as np
import pytest
from PIL import Image

import dlab
from dlab.cli import main
from dlab.report import build_report


def sections(html: str) -> list[str]:
    return re.findall(r'<section id="(\w+)"', html)


def train(tmp_path_factory, name: str, recipe: dict) -> dlab.Run:
    return dlab.train(
        {"name": name, **recipe}, runs_dir=tmp_path_factory.mktemp(name), progress=False
    )


def test_image_classifier_report(image_run):
    html = (image_run.path / "report.html").read_text()
    assert sections(html) == [
        "summary",
        "curves",
        "classification",
        "predictions",
        "image_explanations",
    ]
    assert "section-error" not in html and "http" not in html.split("</style>")[0]  # self-contained
    assert html.count("data:image/png;base64,") >= 8
    assert "Integrated gradients" in html and "First convolution: 4 filters" in html


def test_text_classifier_report(text_run):
    html = (text_run.path / "report.html").read_text()
    assert sections(html) == [
        "summary",
        "curves",
        "classification",
        "predictions",
        "token_explanations",
        "attention",
    ]
    assert "section-error" not in html
    assert 'class="tok"' in html and "wonderful" in html  # per-token attributions


def test_char_gpt_report(gpt_run):
    html = (gpt_run.path / "report.html").read_text()
    assert sections(html) == ["summary", "curves", "attention", "samples"]
    assert "section-error" not in html and "validation loss" in html and "<pre>" in html


def test_seq2seq_and_forecast_reports(tmp_path_factory, text_folder):
    pairs = train(
        tmp_path_factory,
        "pairs",
        {
            "data": {
                "name": "pairs_tsv",
                "path": str(text_folder / "pairs.tsv"),
                "tokenizer": {"kind": "word"},
            },
            "model": {
                "name": "seq2seq_transformer",
                "d_model": 32,
                "heads": 2,
                "encoder_layers": 1,
                "decoder_layers": 1,
                "ff": 64,
            },
            "train": {"epochs": 2},
        },
    )
    html = (pairs.path / "report.html").read_text()
    assert "translations" in sections(html) and "BLEU" in html and "section-error" not in html
    series = train(
        tmp_path_factory,
        "wave",
        {
            "data": {
                "name": "csv_series",
                "path": str(text_folder / "series.csv"),
                "column": "v",
                "window": 8,
            },
            "model": {"name": "gru", "hidden": 16, "layers": 1},
            "train": {"epochs": 3, "loss": "mse", "metrics": ["mae"]},
        },
    )
    html = (series.path / "report.html").read_text()
    assert sections(html) == ["summary", "curves", "forecast"] and "naive" in html


@pytest.mark.slow  # a whole flow, 15-25 s: outside the unit tests
def test_reports_of_unusual_runs(tmp_path_factory):
    base = {
        "data": {"name": "mnist_sample", "limit": 400},
        "model": {"name": "mlp", "hidden": [16]},
    }
    one_epoch = train(tmp_path_factory, "one", {**base, "train": {"epochs": 1}})
    assert (
        "one epoch: the per-epoch curves are single points"
        in (one_epoch.path / "report.html").read_text()
    )
    no_val = train(
        tmp_path_factory,
        "noval",
        {"data": {**base["data"], "val_size": 0}, "model": base["model"], "train": {"epochs": 2}},
    )
    html = (no_val.path / "report.html").read_text()
    assert "no validation split" in html and "section-error" not in html
    stopped = train(
        tmp_path_factory,
        "stopped",
        {
            **base,
            "train": {
                "epochs": 30,
                "optimizer": {"name": "sgd", "lr": 5.0},
                "early_stopping": {"monitor": "val_loss", "patience": 1},
            },
        },
    )
    html = (stopped.path / "report.html").read_text()
    assert "early stopping" in html and "section-error" not in html
    assert stopped.dir.meta["epochs"] < 30


def test_regenerating_and_data_missing(own_image_run, monkeypatch, capsys):
    assert main(["report", str(own_image_run.path)]) == 0
    assert "report.html" in capsys.readouterr().out
    monkeypatch.setattr(
        "dlab.report.context.ReportContext.bundle",
        property(lambda self: (_ for _ in ()).throw(dlab.DlabError("mnist_sample is not here"))),
    )
    html = build_report(dlab.load(own_image_run.path))
    assert (
        "not available here: mnist_sample is not here" in html and "section-error" not in html
    )  # the rest still renders


def test_compare_runs(tmp_path, image_run, tmp_path_factory, capsys):
    other = train(
        tmp_path_factory,
        "mnist_cnn_lr",
        {
            "data": {"name": "mnist_sample"},
            "model": {"name": "cnn", "channels": [4, 8], "hidden": 32},
            "train": {"epochs": 2, "optimizer": {"name": "adam", "lr": 0.01}},
        },
    )
    output = tmp_path / "compare.html"
    assert main(["runs", "compare", str(image_run.path), str(other.path), "-o", str(output)]) == 0
    out = capsys.readouterr().out
    assert "val_accuracy" in out and "test_accuracy" in out
    html = output.read_text()
    assert sections(html) == ["curves", "metrics", "differences"]
    differing = re.findall(r"<tr><td>([\w.]+)</td>", html.split('id="differences"')[1])
    assert differing == ["train.optimizer.lr"]  # only what differs
    assert main(["runs", "compare", str(image_run.path)]) == 2


@pytest.mark.e2e
def test_report_in_headless_chromium(image_run, tmp_path, chromium):
    browser = chromium
    report = image_run.path / "report.html"
    shot = tmp_path / "report.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    result = subprocess.run(
        [browser, *flags, "--window-size=1280,3000", f"--screenshot={shot}", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.is_file(), result.stderr[-2000:]
    console = [line for line in result.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.std() > 20 and (pixels < 200).mean() > 0.05  # a rendered page, not a blank one
    html = report.read_text()
    confusion = html.split('id="classification"')[1]
    data = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)", confusion).group(1)
    matrix = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"), dtype=float)
    assert matrix.std() > 30  # the confusion matrix has a visible diagonal


def test_generate_cli_is_repeatable_and_validates(gpt_run, capsys):
    assert (
        main(["generate", str(gpt_run.path), "--prompt", "To be", "-n", "30", "--seed", "3"]) == 0
    )
    first = capsys.readouterr().out
    assert (
        main(["generate", str(gpt_run.path), "--prompt", "To be", "-n", "30", "--seed", "3"]) == 0
    )
    assert capsys.readouterr().out == first and first.startswith("To be") and len(first) > 30
    assert (
        main(["generate", str(gpt_run.path), "--prompt", "Zebra", "-n", "5"]) == 2
    )  # 'Z' is not in the vocabulary
    assert "is not in this model's vocabulary" in capsys.readouterr().err
    greedy = [gpt_run.generate("To be", 20, temperature=0.0) for _ in range(2)]
    assert greedy[0] == greedy[1]


def test_writing_figures_leaves_pyplot_alone(tmp_path):
    """dlab draws on Figures of its own: a notebook's inline backend and open figures are not
    touched (it once switched every process to Agg, and a learner's plots stopped showing)."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from dlab.report.plots import save_confusion_matrix\n"
        f"save_confusion_matrix([[3, 1], [0, 4]], ['a', 'b'], {str(tmp_path / 'c.png')!r})\n"
        "print('matplotlib.pyplot' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False" and (tmp_path / "c.png").stat().st_size > 1000
