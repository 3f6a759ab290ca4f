"""The plug-in point: a fifth task, defined entirely in this file, trains, evaluates, predicts,
reports and serves through dlab's own verbs, without a line of dlab changed.

The task counts the ones in a row of 12 bits: a number out, scored by how often the rounded
count is exact. Its data set and its report section live here too; the model is dlab's MLP.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from fastapi.testclient import TestClient

import dlab
from dlab.data.bundle import DataBundle, DataMeta, TensorLoader
from dlab.recipe import DataConfig
from dlab.registry import DATASETS, TASKS
from dlab.report.sections import Section
from dlab.tasks import Details, Task, register

BITS = 12


class CountDetails(Details):
    bits: int  # the length of a row


class CountOnes(Task):
    """Count the ones in a row of bits: exact-count rate and mean absolute error."""

    name = "count_ones"
    Details = CountDetails
    headline = ("exact", "mae")
    verbs = ("predict",)

    def evaluate(self, run: Any, bundle: DataBundle, split: str) -> dict[str, Any]:
        loader = bundle.loader(split)
        with torch.no_grad():
            pairs = [(run.model(x)[:, 0], y[:, 0]) for x, y in loader.epoch(0)]
        predicted, actual = (torch.cat(p) for p in zip(*pairs, strict=True))
        return {
            "samples": len(actual),
            "exact": float((predicted.round() == actual).float().mean()),
            "mae": float((predicted - actual).abs().mean()),
        }

    def output_size(self, meta: DataMeta) -> int:
        return 1

    def example_batch(self, meta: DataMeta, batch: int, generator: torch.Generator) -> Any:
        bits = torch.randint(0, 2, (batch, meta.details.bits), generator=generator).float()
        return bits, bits.sum(1, keepdim=True)

    def answer(self, outputs: torch.Tensor, meta: DataMeta, top_k: int = 5) -> list[dict]:
        return [{"label": str(int(o.round())), "count": float(o)} for o in outputs[:, 0]]

    def report_sections(self) -> list[Section]:
        return [Section("counts", "Counting", 40, _counts_section)]


def _counts_section(ctx: Any) -> str:
    return f"<p id='toy-counts'>{ctx.data_meta.details.bits} bits per row</p>"


class CountConfig(DataConfig):
    samples: int = 1200


def build_counts(config: CountConfig, seed: int = 0) -> DataBundle:
    generator = torch.Generator().manual_seed(1234)
    x = torch.randint(0, 2, (config.samples, BITS), generator=generator).float()
    y = x.sum(1, keepdim=True)
    cut = (config.samples * 8 // 10, config.samples * 9 // 10)
    meta = DataMeta(
        "count_bits",
        task="count_ones",
        input_kind="vector",
        input_shape=(BITS,),
        sizes={"train": cut[0], "val": cut[1] - cut[0], "test": config.samples - cut[1]},
        details={"bits": BITS},
    )

    def split(a: int, b: int, shuffle: bool = False) -> TensorLoader:
        return TensorLoader(x[a:b], y[a:b], config.batch_size, shuffle=shuffle, seed=seed)

    return DataBundle(split(0, cut[0], True), split(*cut), split(cut[1], config.samples), meta=meta)


@pytest.fixture
def toy_task():
    register(CountOnes)
    DATASETS.register("count_bits", config=CountConfig, summary="rows of bits")(build_counts)
    yield
    del TASKS._entries["count_ones"], DATASETS._entries["count_bits"]


def test_a_task_defined_in_one_file_trains_evaluates_predicts_reports_and_serves(
    toy_task, tmp_path
):
    recipe = {
        "name": "count",
        "data": {"name": "count_bits", "batch_size": 32},
        "model": {"name": "mlp", "hidden": [32]},
        "train": {
            "epochs": 25,
            "loss": "mse",
            "metrics": [],
            "optimizer": {"name": "adam", "lr": 0.01},
        },
    }
    run = dlab.train(recipe, runs_dir=tmp_path, progress=False)

    test = run.dir.meta["evaluation"]["test"]  # evaluated by the task, headline in its order
    assert list(test) == ["exact", "mae", "samples"]
    assert test["exact"] > 0.95 and test["mae"] < 0.3  # counting is learnable: it learned

    rows = torch.tensor([[1.0] * 5 + [0.0] * 7, [1.0] * 11 + [0.0]])
    assert [p.label for p in run.predict(rows)] == ["5", "11"]

    page = (run.path / "report.html").read_text(encoding="utf-8")
    assert "id='toy-counts'>12 bits per row" in page and "exact" in page

    from dlab.serve import build_app

    with TestClient(build_app(run.path, max_wait_ms=1)) as client:
        assert "predict" in client.get("/metadata").json()["verbs"]
        answer = client.post("/predict", json={"inputs": rows.tolist()}).json()
    assert [a["label"] for a in answer["predictions"]] == ["5", "11"]


def test_an_unknown_field_in_a_tasks_details_is_one_clear_line(toy_task):
    from dlab.errors import DataError

    with pytest.raises(DataError, match="count_ones task: bitz: Extra inputs"):
        DataMeta("x", task="count_ones", details={"bits": 3, "bitz": 4})
