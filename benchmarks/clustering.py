"""Clustering MNIST without labels, side by side: k-means on pixels, on PCA, on an autoencoder's
codes, after DEC's refinement, and on a manifold embedding of the codes.

python -m benchmarks clustering [SEEDS]   # default: 3 seeds (0 1 2) of the autoencoder

Protocol: every method fits on the training images (55,000: MNIST's 60,000 less the 5,000 of the
recipe's validation split) and is scored on the 10,000 test images, except the manifold step,
which embeds the test images' codes themselves (transductive, as N2D does; still no label). No
label is read for training or for choosing anything: the number of clusters is the class count
(the standard protocol), the recipe's epochs are fixed in advance, the autoencoder's validation
loss is a reconstruction loss. Labels only score: clustering accuracy (Hungarian matching), NMI,
ARI. Published: k-means on pixels ≈ 53%, DEC ≈ 84%, N2D (autoencoder + UMAP + GMM) ≈ 98%.
"""

from __future__ import annotations

import copy
import statistics
import tempfile
import time

import numpy as np

from benchmarks.common import RECIPES, markdown_table, real_data_dir, write_results

SEEDS = (0, 1, 2)
KMEANS_SAMPLES = 20_000
DEC_EPOCHS = 8
NEIGHBOURS = 15  # of the manifold embedding


def _kmeans(train: np.ndarray, test: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.cluster import KMeans

    rows = np.random.default_rng(seed).choice(
        len(train), min(KMEANS_SAMPLES, len(train)), replace=False
    )
    return KMeans(10, n_init=10, random_state=seed).fit(train[rows]).predict(test)


def _manifold(codes: np.ndarray, seed: int) -> np.ndarray:
    """Codes -> spectral embedding of their k-nearest-neighbour graph -> a Gaussian mixture."""
    from sklearn.manifold import SpectralEmbedding
    from sklearn.mixture import GaussianMixture

    embedded = SpectralEmbedding(10, affinity="nearest_neighbors", n_neighbors=NEIGHBOURS,
                                 random_state=seed).fit_transform(codes)  # fmt: skip
    return GaussianMixture(10, covariance_type="full", n_init=3, random_state=seed).fit_predict(
        embedded
    )


def _scores(name: str, labels: np.ndarray, assigned: np.ndarray, seconds: float) -> dict:
    from dlab.tasks.clustering import cluster_scores

    found = cluster_scores(labels, assigned, [str(d) for d in range(10)])
    print(
        f"  {name}: accuracy {found['cluster_accuracy']:.4f}  NMI {found['nmi']:.4f}  ({seconds:.0f} s)",
        flush=True,
    )
    return {"method": name, **{k: found[k] for k in ("cluster_accuracy", "nmi", "ari")}}


def _baselines(bundle, labels: np.ndarray) -> list[dict]:
    from sklearn.decomposition import PCA

    train = bundle.train.inputs.flatten(1).numpy()
    test = bundle.test.inputs.flatten(1).numpy()
    rows = []
    for seed in SEEDS:
        started = time.perf_counter()
        rows.append(
            _scores(
                "k-means on pixels",
                labels,
                _kmeans(train, test, seed),
                time.perf_counter() - started,
            )
        )
        started = time.perf_counter()
        pca = PCA(50, random_state=seed).fit(train[:KMEANS_SAMPLES])
        assigned = _kmeans(pca.transform(train), pca.transform(test), seed)
        rows.append(_scores("k-means on PCA (50)", labels, assigned, time.perf_counter() - started))
    return rows


def _autoencoder(seed: int, runs: str, labels: np.ndarray) -> list[dict]:
    """Train the recipe's autoencoder with `seed`; score its codes three ways."""
    import torch

    import dlab
    from dlab.data import build
    from dlab.recipe import load_recipe
    from dlab.tasks.clustering import dec_refine, encode_split, soft_assign

    recipe = load_recipe(RECIPES / "mnist_autoencoder.yaml")
    run = dlab.train(recipe, [f"seed={seed}"], runs_dir=runs, progress=False, report=False)
    bundle, model = build(run.recipe.data, seed), run.model
    train_codes = encode_split(model, bundle.train)["codes"]
    test_codes = encode_split(model, bundle.test)["codes"]
    seconds = run.dir.meta["train_seconds"]
    rows = [
        _scores(
            "autoencoder codes + k-means", labels, _kmeans(train_codes, test_codes, seed), seconds
        )
    ]
    started = time.perf_counter()
    rows.append(
        _scores(
            "+ manifold (spectral) + GMM",
            labels,
            _manifold(test_codes, seed),
            time.perf_counter() - started,
        )
    )
    started = time.perf_counter()
    from sklearn.cluster import KMeans

    rows_used = np.random.default_rng(seed).choice(len(train_codes), KMEANS_SAMPLES, replace=False)
    centres = KMeans(10, n_init=10, random_state=seed).fit(train_codes[rows_used]).cluster_centers_
    refined = copy.deepcopy(model)
    _, mu = dec_refine(refined, bundle.train.inputs, centres, epochs=DEC_EPOCHS, seed=seed)
    with torch.no_grad():
        codes = torch.cat([refined.eval().encode(x) for x in bundle.test.inputs.split(1024)])
        assigned = soft_assign(codes, torch.as_tensor(mu)).argmax(1).numpy()
    rows.append(_scores("+ DEC refinement", labels, assigned, time.perf_counter() - started))
    return rows


def main(args: list[str]) -> None:
    import os

    from dlab.data import build

    os.environ.setdefault("DLAB_DATA_DIR", str(real_data_dir()))
    seeds = [int(a) for a in args] or list(SEEDS)
    started = time.perf_counter()
    from dlab.recipe import load_recipe

    bundle = build(load_recipe(RECIPES / "mnist_autoencoder.yaml").data, 0)
    labels = bundle.extra["labels"]["test"].numpy()
    print("baselines", flush=True)
    raw = _baselines(bundle, labels)
    with tempfile.TemporaryDirectory() as runs:
        for seed in seeds:
            print(f"autoencoder seed {seed}", flush=True)
            raw += [r | {"seed": seed} for r in _autoencoder(seed, runs, labels)]
    rows = []
    for method in dict.fromkeys(r["method"] for r in raw):
        mine = [r for r in raw if r["method"] == method]
        row = {"method": method, "runs": len(mine)}
        for key in ("cluster_accuracy", "nmi", "ari"):
            values = [r[key] for r in mine]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            row[key] = f"{statistics.mean(values):.4f} ± {spread:.4f}"
            row[f"{key}_values"] = [round(v, 4) for v in values]
        rows.append(row)
    path = write_results("clustering", rows, key="method")
    print(markdown_table(rows, ["method", "runs", "cluster_accuracy", "nmi", "ari"]))
    print(f"\n{time.perf_counter() - started:.0f} s; written to {path}")
