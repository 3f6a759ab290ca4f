"""Recommendation end to end: metrics against their definitions, baselines, a trained run that
beats them, `dlab recommend`, cold start, the server's routes, tuning."""

from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from fastapi.testclient import TestClient

from dlab.api import train
from dlab.cli import main
from dlab.errors import InputError
from dlab.tasks.ranking import _recall
from dlab.tasks.recommender import item_knn_scores, ranking_metrics


def recipe(path, task="rating", model=None, **data):
    """A recipe over the ratings file (conftest's `ratings_file`) for `task`."""
    ranking = task == "ranking"
    return {
        "name": f"toy_{task}",
        "data": {
            "name": "ratings_csv",
            "path": str(path),
            "timestamp": "timestamp",
            "task": task,
            "split": "leave_last_out" if ranking else "random",
            "batch_size": 64,
            "candidates": 20,
            **data,
        },
        "model": model or {"name": "mf", "dim": 8, "l2": 0.02},
        "train": {
            "epochs": 25,
            "optimizer": {"name": "adam", "lr": 0.02},
            "loss": "bce" if ranking else "mse",
            "metrics": ["hit_rate", "ndcg"] if ranking else ["rmse", "mae"],
        },
    }


def test_hit_rate_and_ndcg_follow_their_definitions():
    # the held-out item (column 0 here) ranks 0, 3 and 12th among 20 candidates
    scores = torch.arange(20, 0, -1).float().repeat(3, 1)
    targets = torch.zeros(3, 20)
    for row, rank in enumerate((0, 3, 12)):
        targets[row, rank] = 1
    found = ranking_metrics(scores, targets, k=10)
    assert found["hit_rate"] == pytest.approx(2 / 3)
    assert found["ndcg"] == pytest.approx((1 + 1 / math.log2(5) + 0) / 3)


def test_full_recall_leaves_out_what_the_user_has_seen():
    scores = torch.tensor([[5.0] + [4.0] * 21 + [1.0] * 8])  # item 0 best, 1-21 next, held out: 22
    held, users = torch.tensor([1]), torch.tensor([0])
    assert _recall(scores.clone(), users, held, torch.zeros((0, 2), dtype=torch.long)) == 0.0
    seen = torch.tensor([[0, k] for k in range(2, 22)])  # 20 seen items drop out of the ranking
    assert _recall(scores.clone(), users, held, seen) == 1.0


def test_item_knn_sums_cosine_similarities_of_the_users_items():
    train = torch.tensor([[0, 0], [0, 1], [1, 0], [1, 2], [2, 1]])
    scores = item_knn_scores(train, users=3, items=3)
    # items' user sets: 0 {0,1}, 1 {0,2}, 2 {1}; cos(0,1) = 1/2, cos(0,2) = 1/sqrt(2), cos(1,2) = 0
    assert scores[2].tolist() == pytest.approx([0.5, 0.0, 0.0])  # user 2 has item 1
    assert scores[0].tolist() == pytest.approx([0.5, 0.5, 1 / math.sqrt(2)])


def test_a_trained_rating_model_beats_both_baselines(rating_run):
    report = rating_run.test_report()
    assert report["rmse"] < report["bias_rmse"] < report["mean_rmse"]
    assert len(report["squared_error_per_user"]) == 60
    assert (rating_run.path / "seen.npz").is_file()


def test_evaluation_scores_predictions_clipped_to_the_scale(rating_run):
    from dlab.data import build

    bundle = build(rating_run.recipe.data, rating_run.recipe.seed)
    x, y = (torch.cat(parts) for parts in zip(*bundle.test.epoch(0), strict=True))
    with torch.no_grad():
        raw = rating_run.model(x)
    assert raw.max() > 5 or raw.min() < 1  # some predictions do fall outside
    expected = (raw.clamp(1, 5) - y).pow(2).mean().sqrt()
    assert rating_run.evaluate("test", write=False)["rmse"] == pytest.approx(float(expected))


def test_the_trainer_applies_the_models_batch_penalty(tmp_path, ratings_file):
    norms = []
    for l2 in (0.0, 0.5):
        spec = recipe(ratings_file, model={"name": "mf", "dim": 8, "l2": l2})
        run = train(spec, ["train.epochs=4"], runs_dir=tmp_path, progress=False, report=False)
        norms.append(float(run.model.item_factors.weight.detach().norm()))
    assert norms[1] < 0.5 * norms[0]


def test_recommend_leaves_out_what_was_rated_and_names_the_items(rating_run):
    answer = rating_run.recommend("user3", k=5)
    seen = {row["item"] for row in rating_run.recommend("user3", k=45, exclude_seen=False)["items"]}
    mine = rating_run.recommender()
    rated = {mine.details.items[i] for i in mine.seen[mine.seen[:, 0] == mine.user("user3"), 1]}
    assert len(answer["items"]) == 5 and not rated & {r["item"] for r in answer["items"]}
    assert rated <= seen  # without exclusion they may come back
    scores = [r["score"] for r in answer["items"]]
    assert scores == sorted(scores, reverse=True) and all(1 <= s <= 5 for s in scores)
    liked = [r["score"] for r in answer["liked"]]
    assert liked == sorted(liked, reverse=True) and len(liked) == 5
    assert "fallback" not in answer


def test_an_unknown_user_gets_the_popular_items_and_is_told(rating_run):
    answer = rating_run.recommend("nobody", k=3)
    assert "unknown user nobody" in answer["fallback"]
    popularity = rating_run.meta.details.popularity
    top = sorted(range(len(popularity)), key=lambda i: -popularity[i])[:3]
    assert [r["score"] for r in answer["items"]] == [popularity[i] for i in top]
    rated = rating_run.rate("nobody", "film3")
    film3 = rating_run.meta.details.items.index("film3")  # ids sort as text: film0, film1, film10
    assert rated["rating"] == pytest.approx(rating_run.meta.details.item_mean[film3], abs=1e-4)
    assert "unknown user" in rated["fallback"]
    assert rating_run.rate("user1", "nothing")["fallback"].startswith("unknown item")


def test_a_recipe_can_refuse_unknown_ids(tmp_path, ratings_file):
    run = train(
        recipe(ratings_file, cold_start="refuse"),
        ["train.epochs=1"],
        runs_dir=tmp_path,
        progress=False,
        report=False,
    )
    with pytest.raises(InputError, match="user 'nobody' is not among the 60 users"):
        run.recommend("nobody")


def test_the_cli_recommends_and_predicts(rating_run, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(["recommend", str(rating_run.path), "--user", "user3", "-k", "4"]) == 0
    out = capsys.readouterr().out
    assert "recommended for user user3" in out and "user user3 rated highest" in out
    assert main(["recommend", str(rating_run.path), "--user", "user3", "-k", "2", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)["items"]) == 2
    assert main(["predict", str(rating_run.path), "--user", "user3", "--item", "film7"]) == 0
    assert 1 <= json.loads(capsys.readouterr().out)["rating"] <= 5
    assert main(["predict", str(rating_run.path), "--user", "user3"]) == 2


def test_the_server_recommends_and_rates(rating_run):
    from dlab.serve import build_app

    with TestClient(build_app(rating_run.path)) as client:
        answer = client.post("/recommend", json={"user": "user3", "k": 3}).json()
        assert answer == rating_run.recommend("user3", 3)
        assert client.post("/recommend", json={"user": "user3", "k": 0}).status_code == 422
        assert client.post("/recommend", json={"k": 3}).status_code == 422
        assert client.post("/recommend", json={"user": 3, "exclude_seen": "no"}).status_code == 422
        assert client.get("/users").json()["users"][:2] == ["user0", "user1"]
        rated = client.post("/predict", json={"user": "user3", "item": "film7"}).json()
        assert rated == rating_run.rate("user3", "film7")
        assert client.get("/metadata").json()["verbs"] == ["recommend", "predict"]
        assert "recommend-panel" in client.get("/").text


def test_ranking_trains_and_beats_popularity(tmp_path, ratings_file):
    run = train(
        recipe(ratings_file, "ranking", {"name": "gmf", "dim": 8}),
        runs_dir=tmp_path,
        progress=False,
        report=False,
    )
    report = run.test_report()
    assert report["samples"] == 60 and report["candidates"] == 21
    for key in ("hit_rate", "ndcg", "recall", "popular_hit_rate", "knn_hit_rate"):
        assert 0 <= report[key] <= 1
    assert report["hit_rate"] > report["popular_hit_rate"]


def test_tune_searches_embedding_size_l2_and_learning_rate(tmp_path, ratings_file):
    from dlab.tune import tune

    spec = recipe(ratings_file)
    spec["train"]["epochs"] = 3
    spec["tune"] = {
        "metric": "val_rmse",
        "trials": 3,
        "space": {
            "model.dim": {"choice": [4, 16]},
            "model.l2": {"log_uniform": [0.001, 0.1]},
            "train.optimizer.lr": {"log_uniform": [0.003, 0.03]},
        },
    }
    path = tmp_path / "tune.yaml"
    path.write_text(yaml.safe_dump(spec))
    result = tune(path, runs_dir=tmp_path / "runs", train_best=False)
    states = [t["state"] for t in result.trials]
    assert len(states) == 3 and "FAIL" not in states
    completed = [t["value"] for t in result.trials if t["state"] == "COMPLETE"]
    assert result.best_value == min(completed)  # an RMSE: lower is better
    best = yaml.safe_load(result.best_recipe_path.read_text())
    assert best["model"]["dim"] == result.best_params["model.dim"]
