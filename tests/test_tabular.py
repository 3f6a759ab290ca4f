"""The tabular task: its scores against scikit-learn, cost-minimising decisions, permutation
importance and attributions on models whose answer is known, the two table models, and the
command line from a CSV to an explained prediction (bad input: one line, exit 2)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from dlab.cli import main
from dlab.data.bundle import DataMeta
from dlab.models.tabular import (
    EXAMPLE_META,
    FeatureTokenizer,
    FTTransformer,
    FTTransformerConfig,
    TabMLP,
    TabMLPConfig,
)
from dlab.tasks.tabular import TableDetails, attributions, decide, permutation_importance, scores

QUANTILES = [-2.0, -0.5, 0.0, 0.4, 2.5]  # each column's training distribution
GERMAN_COSTS = [[0.0, 5.0], [1.0, 0.0]]  # classes (bad, good): a bad applicant accepted costs 5


def details(columns=3, costs=None) -> TableDetails:
    return TableDetails(
        columns=[
            {"name": f"x{j}", "kind": "numeric", "fill": 0.0, "quantiles": QUANTILES}
            for j in range(columns)
        ],
        target="y",
        positive=0,
        costs=costs,
    )


class OnlyColumn(nn.Module):
    """Logits that read column `j` alone: P(class 0) = sigmoid(3·x_j)."""

    def __init__(self, j: int):
        super().__init__()
        self.j = j

    def forward(self, x):
        z = 3 * x[:, self.j]
        return torch.stack([z, torch.zeros_like(z)], 1)


def test_scores_match_scikit_learn_and_costs_follow_the_expected_cost():
    from sklearn.metrics import average_precision_score, roc_auc_score

    generator = torch.Generator().manual_seed(0)
    probs = torch.rand(300, 2, generator=generator).softmax(-1)
    targets = torch.randint(0, 2, (300,), generator=generator)
    found = scores(probs, targets, details(costs=GERMAN_COSTS))
    hit = (targets == 0).numpy()
    assert found["roc_auc"] == pytest.approx(roc_auc_score(hit, probs[:, 0].numpy()), abs=1e-6)
    assert found["average_precision"] == pytest.approx(
        average_precision_score(hit, probs[:, 0].numpy()), abs=1e-6
    )
    accept = probs[:, 1] > 5 / 6  # accept only when 5·P(bad) < 1·P(good)
    assert torch.equal(decide(probs.double(), GERMAN_COSTS), accept.long())
    cost = torch.where(accept, 5.0 * (targets == 0), 1.0 * (targets == 1)).mean()
    assert found["cost"] == pytest.approx(float(cost))
    refuse_all, accept_all = (
        float((targets == 1).float().mean()),
        5 * float((targets == 0).float().mean()),
    )
    assert found["cost_constant"] == pytest.approx(min(refuse_all, accept_all))


def test_importance_and_attributions_find_the_one_column_a_model_reads():
    generator = torch.Generator().manual_seed(1)
    inputs = torch.randn(400, 3, generator=generator)
    model = OnlyColumn(1)
    targets = (torch.rand(400, generator=generator) > torch.sigmoid(3 * inputs[:, 1])).long()
    importance = permutation_importance(model, inputs, targets, details())
    assert next(iter(importance)) == "x1" and importance["x1"] > 0.2
    assert importance["x0"] == 0 and importance["x2"] == 0
    found = attributions(model, inputs[:5], details(), target=0)
    # against the column's training distribution: the mean over its quantiles
    expected = torch.sigmoid(3 * inputs[:5, 1]) - torch.sigmoid(3 * torch.tensor(QUANTILES)).mean()
    assert torch.allclose(found[:, 1], expected, atol=1e-6)
    assert found[:, [0, 2]].abs().max() < 1e-6  # float32 rounding of the weighted mean only


def test_the_feature_tokenizer_is_x_times_w_plus_b_and_an_embedding_per_level_in_float64():
    model = FTTransformer(
        EXAMPLE_META, FTTransformerConfig(name="ft_transformer", dim=8, heads=2)
    ).double()
    tokenizer: FeatureTokenizer = model.tokenizer
    x = torch.tensor([[0.5, 2.0, -1.0, 1.0, 3.0]], dtype=torch.float64)  # job=b, housing=own
    tokens = tokenizer(*model.columns(x))
    numeric = x[0, [0, 2, 4]]
    assert torch.allclose(tokens[0, :3], numeric[:, None] * tokenizer.weight + tokenizer.bias[:3])
    job, housing = tokenizer.embedding.weight[2], tokenizer.embedding.weight[4 + 1]
    assert torch.allclose(tokens[0, 3], job + tokenizer.bias[3])
    assert torch.allclose(tokens[0, 4], housing + tokenizer.bias[4])


@pytest.mark.parametrize("make", [lambda: TabMLP(EXAMPLE_META, TabMLPConfig(name="tab_mlp")),
                                  lambda: FTTransformer(EXAMPLE_META, FTTransformerConfig(name="ft_transformer"))])  # fmt: skip
def test_table_models_read_categories_and_clamp_codes_they_never_learnt(make):
    torch.manual_seed(0)
    model = make().eval()
    x = torch.tensor([[0.1, 1.0, 0.3, 1.0, -0.2]]).repeat(3, 1)
    x[1, 1], x[2, 1] = 2.0, 99.0  # job b; a code past the last level reads as the last (c)
    last = x[0].clone()
    last[1] = 3.0
    with torch.no_grad():
        out, top = model(x), model(last[None])
    assert not torch.allclose(out[0], out[1], atol=1e-4)  # the category changes the answer
    assert torch.allclose(out[2], top[0], atol=1e-6)


def test_embedding_sizes_follow_the_level_count():
    model = TabMLP(EXAMPLE_META, TabMLPConfig(name="tab_mlp"))
    assert [e.num_embeddings for e in model.embeddings] == [4, 3]  # levels + the unknown bucket
    assert [e.embedding_dim for e in model.embeddings] == [3, 3]


def credit_csv(path, n=600, seed=0):
    """Applicants whose risk follows their checking account and the loan's duration."""
    rng = np.random.default_rng(seed)
    checking = rng.choice(["none", "little", "rich"], n)
    duration = rng.integers(6, 60, n)
    logit = 3 * (checking == "rich") - 3 * (checking == "none") - 0.1 * (duration - 30)
    risk = np.where(rng.random(n) < 1 / (1 + np.exp(-logit)), "good", "bad")
    frame = pd.DataFrame(
        {"checking": checking, "duration": duration, "age": rng.integers(20, 70, n), "risk": risk}
    )
    frame.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def credit_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("credit")
    data = credit_csv(folder / "credit.csv")
    recipe = folder / "credit.yaml"
    recipe.write_text(
        "name: credit\n"
        f"data: {{name: table_csv, path: {data}, target: risk, val_size: 0.15, batch_size: 32,"
        " positive: bad,"
        " costs: {bad: {good: 5}, good: {bad: 1}}}\n"
        "model: {name: tab_mlp, hidden: [16]}\n"
        "train: {epochs: 15, optimizer: {name: adam, lr: 0.01}, metrics: [accuracy, roc_auc]}\n"
    )
    assert main(["train", str(recipe), "--runs-dir", str(folder / "runs"), "-q"]) == 0
    return next((folder / "runs" / "credit").iterdir())


def test_a_table_run_learns_explains_and_reports(credit_run, tmp_path, capsys):
    report = json.loads((credit_run / "eval" / "test.json").read_text())
    assert report["roc_auc"] > 0.7 and report["cost"] <= report["cost_constant"]
    assert next(iter(report["importance"])) in ("checking", "duration")
    case = tmp_path / "case.json"
    case.write_text(json.dumps({"checking": "rich", "duration": 6, "age": 40}))
    capsys.readouterr()
    assert main(["predict", str(credit_run), str(case), "--explain"]) == 0
    out = capsys.readouterr().out
    assert "case.json: good" in out and "what moved P(bad)" in out
    effects = {line.split("│")[1].strip(): float(line.split("│")[3]) for line in out.splitlines()
               if line.count("│") == 4}  # fmt: skip
    # a rich account and a short loan lowered the risk; age does not matter to these applicants
    assert effects["checking"] < -0.05 and effects["duration"] < -0.02
    assert abs(effects["age"]) < abs(effects["duration"])
    html = (credit_run / "report.html").read_text()
    assert "permutation importance" in html and "most confident" in html


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ({"checking": "rich", "age": 40}, "no column 'duration'"),
        ({"checking": "rich", "duration": "long", "age": 40}, "'long' is not a number"),
    ],
)
def test_a_bad_case_is_one_line_and_exit_2(credit_run, tmp_path, capsys, case, message):
    path = tmp_path / "case.json"
    path.write_text(json.dumps(case))
    assert main(["predict", str(credit_run), str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_an_unseen_level_is_predicted_with_one_warning(credit_run, tmp_path, capsys):
    path = tmp_path / "case.json"
    path.write_text(json.dumps({"checking": "offshore", "duration": 12, "age": 33}))
    assert main(["predict", str(credit_run), str(path), "--explain"]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if "never seen" in line]
    assert len(warnings) == 1 and warnings[0].startswith("dlab: warning: ")
    assert "(unknown)" in captured.out


def test_training_on_a_table_without_its_target_is_one_line_and_exit_2(tmp_path, capsys):
    data = credit_csv(tmp_path / "credit.csv")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"name: r\ndata: {{name: table_csv, path: {data}, target: outcome}}\nmodel: {{name: tab_mlp}}\n"
    )
    code = main(["train", str(recipe), "--runs-dir", str(tmp_path / "runs"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "no target column 'outcome' (found checking, duration, age, risk)" in err


def test_example_meta_is_a_valid_table():
    assert isinstance(EXAMPLE_META, DataMeta) and math.isclose(sum(EXAMPLE_META.details.prior), 1)


def test_piecewise_linear_encoding_counts_the_way_through_each_quantile_bin():
    model = TabMLP(EXAMPLE_META, TabMLPConfig(name="tab_mlp", numbers="piecewise", bins=5))
    x = torch.tensor([[(36 - 40) / 12, 1.0, (2 - 2.5) / 1.5, 1.0, 0.0]])  # age 36, amount 2
    encoded = model.piecewise(model.columns(x)[0])
    # age's edges are its quantiles 18, 25, 33, 40, 52, 75: 36 has passed two bins, 3/7 of one
    assert torch.allclose(encoded[0, 0], torch.tensor([1, 1, 3 / 7, 0, 0]), atol=1e-6)
    # amount's repeated quantiles leave three bins (0-1, 1-4, 4-9); 2 is a third through the second
    assert torch.allclose(encoded[0, 1], torch.tensor([1, 1 / 3, 0, 0, 0]), atol=1e-6)
    assert encoded[0, 2].abs().sum() == 0  # months has no quantiles: no bins
    out = model(x.repeat(4, 1))
    assert out.shape == (4, 2) and torch.isfinite(out).all()


def test_ft_transformer_with_piecewise_numbers_learns_a_small_batch():
    torch.manual_seed(0)
    model = FTTransformer(
        EXAMPLE_META,
        FTTransformerConfig(
            name="ft_transformer", numbers="piecewise", bins=4, attention_dropout=0, ffn_dropout=0
        ),
    )
    from dlab.tasks import task_of

    x, y = task_of(EXAMPLE_META).example_batch(EXAMPLE_META, 16, torch.Generator().manual_seed(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x), y)
        loss.backward()
        optimizer.step()
    assert loss.item() < 0.05


@pytest.mark.parametrize("kind", ["numeric", "categorical"])
def test_a_table_of_one_kind_of_column_builds_saves_and_loads(tmp_path, kind):
    from dlab.training.checkpoint import load_weights, save_weights

    column = {"name": "a", "kind": kind, "fill": 0.0 if kind == "numeric" else "x"}
    if kind == "categorical":
        column["levels"] = ["x", "y"]
    meta = DataMeta(dataset="t", task="tabular", input_kind="table", input_shape=(1,),
                    num_classes=2, classes=["n", "p"],
                    details={"columns": [column], "target": "t", "positive": 1})  # fmt: skip
    for make in (TabMLP(meta, TabMLPConfig(name="tab_mlp")),
                 FTTransformer(meta, FTTransformerConfig(name="ft_transformer"))):  # fmt: skip
        save_weights(make, tmp_path / "m.safetensors")  # an empty buffer must not share storage
        loaded = load_weights(type(make)(meta, make_config(make)), tmp_path / "m.safetensors")
        x = torch.tensor([[1.0], [0.0]])
        assert torch.allclose(make.eval()(x), loaded.eval()(x))


def make_config(model):
    if isinstance(model, TabMLP):
        return TabMLPConfig(name="tab_mlp")
    return FTTransformerConfig(name="ft_transformer")
