"""Learning without labels: the (x, x) bundle, clustering accuracy and DEC's formulas against
hand-made cases, anomaly scores, the VAE's KL term, and the command line (predict a cluster and
a reconstruction, generate samples, the report)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dlab.cli import main
from dlab.data import build
from dlab.errors import RecipeError
from dlab.models.autoencoders import VAE, ConvCoder, kl_divergence
from dlab.registry import DATASETS
from dlab.tasks.clustering import cluster_accuracy, cluster_scores, sharpen, soft_assign
from dlab.tasks.reconstruction import anomaly_scores


def digits_config(**fields):
    return DATASETS.get("digits").config(name="digits", task="reconstruction", **fields)


def test_an_autoencoder_trains_on_images_alone_and_the_labels_wait_aside():
    bundle = build(digits_config(anomalies=["3"]))
    x, target = next(bundle.train.epoch(0))
    assert torch.equal(x, target) and float(x.min()) >= 0 and float(x.max()) <= 1
    labels = bundle.extra["labels"]
    assert 3 not in labels["train"].tolist() and 3 not in labels["val"].tolist()
    assert 3 in labels["test"].tolist()  # the anomalies stay in the test split
    assert len(labels["train"]) == len(bundle.train.inputs) == bundle.meta.sizes["train"]
    assert bundle.meta.task == "reconstruction" and bundle.meta.details.clusters == 9
    assert bundle.meta.mean is None  # pixels in [0, 1]: the targets of a BCE loss
    normalised = build(DATASETS.get("digits").config(name="digits"))
    back = build(digits_config()).test.inputs
    assert torch.allclose(back, normalised.test.inputs * torch.tensor(normalised.meta.std)[:, None, None]
                          + torch.tensor(normalised.meta.mean)[:, None, None], atol=1e-5)  # fmt: skip


def test_an_unknown_anomaly_class_is_a_recipe_error():
    with pytest.raises(RecipeError, match=r"data.anomalies: 'x' is not a class \(0, 1, 2"):
        build(digits_config(anomalies=["x"]))


def test_clustering_accuracy_matches_clusters_to_classes_one_to_one():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    assigned = np.array([2, 2, 1, 0, 0, 1, 1, 1])  # cluster 2 = class 0, 0 = 1, 1 = 2
    accuracy, table, mapping = cluster_accuracy(labels, assigned)
    assert accuracy == pytest.approx(7 / 8) and mapping == {0: 1, 1: 2, 2: 0}
    assert table.sum() == 8 and table[1, 2] == 3
    # any relabelling of the clusters scores the same; a single cluster scores the largest class
    permuted = np.array([5, 3, 4])[assigned]
    assert cluster_accuracy(labels, permuted)[0] == pytest.approx(7 / 8)
    assert cluster_accuracy(labels, np.zeros(8, dtype=int))[0] == pytest.approx(3 / 8)
    scores = cluster_scores(labels, assigned, ["a", "b", "c"])
    assert scores["cluster_classes"] == {"0": "b", "1": "c", "2": "a"}
    from sklearn.metrics import adjusted_rand_score

    assert scores["ari"] == pytest.approx(adjusted_rand_score(labels, assigned))


def test_dec_soft_assignments_and_target_follow_the_paper_in_float64():
    codes = torch.tensor([[0.0, 0.0], [3.0, 1.0], [0.5, -0.5]], dtype=torch.float64)
    centres = torch.tensor([[0.0, 0.0], [2.0, 2.0]], dtype=torch.float64)
    q = soft_assign(codes, centres)
    distance2 = ((codes[:, None] - centres[None]) ** 2).sum(-1)
    kernel = 1 / (1 + distance2)  # Student's t with one degree of freedom
    assert torch.allclose(q, kernel / kernel.sum(1, keepdim=True))
    p = sharpen(q)
    frequency = q.sum(0)
    expected = q**2 / frequency
    assert torch.allclose(p, expected / expected.sum(1, keepdim=True))
    assert (p.max(1).values >= q.max(1).values).all()  # sharper


def test_the_vae_kl_term_is_torchs_and_the_penalty_is_its_mean_over_pixels():
    from torch.distributions import Normal
    from torch.distributions import kl_divergence as torch_kl

    mu, log_var = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 3, dtype=torch.float64)
    reference = torch_kl(Normal(mu, (0.5 * log_var).exp()), Normal(0.0, 1.0)).sum(-1)
    assert torch.allclose(kl_divergence(mu, log_var), reference)
    model = VAE(ConvCoder((1, 8, 8), [4], 2 * 3, 3), latent=3, beta=2.0).train()
    x = torch.rand(5, 1, 8, 8)
    model(x)
    mu, log_var = model.moments(x)
    assert torch.allclose(model.batch_penalty(x), 2.0 * kl_divergence(mu, log_var).mean() / 64)
    model.eval()
    mean = model.moments(x)[0]
    assert torch.equal(model(x), model.decode(mean))  # evaluation decodes the mean, no noise


def test_anomaly_scores_rank_raw_errors_not_squashed_ones():
    errors = torch.tensor([100.0, 120.0, 300.0, 310.0, 110.0])
    found = anomaly_scores(errors, np.array([False, False, True, True, False]))
    assert found["anomaly_auroc"] == 1.0 and found["anomaly_ap"] == 1.0
    swapped = anomaly_scores(errors, np.array([True, True, False, False, False]))
    assert swapped["anomaly_auroc"] == pytest.approx(1 / 6)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vae")
    recipe = folder / "vae.yaml"
    recipe.write_text(
        "name: vae\ndata: {name: digits, task: reconstruction, anomalies: ['0'], batch_size: 64}\n"
        "model: {name: vae, hidden: [64], latent: 4}\n"
        "train: {epochs: 20, optimizer: {name: adam, lr: 0.003}, loss: bce, metrics: []}\n"
    )
    assert main(["train", str(recipe), "--runs-dir", str(folder / "runs"), "-q"]) == 0
    return next((folder / "runs" / "vae").iterdir())


def test_a_vae_run_clusters_finds_anomalies_predicts_and_draws(vae_run, tmp_path, capsys):
    report = json.loads((vae_run / "eval" / "test.json").read_text())
    assert report["cluster_accuracy"] > 0.4  # k-means on pixels of digits: about 0.6 (nine here)
    assert report["anomaly_auroc"] > 0.6 and report["elbo"] < 0
    assert sum(map(sum, report["contingency"])) == report["samples"]
    image = np.zeros((8, 8), dtype=np.uint8)
    image[1:7, 2] = image[1:7, 5] = image[1, 2:6] = image[6, 2:6] = 255  # a zero
    Image.fromarray(image).save(tmp_path / "zero.png")
    capsys.readouterr()
    assert (
        main(
            ["predict", str(vae_run), str(tmp_path / "zero.png"), "--out", str(tmp_path / "r.png")]
        )
        == 0
    )
    out = "".join(capsys.readouterr().out.splitlines())  # the console wraps long lines
    answer = json.loads(out.split("zero.png: ", 1)[1])
    assert answer["label"].startswith("cluster ") and answer["anomaly_score"] > 0
    assert Image.open(tmp_path / "r.png").size == (
        2 * (8 + 4),
        2 * (2 * 8 + 6),
    )  # input above recon
    assert (
        main(["generate", str(vae_run), "-n", "6", "--out", str(tmp_path / "g.png"), "--seed", "1"])
        == 0
    )
    first = np.asarray(Image.open(tmp_path / "g.png"))
    main(["generate", str(vae_run), "-n", "6", "--out", str(tmp_path / "h.png"), "--seed", "1"])
    assert np.array_equal(first, np.asarray(Image.open(tmp_path / "h.png")))  # seeded
    html = (vae_run / "report.html").read_text()
    assert (
        "Clusters against classes" in html and "Anomaly scores" in html and "walk between" in html
    )


def test_generate_needs_out_and_a_plain_autoencoder_cannot_sample(vae_run, tmp_path, capsys):
    assert main(["generate", str(vae_run), "-n", "4"]) == 2
    assert "--out grid.png" in capsys.readouterr().err
