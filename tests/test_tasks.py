"""Tasks own what differs between kinds of learning problem; nothing else compares task names."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dlab.errors import InputError, RecipeError
from dlab.models import MNIST_META, build
from dlab.models.examples import example_meta
from dlab.registry import MODELS, TASKS
from dlab.tasks import Task, task_of

SOURCE = Path(__file__).resolve().parents[1] / "src" / "dlab"
# a comparison of a task name: `meta.task == "seq2seq"`, `task != "regression"`, `task in (...)`
COMPARISON = re.compile(r"\btask\s*(==|!=|in\s*\()|===\s*\"(classification|regression|seq2seq)")


def test_the_built_in_tasks_are_registered_with_their_own_headline():
    assert TASKS.names() == [
        "classification",
        "detection",
        "language_model",
        "ranking",
        "rating",
        "reconstruction",
        "regression",
        "segmentation",
        "seq2seq",
        "tabular",
        "transcription",
    ]
    for entry in TASKS:
        task = entry.builder()
        assert isinstance(task, Task) and task.name == entry.name
        assert task.headline and len(set(task.headline)) == len(task.headline)
        assert type(task).evaluate is not Task.evaluate, f"{task.name} does not evaluate"
    assert task_of("regression").headline[:2] == ("mae", "rmse")  # rmse was dropped before


def test_headline_keeps_the_tasks_numbers_in_its_order():
    report = {"samples": 10, "loss": 0.5, "accuracy": 0.9, "per_class": [], "macro_f1": "n/a"}
    assert list(task_of("classification").headline_of(report).items()) == [
        ("accuracy", 0.9),
        ("loss", 0.5),
    ]


@pytest.mark.parametrize(
    ("task", "verb", "answer"),
    [
        ("classification", "generate", "dlab predict"),
        ("language_model", "predict", "dlab generate"),
        ("seq2seq", "predict", "dlab generate"),
        ("classification", "translate", "dlab predict"),
    ],
)
def test_a_verb_the_task_does_not_serve_names_the_one_it_does(task, verb, answer):
    with pytest.raises(InputError, match=f"^{verb}: this is a .* model.*`{answer}`"):
        task_of(task).require(verb)


def test_each_task_serves_its_own_verbs():
    for name, verb in [("classification", "predict"), ("language_model", "generate")]:
        task_of(name).require(verb)
    task_of("seq2seq").require("translate")


def test_a_regression_model_is_not_sent_to_generate():
    # before the task files, predicting with a forecaster said "is used with `dlab generate`"
    with pytest.raises(InputError) as caught:
        task_of("regression").require("predict")
    assert "generate" not in str(caught.value)


def test_an_unknown_task_is_a_recipe_error_with_a_suggestion():
    with pytest.raises(RecipeError, match="unknown task 'clasification'.*classification"):
        task_of("clasification")


def test_no_code_outside_the_tasks_compares_task_names():
    found = set()
    for path in [*SOURCE.rglob("*.py"), *SOURCE.rglob("*.html")]:
        relative = path.relative_to(SOURCE).as_posix()
        if relative.startswith("tasks/"):
            continue
        if COMPARISON.search(path.read_text(encoding="utf-8")):
            found.add(relative)
    assert not found, f"task names compared in {sorted(found)}: ask the task instead"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("gpt", "gpt serves language model; mnist is classification data of image"),
        (
            "seq2seq_transformer",
            "seq2seq_transformer serves seq2seq; mnist is classification data of image",
        ),
        (
            "transformer_classifier",
            "transformer_classifier serves classification of tokens or series; mnist is classification",
        ),
    ],
)
def test_a_model_is_checked_against_the_tasks_it_declares(name, message):
    config = MODELS.get(name).config(name=name)
    with pytest.raises(RecipeError, match=f"^model.name: {message}"):
        build(config, MNIST_META)
    build(config, example_meta(name))  # its own kind of data builds
