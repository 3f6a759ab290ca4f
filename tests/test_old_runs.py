"""Run folders written by an earlier dlab still load, evaluate, predict and report.

`tests/fixtures/runs-2026-11/` holds two runs trained by the code of commit 2e9983d (before the
typed task details and the typed run record): a text classifier and a two-step forecast. Their
meta.json keeps the old untyped `data.extra`; only the weights, recipe, tokenizer and logs are
kept (no checkpoints); the weights are stored as text (`weights.json`, every value) and written
back to model.safetensors here. Their data is regenerated exactly as it was then.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from conftest import write_reviews_and_series
from safetensors.torch import save_file

import dlab
from dlab._io import read_json

FIXTURES = Path(__file__).parent / "fixtures" / "runs-2026-11"


def _data(folder: Path) -> dict[str, Path]:
    write_reviews_and_series(folder)  # the same files the runs were trained on then
    return {"reviews": folder / "reviews.csv", "wave": folder / "series.csv"}


def _write_weights(source: Path, target: Path) -> None:
    """The run's model.safetensors, kept in git as text: every value of every tensor, exactly
    (float32 values round-trip through JSON's doubles)."""
    saved = json.loads(source.read_text())
    tensors = {
        name: torch.tensor(t["values"], dtype=getattr(torch, t["dtype"])).reshape(t["shape"])
        for name, t in saved["tensors"].items()
    }
    save_file(tensors, str(target), metadata=saved["metadata"])


@pytest.fixture
def old_run(tmp_path, request):
    name = request.param
    run = tmp_path / "runs" / name / "20261202-131211"
    shutil.copytree(FIXTURES / name, run, ignore=shutil.ignore_patterns("weights.json"))
    _write_weights(FIXTURES / name / "weights.json", run / "model.safetensors")
    recipe = yaml.safe_load((run / "recipe.yaml").read_text())
    recipe["data"]["path"] = str(_data(tmp_path)[name])
    (run / "recipe.yaml").write_text(yaml.safe_dump(recipe, sort_keys=False))
    return run


@pytest.mark.parametrize("old_run", ["reviews", "wave"], indirect=True)
def test_an_old_run_folder_loads_evaluates_and_reports(old_run):
    saved = read_json(old_run / "meta.json")
    assert "extra" in saved["data"]  # the old format, as written then
    run = dlab.load(old_run)
    assert run.meta.task == saved["data"]["task"]
    report = run.evaluate("test")
    for metric, value in saved["evaluation"]["test"].items():  # the same numbers as then
        assert report[metric] == pytest.approx(value, rel=1e-5), metric
    assert run.write_report().is_file()
    assert run.dir.record.status == "completed" and run.dir.record.steps == saved["steps"]


@pytest.mark.parametrize("old_run", ["reviews"], indirect=True)
def test_an_old_text_classifier_still_predicts(old_run):
    run = dlab.load(old_run)
    assert run.meta.details.vocab_size == 22 and run.meta.details.pad_id == 0
    first, second = run.predict(["a wonderful moving film", "a dull boring mess"], top_k=2)
    # what the code of 2e9983d predicted from these files
    assert first.top[0] == ("pos", pytest.approx(0.65054876, rel=1e-5))
    assert second.top[0] == ("neg", pytest.approx(0.77540362, rel=1e-5))


def test_the_run_record_refuses_a_wrong_field_and_keeps_the_file(tmp_path):
    from dlab.errors import RunError
    from dlab.recipe import from_dict
    from dlab.runs import RunDir

    run = RunDir.create(from_dict({"data": {"name": "mnist"}, "model": {"name": "mlp"}}), tmp_path)
    before = (run.path / "meta.json").read_text()
    with pytest.raises(RunError, match="status"):
        run.update_meta(status="finished")  # not a status
    with pytest.raises(RunError, match="steps"):
        run.update_meta(steps="many")
    assert (run.path / "meta.json").read_text() == before
    run.update_meta(status="running", seed=3, from_a_newer_version={"kept": True})
    assert run.record.status == "running" and run.meta["from_a_newer_version"] == {"kept": True}
