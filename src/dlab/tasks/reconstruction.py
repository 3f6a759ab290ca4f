"""Reconstruction: learn images without their labels (autoencoders, VAEs), then read the codes.

Training sees only the images: each batch is (x, x) and the loss compares the model's pixel
logits with x in [0, 1]. The labels stay beside the data and are read only afterwards, to score
what the model found without them:

- reconstruction error (binary cross-entropy and squared error per pixel) and, for a VAE, the
  ELBO in nats per image;
- clustering: k-means on the codes of the training images (k: `data.clusters`, else the class
  count, the standard protocol), its clusters matched to classes one-to-one by the Hungarian
  algorithm to give the unsupervised clustering accuracy, with NMI and ARI;
- anomaly detection: with `data.anomalies` (classes left out of training and validation), how well
  the reconstruction error of a test image tells those classes from the rest (AUROC, AP).

The k-means centres and the training error's percentiles are saved in the run (clusters.json) so
`dlab predict` answers with a cluster and an anomaly score.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from pydantic import Field

from dlab.tasks import Details, Task, register

if TYPE_CHECKING:
    from dlab.api import Run
    from dlab.data import DataBundle
    from dlab.data.bundle import Batch, DataMeta
    from dlab.report.sections import Section


class ReconstructionDetails(Details):
    """How the images were drawn, and what the codes are scored against."""

    dark_background: bool | None = None
    clusters: int = 10  # k of k-means
    anomalies: list[str] = Field(default_factory=list)  # classes never trained on


@register
class Reconstruction(Task):
    """Images without labels: reconstruction error, ELBO, clusters of the codes, anomalies."""

    name = "reconstruction"
    Details = ReconstructionDetails
    headline = ("cluster_accuracy", "nmi", "reconstruction_bce", "elbo", "anomaly_auroc")
    verbs = ("predict", "generate")
    padded_inputs = False

    def adapt(self, bundle: DataBundle, config: Any) -> DataBundle:
        from dlab.data.reconstruction import reconstruction_bundle

        return reconstruction_bundle(bundle, config)

    def evaluate(self, run: Run, bundle: DataBundle, split: str) -> dict[str, Any]:
        from dlab.tasks.clustering import cluster_scores, encode_split, fit_clusters

        model = run.model.eval()
        train = encode_split(model, bundle.train)
        clusters = fit_clusters(run, train, bundle.meta)
        found = train if split == "train" else encode_split(model, bundle.loader(split))
        labels = bundle.extra["labels"][split].numpy()
        report: dict[str, Any] = {
            "samples": len(labels),
            "reconstruction_bce": float(found["bce"].mean()) / found["pixels"],
            "reconstruction_mse": float(found["mse"].mean()) / found["pixels"],
        }
        if "elbo" in found:
            report["elbo"] = float(found["elbo"].mean())
        assigned = clusters.assign(found["codes"])
        report.update(cluster_scores(labels, assigned, bundle.meta.classes))
        anomalies = [bundle.meta.classes.index(c) for c in bundle.meta.details.anomalies]
        if anomalies:
            report.update(anomaly_scores(found["bce"], np.isin(labels, anomalies)))
        return report

    def output_size(self, meta: DataMeta) -> int:
        return int(np.prod(meta.input_shape))

    def example_batch(self, meta: DataMeta, batch: int, generator: torch.Generator) -> Batch:
        x = torch.rand(batch, *meta.input_shape, generator=generator)
        return x, x

    def predict(self, run: Run, batch: torch.Tensor, top_k: int = 5) -> list[dict[str, Any]]:
        """Each image's cluster, its distance to the centre, and its anomaly score (the
        reconstruction error, beside the training images' 99th percentile)."""
        from dlab.tasks.clustering import load_clusters, pixel_errors

        clusters = load_clusters(run)
        model = run.model.eval()
        with torch.no_grad():
            codes = model.encode(batch)
            errors = pixel_errors(model(batch), batch)[0]
        assigned, distance = clusters.assign(codes.numpy(), distances=True)
        return [
            {
                "label": f"cluster {int(k)}",
                "cluster": int(k),
                "distance": round(float(d), 4),
                "anomaly_score": round(float(e), 4),
                "unusual": bool(e > clusters.error_p99),
            }
            for k, d, e in zip(assigned, distance, errors, strict=True)
        ]

    def draw(self, run: Run, batch: torch.Tensor, path: Path) -> Path:
        """The inputs (top row) above the model's reconstructions of them."""
        from dlab.report.images import save_grid

        with torch.no_grad():
            rebuilt = torch.sigmoid(run.model.eval()(batch))
        return save_grid(torch.cat([batch, rebuilt]), Path(path), columns=len(batch))

    def report_sections(self) -> list[Section]:
        from dlab.tasks.reconstruction_report import sections

        return sections()


def anomaly_scores(errors: torch.Tensor, anomalous: np.ndarray) -> dict[str, Any]:
    """How well the error ranks the anomalies first: AUROC and average precision
    (torchmetrics), with the errors of both groups binned for a histogram."""
    from torchmetrics.functional.classification import binary_auroc, binary_average_precision

    if anomalous.all() or not anomalous.any():
        return {}
    target = torch.from_numpy(anomalous).long()
    # torchmetrics reads scores outside [0, 1] as logits and squashes them; a monotone map to
    # [0, 1] keeps the ranking, which is all AUROC and AP read
    span = (errors.max() - errors.min()).clamp_min(1e-12)
    ranked = ((errors - errors.min()) / span).double()
    edges = np.quantile(errors.numpy(), np.linspace(0, 0.995, 41))
    return {
        "anomaly_auroc": float(binary_auroc(ranked, target)),
        "anomaly_ap": float(binary_average_precision(ranked, target)),
        "anomaly_share": float(anomalous.mean()),
        "anomaly_histogram": {
            "edges": edges.tolist(),
            "normal": np.histogram(errors.numpy()[~anomalous], edges)[0].tolist(),
            "anomalous": np.histogram(errors.numpy()[anomalous], edges)[0].tolist(),
        },
    }
