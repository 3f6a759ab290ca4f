"""Recommenders against their formulas in float64, their batch penalty, side features, and the
trainer applying that penalty."""

from __future__ import annotations

import math

import pytest
import torch

from dlab.models import build
from dlab.models.recommenders import EXAMPLE_META
from dlab.registry import MODELS


def make(name: str, **fields):
    torch.manual_seed(0)
    model = build(MODELS.get(name).config(name=name, **fields), EXAMPLE_META)
    for p in model.parameters():  # away from the near-zero start, so every term shows
        torch.nn.init.normal_(p, std=0.5)
    if hasattr(model, "see_training_data"):
        seen = torch.tensor([[u, (3 * u + k) % 20] for u in range(12) for k in range(4)])
        model.see_training_data(seen, (seen.sum(1) % 5 + 1).float())
    return model.double()


PAIRS = torch.tensor([[0, 3], [5, 19], [11, 0], [5, 3]])


def test_biased_mf_is_mu_plus_biases_plus_the_dot_product():
    m = make("mf", dim=4)
    u, i = PAIRS[:, 0], PAIRS[:, 1]
    expected = (
        m.mu
        + m.user_bias.weight[u, 0]
        + m.item_bias.weight[i, 0]
        + (m.user_factors.weight[u] * m.item_factors.weight[i]).sum(1)
    )
    torch.testing.assert_close(m(PAIRS), expected, rtol=0, atol=1e-12)
    # any leading shape: (users, candidates, 2) -> (users, candidates)
    torch.testing.assert_close(m(PAIRS.view(2, 2, 2)), expected.view(2, 2), rtol=0, atol=1e-12)


def test_gmf_mlp_and_neumf_follow_he_et_al():
    u, i = PAIRS[:, 0], PAIRS[:, 1]
    gmf = make("gmf", dim=4)
    product = gmf.gmf_users.weight[u] * gmf.gmf_items.weight[i]
    base = gmf.mu + gmf.user_bias.weight[u, 0] + gmf.item_bias.weight[i, 0]
    torch.testing.assert_close(gmf(PAIRS), base + product @ gmf.out.weight[0], rtol=0, atol=1e-12)

    neumf = make("neumf", dim=4, hidden=[6])
    layer = neumf.tower[0]
    joined = torch.cat([neumf.mlp_users.weight[u], neumf.mlp_items.weight[i]], 1)
    hidden = torch.relu(joined @ layer.weight.T + layer.bias)
    parts = torch.cat([neumf.gmf_users.weight[u] * neumf.gmf_items.weight[i], hidden], 1)
    base = neumf.mu + neumf.user_bias.weight[u, 0] + neumf.item_bias.weight[i, 0]
    torch.testing.assert_close(neumf(PAIRS), base + parts @ neumf.out.weight[0], rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["mf", "gmf", "ncf_mlp", "neumf", "two_tower", "autorec"])
def test_gradients_match_finite_differences(name):
    model = make(name, **({"hidden": 4} if name == "autorec" else {"dim": 3}))
    dense = [p for p in model.parameters() if p.requires_grad]

    # central differences on five entries of every parameter tensor, in float64
    out = model(PAIRS).sum()
    grads = torch.autograd.grad(out, dense)
    eps = 1e-6
    for p, g in zip(dense, grads, strict=True):
        flat = p.data.view(-1)
        for k in torch.randperm(flat.numel())[:5].tolist():
            old = float(flat[k])
            with torch.no_grad():
                flat[k] = old + eps
                up = float(model(PAIRS).sum())
                flat[k] = old - eps
                down = float(model(PAIRS).sum())
                flat[k] = old
            assert (up - down) / (2 * eps) == pytest.approx(float(g.view(-1)[k]), abs=1e-6)


def test_autorec_reconstructs_item_columns_leaving_the_asked_rating_out_in_training():
    model = make("autorec", hidden=5).eval()
    pairs = torch.tensor([[0, 0], [0, 3], [1, 3], [4, 7], [4, 9]])
    model.see_training_data(pairs, torch.tensor([5.0, 0.0, 2.0, 4.0, 1.0]))  # 0: a negative
    column = torch.zeros(12, dtype=torch.float64)
    column[1] = 2.0  # item 3 was rated only by user 1 (user 0's pair was a negative)
    assert torch.equal(model.columns[3], column)
    assert model.columns.sum() == 5 + 2 + 4 + 1

    def by_hand(u, i, columns):
        h = torch.sigmoid(model.encoder.weight @ columns[i] + model.encoder.bias)
        return model.decoder.weight[u] @ h + model.decoder.bias[u]

    asked = torch.tensor([[1, 3], [6, 3]])
    torch.testing.assert_close(
        model(asked), torch.stack([by_hand(1, 3, model.columns), by_hand(6, 3, model.columns)])
    )
    model.train()  # user 1's own rating of item 3 is hidden from the encoder; user 6 had none
    hidden = model.columns.clone()
    hidden[3, 1] = 0
    torch.testing.assert_close(
        model(asked), torch.stack([by_hand(1, 3, hidden), by_hand(6, 3, model.columns)])
    )


def test_the_batch_penalty_is_l2_over_the_rows_each_pair_reads():
    m = make("mf", dim=4, l2=0.3, bias_l2=0.05)
    u, i = PAIRS[:, 0], PAIRS[:, 1]
    rows = m.user_factors.weight[u].pow(2).sum(1) + m.item_factors.weight[i].pow(2).sum(1)
    biases = m.user_bias.weight[u, 0] ** 2 + m.item_bias.weight[i, 0] ** 2
    expected = 0.3 * rows.mean() + 0.05 * biases.mean()
    torch.testing.assert_close(m.batch_penalty(PAIRS), expected, rtol=0, atol=1e-12)
    assert make("mf", dim=4).batch_penalty(PAIRS) is None
    # an item no pair reads gets no gradient from it: not the whole table, like weight decay
    m.zero_grad()
    m.batch_penalty(PAIRS).backward()
    untouched = sorted(set(range(20)) - set(i.tolist()))
    assert m.item_factors.weight.grad[untouched].abs().sum() == 0


def test_two_tower_reads_side_features_rebuilt_from_the_metadata():
    model = make("two_tower", dim=3)
    before = model(PAIRS)
    model.user_codes[PAIRS[0, 0], 0] = 1 - model.user_codes[PAIRS[0, 0], 0]  # another age
    after = model(PAIRS)
    assert after[0] != before[0] and torch.equal(after[1:3], before[1:3])
    genres_before = model(PAIRS)
    model.item_genres[PAIRS[1, 1]] = 1 - model.item_genres[PAIRS[1, 1]]
    assert model(PAIRS)[1] != genres_before[1]
    # the side tables are not weights: they come from meta.json, not the weights file
    assert "user_codes" not in model.state_dict() and "item_genres" not in model.state_dict()


def test_rating_models_start_at_the_training_mean_and_ranking_models_at_zero():
    from dataclasses import replace

    rating = build(MODELS.get("mf").config(name="mf"), EXAMPLE_META)
    assert rating.mu.item() == pytest.approx(3.5)
    implicit = EXAMPLE_META.details.model_copy(update={"explicit": False})
    ranking = build(
        MODELS.get("mf").config(name="mf"), replace(EXAMPLE_META, task="ranking", details=implicit)
    )
    assert ranking.mu.item() == 0.0
    assert math.isclose(float(rating(PAIRS).detach().mean()), 3.5, abs_tol=1e-3)


def test_a_recommender_refuses_data_that_is_not_pairs():
    from dlab.errors import RecipeError
    from dlab.models import MNIST_META

    with pytest.raises(RecipeError, match="mf serves rating or ranking of pairs; mnist is"):
        build(MODELS.get("mf").config(name="mf"), MNIST_META)
