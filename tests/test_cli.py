"""The command line, called in-process through `dlab.cli.main`: bad input is one line and exit 2.

(tests/e2e runs real subprocesses for what needs one: SIGKILL, usage errors, `python -m dlab`.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from httpfixture import serve
from PIL import Image

from dlab._io import read_json
from dlab.cli import main
from dlab.data.idx import write_idx
from dlab.data.mnist import MNIST, MnistSampleConfig, build_mnist_sample

TINY = ["-o", "model.channels=[8, 16]", "-o", "model.hidden=32"]


@pytest.fixture
def dlab(capsys, monkeypatch):
    """Run the CLI in this process; returns (exit code, stdout, stderr)."""
    monkeypatch.setenv("COLUMNS", "200")

    def run(*args, env=None, check_ok=False):
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        capsys.readouterr()
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        if check_ok:
            assert code == 0, err
        return code, out, err

    return run


def assert_user_error(result, *fragments):
    code, _, err = result
    assert code == 2, (code, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dlab: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny run trained through the CLI."""
    runs = tmp_path_factory.mktemp("runs")
    assert (
        main(["train", "demo", *TINY, "-o", "train.max_steps=40", "--runs-dir", str(runs), "-q"])
        == 0
    )
    return next((runs / "demo").iterdir())


def fake_mnist(folder: Path, images: bytes | None = None) -> Path:
    """An MNIST folder whose first file is `images` (the others are never reached)."""
    target = folder / "mnist"
    target.mkdir(parents=True)
    for file in MNIST.files:
        (target / file.name).write_bytes(b"")
    if images is not None:
        (target / MNIST.files[0].name).write_bytes(images)
    return target


def test_recipe_errors(dlab, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: {name: mnist_sample}\nmodel: {name: cnn, dropot: 0.1}\n")
    assert_user_error(dlab("train", recipe), "model.dropot: unknown key (did you mean 'dropout'?)")
    assert_user_error(
        dlab("train", "demo", "-o", "train.epochs=abc"), "train.epochs: should be a valid integer"
    )
    assert_user_error(
        dlab("train", "demo", "-o", "train.optimizer.lr=-0.1"),
        "train.optimizer.lr: should be greater than 0 (got -0.1)",
    )
    assert_user_error(dlab("train", "demo", "-o", "lr"), "should look like section.key=value")
    assert_user_error(dlab("train", "nothing_like_this"), "recipe not found: nothing_like_this")
    assert_user_error(dlab("list", "modles"), "did you mean 'models'")


def test_data_errors(dlab, tmp_path):
    empty = {"DLAB_DATA_DIR": str(tmp_path / "empty")}
    assert_user_error(
        dlab("train", "mnist_cnn", env=empty),
        "mnist is not in",
        "dlab data fetch mnist",
        "dlab data import mnist DIR",
    )

    truncated = tmp_path / "truncated"
    fake_mnist(truncated, images=b"\x1f\x8b\x08\x00" + b"\0" * 20)
    assert_user_error(
        dlab("train", "mnist_cnn", env={"DLAB_DATA_DIR": str(truncated)}),
        "train-images-idx3-ubyte.gz: not a complete gzip file",
    )

    wrong_magic = tmp_path / "magic"
    folder = fake_mnist(wrong_magic)
    write_idx(
        folder / MNIST.files[0].name, np.zeros(10, dtype=np.uint8)
    )  # a label file where images belong
    assert_user_error(
        dlab("train", "mnist_cnn", env={"DLAB_DATA_DIR": str(wrong_magic)}),
        "magic number 2049, expected 2051",
    )

    mismatch = tmp_path / "mismatch"
    folder = fake_mnist(mismatch)
    write_idx(
        folder / MNIST.files[0].name, np.zeros((10, 28, 28), dtype=np.uint8)
    )  # well formed, not MNIST
    assert_user_error(
        dlab("train", "mnist_cnn", env={"DLAB_DATA_DIR": str(mismatch)}),
        "checksum mismatch",
        "published f68b3c2d",
    )


def test_run_errors(dlab, tmp_path, trained):
    assert_user_error(dlab("train", "--resume", tmp_path), "not a dlab run directory")
    assert_user_error(dlab("evaluate", tmp_path / "missing"), "no such run directory")
    Image.new("L", (40, 30)).save(tmp_path / "big.png")
    assert_user_error(
        dlab("predict", trained, tmp_path / "big.png"),
        "big.png: image is 40×30 but the model takes 28×28; pass --resize",
    )
    (tmp_path / "notes.txt").write_text("not a picture")
    assert_user_error(dlab("predict", trained, tmp_path / "notes.txt"), "notes.txt: not an image")
    np.save(tmp_path / "wrong.npy", np.zeros((3, 32, 32)))
    assert_user_error(
        dlab("predict", trained, tmp_path / "wrong.npy"),
        "array shape (3, 32, 32) does not fit the model input",
    )


def test_train_evaluate_predict_and_list(dlab, tmp_path, trained):
    out = dlab("evaluate", trained, check_ok=True)[1]
    assert (
        "accuracy" in out
        and "precision" in out
        and (trained / "eval" / "test_confusion.png").is_file()
    )
    image = tmp_path / "digit.png"
    from dlab.api import load
    from dlab.demo import save_test_digit

    path, _ = save_test_digit(load(trained), 2)
    image.write_bytes(path.read_bytes())
    out = dlab("predict", trained, image, "--top-k", "2", check_ok=True)[1]
    assert out.startswith(f"{image}: ") and out.count("%") == 2
    assert "no runs in" in dlab("runs", "list", "--runs-dir", tmp_path / "none", check_ok=True)[1]
    listing = dlab("runs", "list", "--runs-dir", trained.parent.parent, check_ok=True)[1]
    assert "completed" in listing and "cnn" in listing
    shown = dlab("recipe", "show", "mnist_cnn", "-o", "train.epochs=1", check_ok=True)[1]
    assert "epochs: 1" in shown and "label_smoothing: 0.05" in shown
    assert "optimizer.lr" in dlab("recipe", "doc", "demo", check_ok=True)[1]


@pytest.mark.shared_data
def test_fetch_from_a_local_mirror_and_import(dlab, shared_data, tmp_path):
    files = {f.name: (shared_data / "mnist" / f.name).read_bytes() for f in MNIST.files}
    with serve(files) as server:
        result = dlab(
            "data",
            "fetch",
            "mnist",
            "--mirror",
            server.url,
            env={"DLAB_DATA_DIR": str(tmp_path / "fetched")},
            check_ok=True,
        )
    assert "mnist: verified files in" in result[1]
    assert (
        tmp_path / "fetched" / "mnist" / "train-images-idx3-ubyte.gz"
    ).stat().st_size == 9_912_422
    result = dlab(
        "data",
        "import",
        "mnist",
        shared_data / "mnist",
        env={"DLAB_DATA_DIR": str(tmp_path / "imported")},
        check_ok=True,
    )
    assert "verified and copied" in result[1]
    listing = dlab(
        "list", "datasets", env={"DLAB_DATA_DIR": str(tmp_path / "imported")}, check_ok=True
    )[1]
    (mnist_row,) = [line for line in listing.splitlines() if line.startswith("│ mnist ")]
    assert "yes" in mnist_row
    offline = dlab(
        "data",
        "fetch",
        "mnist",
        "--mirror",
        "http://127.0.0.1:9/none",
        env={"DLAB_DATA_DIR": str(tmp_path / "offline")},
    )
    assert_user_error(
        offline, "could not download train-images-idx3-ubyte.gz", "dlab data import mnist DIR"
    )


def _files(tmp_path):
    (tmp_path / "latin.txt").write_bytes("caf\xe9 au lait\n".encode("latin-1") * 50)
    (tmp_path / "ragged.csv").write_text("text,label\ngood,pos\nbad,neg,oops\n")
    (tmp_path / "nolabel.csv").write_text("text,sentiment\ngood,pos\nbad,neg\n")
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "pairs.tsv").write_text("hello\thallo\nno tab on this line\n")
    (tmp_path / "short.csv").write_text("v\n" + "".join(f"{i}\n" for i in range(10)))


BAD_DATA = {
    "missing file": (
        {"name": "text_file", "path": "{tmp}/absent.txt"},
        "absent.txt: file not found",
    ),
    "wrong encoding": (
        {"name": "text_file", "path": "{tmp}/latin.txt"},
        "latin.txt: not valid utf-8 at byte 3 (line 1); set data.encoding",
    ),
    "ragged csv": (
        {"name": "text_csv", "path": "{tmp}/ragged.csv"},
        "ragged.csv: row 3 has 3 cells but the header has 2",
    ),
    "label column absent": (
        {"name": "text_csv", "path": "{tmp}/nolabel.csv"},
        "data.label_column: ",
    ),
    "empty text file": (
        {"name": "text_file", "path": "{tmp}/empty.txt"},
        "empty.txt: the file is empty",
    ),
    "pairs without a tab": (
        {"name": "pairs_tsv", "path": "{tmp}/pairs.tsv"},
        "pairs.tsv: line 2 has no tab",
    ),
    "series shorter than the window": (
        {"name": "csv_series", "path": "{tmp}/short.csv", "column": "v"},
        "too few for window 24",
    ),
}


@pytest.mark.parametrize("case", BAD_DATA, ids=list(BAD_DATA))
def test_bad_data_is_one_line_and_exit_2(dlab, tmp_path, case):
    import yaml

    _files(tmp_path)
    section, message = BAD_DATA[case]
    section = {
        k: v.replace("{tmp}", str(tmp_path)) if isinstance(v, str) else v
        for k, v in section.items()
    }
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"data": section, "model": {"name": "mlp"}}))
    assert_user_error(dlab("train", recipe, "--runs-dir", tmp_path / "runs"), message)


# --- the success paths of the verbs after training, each checked for what its options asked ---


def _only_run(runs: Path) -> Path:
    """The one run folder below `runs` (at NAME/ID, or at ID inside one recipe's folder)."""
    (run,) = {p.parent for p in [*runs.glob("*/meta.json"), *runs.glob("*/*/meta.json")]}
    return run


def _meta(run: Path) -> dict:
    return read_json(run / "meta.json")


@pytest.mark.slow  # the whole main job: a minute of training
def test_demo_trains_evaluates_and_predicts_a_real_digit(dlab, tmp_path):
    _, out, _ = dlab("demo", "--runs-dir", tmp_path, check_ok=True)
    run = _only_run(tmp_path)
    printed = re.search(r"test accuracy ([\d.]+)% on (\d+) held-out digits", out)
    assert printed, out
    test = _meta(run)["evaluation"]["test"]
    assert float(printed[1]) == pytest.approx(100 * test["accuracy"], abs=0.005)
    assert int(printed[2]) == 500 and test["accuracy"] > 0.95  # 5,000 real digits, 8 epochs
    # the predicted digit is the one the picture shows, and the picture is a real test digit
    label, top = re.search(r"\(a (\d)\): (\d) [\d.]+%", out).groups()
    images, labels = build_mnist_sample(MnistSampleConfig(name="mnist_sample")).test
    assert label == str(labels[0]) and top == label
    saved = np.asarray(Image.open(run / "samples" / "test_0.png"))
    assert np.abs(saved.astype(int) - images[0]).max() <= 1  # un-normalised, rounded once
    assert (run / "eval" / "test_confusion.png").is_file()
    assert f"dlab predict {run}" in out


def test_compress_quantize_from_the_command_line_uses_the_mode_asked_for(dlab, image_run, tmp_path):
    _, out, _ = dlab(
        "compress", image_run.path, "--quantize", "int8-dynamic", "--runs-dir", tmp_path,
        check_ok=True,
    )  # fmt: skip
    details = _meta(_only_run(tmp_path))["compression"]
    assert details["method"] == "quantize" and details["mode"] == "int8-dynamic"  # not the auto
    rows = {row["model"]: row for row in details["comparison"]}
    assert set(rows) == {"float32", "int8-dynamic"}
    for name, row in rows.items():  # the printed table is the measured one
        assert re.search(rf"{name}\s+│\s+{row['accuracy']:.4f}\s+│", out), out


def test_compress_prune_from_the_command_line_passes_its_options(dlab, image_run, tmp_path):
    dlab(
        "compress", image_run.path, "--prune", "0.5", "--structured", "--finetune-epochs", "1",
        "--runs-dir", tmp_path, check_ok=True,
    )  # fmt: skip
    meta = _meta(_only_run(tmp_path))
    details = meta["compression"]
    assert (details["method"], details["amount"], details["structured"]) == ("prune", 0.5, True)
    assert details["finetune_epochs"] == 1 and meta["epochs"] == 1
    assert meta["parameters"] < 0.6 * image_run.dir.meta["parameters"]  # whole channels removed


@pytest.mark.slow  # a real training run of 10-20 s: not a unit test
def test_compress_distill_from_the_command_line_passes_alpha_and_temperature(
    dlab, image_run, tmp_path
):
    student = tmp_path / "student.yaml"
    student.write_text(
        "name: student\ndata: {name: mnist_sample}\nmodel: {name: mlp, hidden: [16]}\n"
        "train: {epochs: 1}\n"
    )
    _, out, _ = dlab(
        "compress", image_run.path, "--distill", student, "--alpha", "0.7", "--temperature", "3",
        "--runs-dir", tmp_path / "runs", check_ok=True,
    )  # fmt: skip
    distilled = _only_run(tmp_path / "runs" / "student-distilled")
    details = _meta(distilled)["compression"]
    assert (details["method"], details["alpha"], details["temperature"]) == ("distill", 0.7, 3.0)
    assert details["teacher"] == str(image_run.path)
    assert "student (distilled)" in out and "student (no teacher, same seed)" in out


def test_export_from_the_command_line_writes_an_onnx_file_that_answers_as_the_model(
    dlab, image_run, tmp_path
):
    import onnxruntime

    target = tmp_path / "digits.onnx"
    _, out, _ = dlab("export", image_run.path, "--output", target, check_ok=True)
    error = float(re.search(r"onnxruntime\s+matches\s+PyTorch\s+to\s+([\d.e+-]+)\s+on", out)[1])
    assert error <= 1e-4 and not (image_run.path / "model.onnx").exists()  # only where asked
    x = torch.randn(3, 1, 28, 28)
    session = onnxruntime.InferenceSession(str(target))
    (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = image_run.model.eval()(x)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-4)
    assert_user_error(dlab("export", image_run.path, "--format", "tflite"), "format 'tflite'")


@pytest.mark.slow  # a Flower simulation and the central comparison: about 30 s
def test_federate_from_the_command_line_passes_every_setting(dlab, tmp_path):
    recipe = tmp_path / "fl.yaml"
    recipe.write_text(
        "name: fl\nseed: 0\ndata: {name: mnist_sample, batch_size: 32, val_size: 400}\n"
        "model: {name: mlp, hidden: [32]}\ntrain: {optimizer: {name: sgd, lr: 0.1}}\n"
    )
    _, out, _ = dlab(
        "federate", recipe, "--clients", "3", "--rounds", "2", "--local-epochs", "1",
        "--alpha", "0.5", "--strategy", "fedprox", "--mu", "0.1", "--fraction", "1.0",
        "--runs-dir", tmp_path / "runs", "-q", check_ok=True,
    )  # fmt: skip
    federated = next(
        p for p in (tmp_path / "runs" / "fl").iterdir() if _meta(p).get("kind") == "federated"
    )
    meta = _meta(federated)
    settings = {k: meta["federated"][k] for k in ("clients", "rounds", "alpha", "strategy", "mu")}
    assert settings == {"clients": 3, "rounds": 2, "alpha": 0.5, "strategy": "fedprox", "mu": 0.1}
    assert meta["central"]["epochs"] == 2
    rounds = [json.loads(x) for x in (federated / "metrics.jsonl").read_text().splitlines()]
    for r in rounds:  # one table row per round, with the accuracy the run recorded
        assert re.search(rf"│ {r['epoch']}\s+│ {r['val_accuracy']:.4f}", out), out
    assert f"centralised, 2 epochs: accuracy {meta['central']['accuracy']:.4f}" in out
