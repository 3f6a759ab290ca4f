"""Clusters of an autoencoder's codes: k-means (scikit-learn), the unsupervised clustering
accuracy (Hungarian matching, scipy), NMI and ARI, and DEC's refinement (Xie et al. 2016).

The clustering accuracy of an assignment is the share of samples whose cluster, mapped to one
class by the one-to-one mapping that agrees with the labels most often, holds their class: the
labels choose only that mapping, never the clusters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

if TYPE_CHECKING:
    from dlab.api import Run
    from dlab.data.bundle import DataMeta, TensorLoader

CLUSTERS_FILE = "clusters.json"
KMEANS_SAMPLES = 20_000  # training codes k-means is fitted on, at most
CHUNK = 1024


def pixel_errors(logits: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: binary cross-entropy and squared error summed over its pixels."""
    bce = F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)
    mse = (torch.sigmoid(logits) - x).pow(2).flatten(1).sum(1)
    return bce, mse


def encode_split(model: nn.Module, loader: TensorLoader, seed: int = 0) -> dict[str, Any]:
    """Codes and errors of every image of a split, in the split's order. For a VAE also the
    ELBO of each image, log p(x|z) − KL(q(z|x) ‖ p(z)) with one z drawn from q (nats)."""
    from dlab.models.autoencoders import kl_divergence

    generator = torch.Generator().manual_seed(seed)
    parts: dict[str, list[torch.Tensor]] = {"codes": [], "bce": [], "mse": [], "elbo": []}
    model.eval()
    with torch.no_grad():
        for x in loader.inputs.split(CHUNK):
            codes = model.encode(x)
            bce, mse = pixel_errors(model(x), x)
            parts["codes"].append(codes)
            parts["bce"].append(bce)
            parts["mse"].append(mse)
            if hasattr(model, "moments"):
                mu, log_var = model.moments(x)
                eps = torch.randn(mu.shape, generator=generator)
                drawn, _ = pixel_errors(model.decode(mu + (0.5 * log_var).exp() * eps), x)
                parts["elbo"].append(-drawn - kl_divergence(mu, log_var))
    out: dict[str, Any] = {k: torch.cat(v) for k, v in parts.items() if v}
    out["codes"] = out["codes"].flatten(1).numpy()
    out["pixels"] = int(np.prod(loader.inputs.shape[1:]))
    return out


@dataclass
class Clusters:
    """k-means centres of the training codes and the training reconstruction error's tail."""

    centres: np.ndarray  # (k, code size)
    error_p95: float
    error_p99: float

    def assign(self, codes: np.ndarray, distances: bool = False) -> Any:
        """The nearest centre of each code (and the distance to it)."""
        d = ((codes[:, None, :] - self.centres[None]) ** 2).sum(-1)
        nearest = d.argmin(1)
        return (nearest, np.sqrt(d[np.arange(len(d)), nearest])) if distances else nearest


def fit_clusters(run: Run, train: dict[str, Any], meta: DataMeta, seed: int = 0) -> Clusters:
    """k-means on the training codes (n_init 10), saved in the run for `predict`."""
    from sklearn.cluster import KMeans

    from dlab._io import atomic_write_json

    codes = train["codes"]
    if len(codes) > KMEANS_SAMPLES:
        codes = codes[np.random.default_rng(seed).choice(len(codes), KMEANS_SAMPLES, replace=False)]
    k = meta.details.clusters
    centres = KMeans(k, n_init=10, random_state=seed).fit(codes).cluster_centers_
    errors = train["bce"].numpy()
    clusters = Clusters(centres, float(np.quantile(errors, 0.95)), float(np.quantile(errors, 0.99)))
    atomic_write_json(
        run.path / CLUSTERS_FILE,
        {
            "centres": centres.tolist(),
            "error_p95": clusters.error_p95,
            "error_p99": clusters.error_p99,
        },
    )
    return clusters


def load_clusters(run: Run) -> Clusters:
    """The clusters `dlab evaluate` saved in the run."""
    from dlab._io import read_json
    from dlab.errors import RunError

    path = run.path / CLUSTERS_FILE
    if not path.is_file():
        raise RunError(
            f"{run.path}: no {CLUSTERS_FILE}; run `dlab evaluate {run.path}` to fit them"
        )
    data = read_json(path)
    return Clusters(np.asarray(data["centres"]), data["error_p95"], data["error_p99"])


def cluster_accuracy(labels: np.ndarray, assigned: np.ndarray) -> tuple[float, np.ndarray, dict]:
    """Unsupervised clustering accuracy: the best one-to-one mapping of clusters to classes
    (Hungarian algorithm on the contingency table). Also the table and the mapping."""
    from scipy.optimize import linear_sum_assignment

    table = np.zeros((assigned.max() + 1, labels.max() + 1), dtype=np.int64)
    np.add.at(table, (assigned, labels), 1)
    rows, cols = linear_sum_assignment(-table)
    return (
        float(table[rows, cols].sum() / len(labels)),
        table,
        dict(zip(rows.tolist(), cols.tolist(), strict=True)),
    )


def cluster_scores(labels: np.ndarray, assigned: np.ndarray, classes: list[str]) -> dict[str, Any]:
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    accuracy, table, mapping = cluster_accuracy(labels, assigned)
    return {
        "cluster_accuracy": accuracy,
        "nmi": float(normalized_mutual_info_score(labels, assigned)),
        "ari": float(adjusted_rand_score(labels, assigned)),
        "contingency": table.tolist(),
        "cluster_classes": {str(k): classes[v] for k, v in mapping.items()},
    }


def soft_assign(codes: torch.Tensor, centres: torch.Tensor, alpha: float = 1.0) -> torch.Tensor:
    """DEC's q_ij: a Student's t kernel between code i and centre j, normalised over j."""
    q = (1 + torch.cdist(codes, centres).pow(2) / alpha).pow(-(alpha + 1) / 2)
    return q / q.sum(1, keepdim=True)


def sharpen(q: torch.Tensor) -> torch.Tensor:
    """DEC's target p_ij = (q_ij² / f_j) normalised over j, f_j = Σ_i q_ij: confident
    assignments count more, and large clusters cannot swallow the rest."""
    p = q.pow(2) / q.sum(0)
    return p / p.sum(1, keepdim=True)


def dec_refine(model: nn.Module, images: torch.Tensor, centres: np.ndarray, epochs: int = 10,
               batch_size: int = 256, lr: float = 1e-4, update_every: int = 1, seed: int = 0,
               tolerance: float = 0.001) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Deep embedded clustering: train the encoder and the centres to minimise KL(P ‖ Q), the
    target P recomputed from the whole set every `update_every` epochs; stop early when fewer
    than `tolerance` of the assignments change. Returns the final assignments and centres."""
    torch.manual_seed(seed)
    mu = nn.Parameter(torch.as_tensor(centres, dtype=torch.float32).clone())
    optimizer = torch.optim.Adam([*model.parameters(), mu], lr=lr)
    previous = None

    def codes_of_all() -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return torch.cat([model.encode(x) for x in images.split(CHUNK)])

    for epoch in range(epochs):
        if epoch % update_every == 0:
            q = soft_assign(codes_of_all(), mu.detach())
            target, assigned = sharpen(q), q.argmax(1)
            if previous is not None and (assigned != previous).float().mean() < tolerance:
                break
            previous = assigned
        model.train()
        for index in torch.randperm(len(images)).split(batch_size):
            q = soft_assign(model.encode(images[index]), mu)
            loss = F.kl_div(q.log(), target[index], reduction="batchmean")
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    final = soft_assign(codes_of_all(), mu.detach()).argmax(1)
    return final.numpy(), mu.detach().numpy()
