"""The airbench network's own parts: the whitening layer against an independent computation,
test-time augmentation against its views written out, the frozen and Dirac-initialised layers."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dlab.data.bundle import DataMeta
from dlab.errors import RecipeError
from dlab.models import build
from dlab.models.airbench import Airbench, AirbenchConfig, whitening_filters
from dlab.recipe import from_dict
from dlab.training.optim import build_optimizer

pytestmark = pytest.mark.unit


def smooth_images(n=64, seed=0):
    """Images whose neighbouring pixels and channels are strongly correlated (as photos are)."""
    generator = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 1, 17, 17, generator=generator)
    base = F.interpolate(base, size=(16, 16), mode="bilinear", align_corners=False)
    colour = torch.tensor([1.0, 0.8, 0.6]).view(1, 3, 1, 1)
    return base * colour + 0.1 * torch.randn(n, 3, 16, 16, generator=generator)


def test_the_whitening_filters_decorrelate_the_patches_they_were_set_from():
    images = smooth_images()
    filters = whitening_filters(images, kernel=2, eps=1e-6)
    assert filters.shape == (24, 3, 2, 2)
    torch.testing.assert_close(filters[12:], -filters[:12])  # the negatives follow
    # the covariance of the 12 outputs, from F.unfold (a path independent of the one under test)
    patches = F.unfold(images.double(), 2).transpose(1, 2).reshape(-1, 12)  # (C, kh, kw) order
    outputs = patches @ filters[:12].double().reshape(12, 12).T
    covariance = outputs.T @ outputs / len(outputs)
    torch.testing.assert_close(covariance, torch.eye(12, dtype=torch.float64), atol=2e-3, rtol=0)
    raw = patches.T @ patches / len(patches)
    assert raw[0, 4] > 0.2  # red and green of a pixel: the raw patches were far from white


def test_the_whitening_filters_come_largest_eigenvalue_first():
    images = smooth_images()
    filters = whitening_filters(images, kernel=2, eps=0.0).double().reshape(24, 12)[:12]
    patches = F.unfold(images.double(), 2).transpose(1, 2).reshape(-1, 12)
    covariance = patches.T @ patches / len(patches)
    # filter i = v_i / √λ_i, so (filter_i · C · filter_i) = 1 and |filter_i|² = 1/λ_i rises
    norms = (filters**2).sum(1)
    assert torch.all(norms[1:] >= norms[:-1])
    quadratic = torch.einsum("ij,jk,ik->i", filters, covariance, filters)
    torch.testing.assert_close(quadratic, torch.ones(12, dtype=torch.float64), atol=1e-6, rtol=0)


def model(**fields):
    torch.manual_seed(0)
    return Airbench(3, 10, AirbenchConfig(name="airbench", widths=[16, 32, 32], **fields))


def test_seeing_the_training_data_sets_the_frozen_whitening_layer():
    net, images = model(whiten_images=40), smooth_images(64)
    net.see_training_data(images, torch.zeros(64))
    torch.testing.assert_close(net.whiten.weight, whitening_filters(images[:40], 2))
    assert not torch.allclose(net.whiten.weight, whitening_filters(images, 2))  # only the 40
    config = from_dict({"data": "cifar10", "model": "airbench"}).train.optimizer
    learned = {
        id(p) for group in build_optimizer(config, net).param_groups for p in group["params"]
    }
    assert id(net.whiten.weight) not in learned and id(net.whiten.bias) in learned
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(id(n.weight) not in learned and id(n.bias) in learned for n in norms)
    assert all(n.momentum == 0.4 and n.eps == 1e-12 for n in norms)
    trained = model(train_norm_weights=True)
    assert all(
        m.weight.requires_grad for m in trained.modules() if isinstance(m, torch.nn.BatchNorm2d)
    )


def test_each_convolution_starts_as_the_identity_on_its_input_channels():
    conv = model().groups[1].conv1  # 16 -> 32 channels
    x = torch.randn(2, 16, 8, 8)
    torch.testing.assert_close(conv(x)[:, :16], x)
    assert conv(x)[:, 16:].abs().sum() > 0  # the other filters keep their random start


def test_flip_tta_averages_the_image_and_its_mirror():
    net = model(tta="flip").eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(net(x), 0.5 * (net.logits(x) + net.logits(x.flip(-1))))
        torch.testing.assert_close(net(x), net(x.flip(-1)))  # mirror-invariant
        assert not torch.allclose(net.logits(x), net.logits(x.flip(-1)))


def test_flip_translate_tta_weighs_the_six_views_as_airbench_does():
    net = model(tta="flip_translate").eval()
    x = torch.randn(3, 3, 32, 32)
    padded = F.pad(x, (1, 1, 1, 1), mode="reflect")
    views = [x, padded[..., :32, :32], padded[..., 2:, 2:]]
    with torch.no_grad():
        mirrored = [0.5 * (net.logits(v) + net.logits(v.flip(-1))) for v in views]
        expected = 0.5 * mirrored[0] + 0.5 * (mirrored[1] + mirrored[2]) / 2
        torch.testing.assert_close(net(x), expected)
        net.train()  # training never augments at test time
        torch.testing.assert_close(net(x), net.logits(x))


def test_the_logits_are_scaled_and_the_head_has_no_bias():
    net = model(logit_scale=0.5).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        features = torch.amax(net.groups(F.gelu(net.whiten(x))), dim=(2, 3))
        torch.testing.assert_close(net.logits(x), 0.5 * features @ net.head.weight.T)
    assert net.head.bias is None


def test_images_too_small_for_the_groups_are_refused_by_name():
    meta = DataMeta(dataset="tiny", input_shape=(3, 8, 8), num_classes=10)
    with pytest.raises(RecipeError, match=r"airbench needs .* at least 9 pixels .* tiny"):
        build(AirbenchConfig(name="airbench"), meta)
