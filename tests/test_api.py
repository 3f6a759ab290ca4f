"""The Python API: train -> load -> evaluate -> predict, and fit on arrays, with clear errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_blobs
from PIL import Image
from torch import nn

import dlab
from dlab import runtime
from dlab.data import build
from dlab.demo import save_test_digit
from dlab.errors import DlabError, InputError, RecipeError, RunError

FAST = ["model.channels=[4, 8]", "model.hidden=32", "train.epochs=2", "train.checkpoint_every=40"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A small CNN trained on the packaged MNIST sample (about 10 s)."""
    return dlab.train("demo", FAST, runs_dir=tmp_path_factory.mktemp("runs"), progress=False)


def test_a_run_directory_holds_everything(run):
    files = {p.name for p in run.path.iterdir()}
    assert {
        "recipe.yaml",
        "meta.json",
        "metrics.jsonl",
        "model.safetensors",
        "checkpoints",
        "tb",
        "eval",
    } <= files
    meta = run.dir.meta
    assert meta["status"] == "completed" and meta["steps"] == 126 and meta["epochs"] == 2
    assert meta["data"]["sizes"] == {"train": 4000, "val": 500, "test": 500}
    assert meta["hardware"]["torch"] == torch.__version__
    # 126 steps: too short a run for threads: auto to time, so the FLOP rule (or a user's pin)
    assert "pass_ms_by_threads" not in meta["hardware"]
    flops = meta["forward_flops_per_batch"]
    assert meta["hardware"]["threads"] == runtime.choose_threads("auto", flops)
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # this process, in MiB
    assert 100 < meta["memory"]["peak_rss_mib"] <= peak + 0.05  # rounded to 0.1; torch > 100 MiB
    assert "cuda_peak_allocated_mib" not in meta["memory"]  # a CPU run
    assert any(p.name.startswith("events.out.tfevents") for p in (run.path / "tb").iterdir())
    assert len(run.history) == 2 and run.history["val_accuracy"][-1] > 0.8


def test_a_bf16_run_is_evaluated_in_bf16(run):
    def first_layer_dtypes(opened):
        dtypes = set()
        first = next(m for m in opened.model.modules() if isinstance(m, nn.Conv2d))
        first.register_forward_hook(lambda module, args, out: dtypes.add(out.dtype))
        return opened.evaluate("test", write=False), dtypes

    plain, plain_dtypes = first_layer_dtypes(dlab.load(run.path))
    bf16 = dlab.load(run.path)
    bf16.recipe = bf16.recipe.override("train.precision=bf16")
    report, dtypes = first_layer_dtypes(bf16)
    assert plain_dtypes == {torch.float32} and dtypes == {torch.bfloat16}
    assert abs(report["accuracy"] - plain["accuracy"]) <= 0.02  # 10 of 500 images at most


def test_the_saved_recipe_rebuilds_the_exact_model(run):
    again = dlab.load(run.path)
    assert again.recipe == run.recipe
    assert again.recipe.model.channels == [4, 8]
    for key, value in run.model.state_dict().items():
        assert torch.equal(value, again.model.state_dict()[key])


def test_evaluate_writes_metrics_and_confusion_matrix(run):
    report = run.evaluate("test")
    assert report["samples"] == 500
    assert np.array(report["confusion_matrix"]).sum() == 500
    assert np.trace(np.array(report["confusion_matrix"])) / 500 == pytest.approx(report["accuracy"])
    assert [row["support"] for row in report["per_class"]] == [50] * 10
    assert (run.path / "eval" / "test.json").is_file()
    image = np.asarray(
        Image.open(run.path / "eval" / "test_confusion.png").convert("L"), dtype=float
    )
    assert image.std() > 10  # a real picture, not a blank canvas
    assert run.evaluate("val", write=False)["samples"] == 500
    # meta.json keeps the task's headline, the one list the CLI, the report and compare read
    assert list(run.dir.meta["evaluation"]["test"]) == ["accuracy", "macro_f1", "samples"]


def test_predict_a_file_exactly_as_in_training(run):
    path, _ = save_test_digit(run, 3)
    bundle = build(run.recipe.data, run.recipe.seed)
    with torch.no_grad():
        expected = run.model(bundle.test.inputs[3:4]).softmax(-1)[0]
    prediction = run.predict([path], top_k=10)[0]
    probabilities = {c: p for c, p in prediction.top}
    for i, name in enumerate(bundle.meta.classes):
        assert probabilities[name] == pytest.approx(float(expected[i]), abs=1e-5)
    assert prediction.source == str(path)


def test_dark_on_light_drawings_are_inverted_automatically(run, tmp_path):
    path, _ = save_test_digit(run, 5)
    pixels = np.asarray(Image.open(path))
    Image.fromarray(255 - pixels).save(tmp_path / "paper.png")
    normal = run.predict([path], top_k=10)[0].top
    inverted = run.predict([tmp_path / "paper.png"], top_k=10)[0].top
    assert [c for c, _ in normal] == [c for c, _ in inverted]
    never = run.predict([tmp_path / "paper.png"], invert="never")[0].top
    assert never != inverted[:3]


def test_other_image_sizes_and_modes(run, tmp_path):
    path, _ = save_test_digit(run, 0)
    big = Image.open(path).resize((64, 64)).convert("RGB")
    big.save(tmp_path / "big.png")
    with pytest.raises(
        InputError, match=r"big.png: image is 64×64 but the model takes 28×28; pass --resize"
    ):
        run.predict([tmp_path / "big.png"])
    resized = run.predict([tmp_path / "big.png"], resize=True)[0].top
    original = run.predict([path])[0].top
    assert len(resized) == len(original) == 3  # the default top_k
    assert resized[0][0] == original[0][0]  # four times the size, shrunk back: the same digit
    assert resized[0][1] == pytest.approx(original[0][1], abs=0.1)


def test_npy_inputs(run, tmp_path):
    path, _ = save_test_digit(run, 1)
    pixels = np.asarray(Image.open(path))

    def probabilities(file):
        return dict(run.predict([file], top_k=10)[0].top)

    expected = probabilities(path)
    for shape, dtype in (((28, 28), np.uint8), ((1, 28, 28), np.float32), ((784,), np.float64)):
        np.save(tmp_path / "x.npy", pixels.reshape(shape).astype(dtype))
        assert probabilities(tmp_path / "x.npy") == pytest.approx(expected, abs=1e-6)
    np.save(tmp_path / "x.npy", pixels.astype(np.float32) / 255)  # 0-1 floats
    assert probabilities(tmp_path / "x.npy") == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            lambda p: p.with_suffix(".txt").write_text("hello"),
            r"input.txt: not an image \(PNG or JPEG\) nor a .npy array",
        ),
        (
            lambda p: np.save(p.with_suffix(".npy"), np.zeros((3, 32, 32))),
            r"array shape \(3, 32, 32\) does not fit the model input; expected \(784,\) or \(28, 28\) or \(1, 28, 28\)",
        ),
        (lambda p: np.save(p.with_suffix(".npy"), np.full((28, 28), np.nan)), "contains NaN"),
        (lambda p: np.save(p.with_suffix(".npy"), np.array(["a"] * 784)), "expected numbers"),
        (
            lambda p: p.with_suffix(".npy").write_bytes(b"\x93NUMPY garbage"),
            "not a readable .npy array",
        ),
    ],
)
def test_bad_inputs_are_named(run, tmp_path, content, message):
    content(tmp_path / "input")
    target = next(tmp_path.iterdir())
    with pytest.raises(InputError, match=message):
        run.predict([target])


def test_missing_input_and_empty_list(run, tmp_path):
    with pytest.raises(InputError, match="absent.png: file not found"):
        run.predict([tmp_path / "absent.png"])
    with pytest.raises(InputError, match="no input files"):
        run.predict([])


def test_load_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(RunError, match="no such run directory"):
        dlab.load(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match="not a dlab run directory"):
        dlab.load(tmp_path / "empty")


def test_resume_only_changes_the_length(run):
    with pytest.raises(RecipeError, match="only train.epochs and train.max_steps may change"):
        dlab.train(None, ["train.optimizer.lr=1"], resume=run.path)


@pytest.mark.slow  # a whole flow, 15-25 s: outside the unit tests
def test_resuming_a_finished_run_with_more_epochs_continues_it(tmp_path):
    first = dlab.train(
        "demo",
        [*FAST, "train.epochs=1", "train.scheduler=constant"],
        runs_dir=tmp_path,
        progress=False,
    )
    continued = dlab.train(None, ["train.epochs=2"], resume=first.path, progress=False)
    assert continued.path == first.path
    assert [r["epoch"] for r in continued.history.records] == [1, 2]
    assert continued.dir.meta["steps"] == 126
    assert continued.recipe.train.epochs == 2


def test_a_length_dependent_schedule_cannot_be_extended(run):
    with pytest.raises(RecipeError, match="onecycle schedule is laid out over its original length"):
        dlab.train(None, ["train.epochs=5"], resume=run.path)


def test_fit_on_arrays_with_regression():
    x = np.random.default_rng(0).normal(size=(256, 4)).astype(np.float32)
    y = (x @ np.array([1.0, -2.0, 0.5, 3.0], dtype=np.float32))[:, None]
    torch.manual_seed(0)
    history = dlab.fit(
        nn.Linear(4, 1),
        (x, y),
        loss="mse",
        val_data=(x, y),
        epochs=30,
        lr=0.05,
        batch_size=32,
        progress=False,
    )
    assert history["val_mae"][-1] < 0.05


def test_fit_takes_token_ids_for_classifiers_and_language_models():
    rng = np.random.default_rng(0)
    tokens = rng.integers(1, 20, size=(128, 12))
    labels = (tokens[:, 0] > 10).astype(np.int64)  # the first token decides the class
    torch.manual_seed(0)
    classifier = nn.Sequential(nn.Embedding(20, 16), nn.Flatten(), nn.Linear(16 * 12, 2))
    history = dlab.fit(classifier, (tokens, labels), epochs=20, lr=0.01, progress=False)
    assert history["train_accuracy"][-1] == 1.0
    sequences = np.tile(np.arange(13) % 5, (64, 1))  # 0 1 2 3 4 0 1 ...: next = (t + 1) mod 5
    model = nn.Sequential(nn.Embedding(5, 16), nn.Linear(16, 5))
    history = dlab.fit(
        model, (sequences[:, :-1], sequences[:, 1:]), epochs=30, lr=0.05, progress=False
    )
    assert history["train_loss"][-1] < 0.05
    with pytest.raises(RuntimeError, match="indices"):  # uint8 stays pixels: no embedding lookup
        dlab.fit(
            nn.Embedding(5, 2),
            (sequences.astype(np.uint8), np.arange(64) % 2),
            epochs=1,
            progress=False,
        )


def test_fit_errors_are_specific():
    x, y = make_blobs(64)
    with pytest.raises(
        RecipeError, match="fit: train.epochs: should be greater than or equal to 1"
    ):
        dlab.fit(nn.Linear(8, 3), (x, y), epochs=0)
    with pytest.raises(RecipeError, match="fit: train.optimizer.name: unknown optimizer 'adm'"):
        dlab.fit(nn.Linear(8, 3), (x, y), optimizer="adm")
    with pytest.raises(DlabError, match="64 inputs but 10 targets"):
        dlab.fit(nn.Linear(8, 3), (x, y[:10]))
    with pytest.raises(DlabError, match="data should be"):
        dlab.fit(nn.Linear(8, 3), 42)
    with pytest.raises(RecipeError, match="unknown metric 'acc'"):
        dlab.fit(nn.Linear(8, 3), (x, y), metrics=["acc"])


def test_fit_on_a_named_data_set():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 10))
    history = dlab.fit(model, "mnist_sample", epochs=2, batch_size=128, progress=False)
    assert history["val_accuracy"][-1] > 0.8
