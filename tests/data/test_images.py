"""Image data sets: Fashion-MNIST, CIFAR-10 (exact pickle format and the real archive), digits,
MNIST-1D, a user's image folder, and batched augmentation."""

from __future__ import annotations

import hashlib
import pickle
import tarfile

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dlab.data import build
from dlab.data.augment import cutout, random_crop, random_flip
from dlab.data.cifar import FOLDER, read_cifar10
from dlab.errors import DataError
from dlab.recipe import from_dict


def data_config(**fields):
    return from_dict({"data": fields, "model": {"name": "mlp"}}).data


@pytest.mark.shared_data
def test_fashion_mnist(real_data_dir):
    bundle = build(data_config(name="fashion_mnist", val_size=0), seed=0)
    assert bundle.meta.sizes == {"train": 60_000, "test": 10_000}
    assert np.bincount(bundle.train.targets.numpy()).tolist() == [6000] * 10
    assert np.bincount(bundle.test.targets.numpy()).tolist() == [1000] * 10
    assert bundle.meta.classes[0] == "T-shirt/top" and bundle.meta.classes[9] == "Ankle boot"


def write_cifar_folder(root, per_batch=6):
    """Batches in exactly the published layout: protocol-2 pickles of dicts with bytes keys."""
    folder = root / FOLDER
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    digests = {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        content = {
            b"batch_label": name.encode(),
            b"labels": [int(v) for v in rng.integers(0, 10, per_batch)],
            b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
            b"filenames": [f"img_{i}.png".encode() for i in range(per_batch)],
        }
        (folder / name).write_bytes(pickle.dumps(content, protocol=2))
    labels = [
        b"airplane",
        b"automobile",
        b"bird",
        b"cat",
        b"deer",
        b"dog",
        b"frog",
        b"horse",
        b"ship",
        b"truck",
    ]
    (folder / "batches.meta").write_bytes(
        pickle.dumps({b"label_names": labels, b"num_vis": 3072}, protocol=2)
    )
    for name in [*names, "batches.meta"]:
        digests[name] = hashlib.md5((folder / name).read_bytes()).hexdigest()
    return folder, digests


def test_cifar_reader_on_the_exact_format_folder_and_archive(tmp_path):
    folder, digests = write_cifar_folder(tmp_path / "unpacked")
    splits = read_cifar10(tmp_path / "unpacked", checksums=digests)
    assert splits.train[0].shape == (30, 3, 32, 32) and splits.test[0].shape == (6, 3, 32, 32)
    raw = pickle.loads((folder / "data_batch_1").read_bytes(), encoding="bytes")[b"data"][0]
    assert np.array_equal(splits.train[0][0, 0].reshape(-1), raw[:1024])  # red plane first
    assert splits.classes[3] == "cat"
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(folder, arcname=FOLDER)
    from_archive = read_cifar10(tmp_path, checksums=digests)
    assert np.array_equal(from_archive.train[0], splits.train[0])
    with pytest.raises(DataError, match="data_batch_1 has md5 .*, published c99cafc1"):
        read_cifar10(tmp_path / "unpacked")  # these are not the published bytes


def test_cifar_refuses_code_in_a_pickle(tmp_path):
    folder, digests = write_cifar_folder(tmp_path)

    class Exploit:
        def __reduce__(self):
            return (print, ("pwned",))

    (folder / "test_batch").write_bytes(pickle.dumps({b"data": Exploit()}, protocol=2))
    digests["test_batch"] = hashlib.md5((folder / "test_batch").read_bytes()).hexdigest()
    with pytest.raises(DataError, match=r"refuses to load (__builtin__|builtins)\.print"):
        read_cifar10(tmp_path, checksums=digests)


def test_cifar_missing_and_damaged(tmp_path):
    with pytest.raises(DataError, match="dlab data fetch cifar10"):
        read_cifar10(tmp_path)
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(b"\x1f\x8b not really")
    with pytest.raises(DataError, match="not a readable tar archive"):
        read_cifar10(tmp_path)


@pytest.mark.shared_data
@pytest.mark.slow
def test_real_cifar10_archive(shared_data):
    splits = read_cifar10(shared_data / "cifar10")  # the .tar.xz; every batch md5 checked
    assert splits.train[0].shape == (50_000, 3, 32, 32) and splits.test[0].shape == (
        10_000,
        3,
        32,
        32,
    )
    assert np.bincount(splits.train[1]).tolist() == [5000] * 10
    first = [splits.classes[i] for i in splits.test[1][:10]]
    assert first == [
        "cat",
        "ship",
        "ship",
        "airplane",
        "frog",
        "frog",
        "automobile",
        "frog",
        "cat",
        "automobile",
    ]
    mean = splits.train[0].reshape(50_000, 3, -1).mean(axis=(0, 2)) / 255
    np.testing.assert_allclose(mean, [0.4914, 0.4822, 0.4465], atol=1e-4)


def test_digits():
    bundle = build(data_config(name="digits"), seed=0)
    assert bundle.meta.sizes == {"train": 1294, "val": 144, "test": 359}
    assert bundle.meta.input_shape == (1, 8, 8) and bundle.meta.num_classes == 10
    assert sum(bundle.meta.sizes.values()) == 1797


@pytest.mark.shared_data
def test_mnist1d_pickle_equals_the_package(real_data_dir):
    official = build(data_config(name="mnist1d", source="pickle", normalize=False), seed=0)
    rebuilt = build(data_config(name="mnist1d", source="package", normalize=False), seed=0)
    assert official.meta.sizes == {"train": 3600, "val": 400, "test": 1000}
    assert official.meta.input_shape == (40,) and official.meta.input_kind == "vector"
    np.testing.assert_allclose(official.test.inputs.numpy(), rebuilt.test.inputs.numpy(), atol=1e-6)
    assert torch.equal(official.test.targets, rebuilt.test.targets)


def image_tree(root, per_class=6, size=(12, 10)):
    rng = np.random.default_rng(0)
    for index, name in enumerate(["cat", "dog", "eel"]):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = np.full((*size, 3), 60 * index, dtype=np.uint8) + rng.integers(
                0, 20, (*size, 3), dtype=np.uint8
            )
            Image.fromarray(pixels).save(root / name / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


def test_image_folder_memory_and_worker_paths_agree(tmp_path):
    root = image_tree(tmp_path / "pets")
    fields = {
        "name": "image_folder",
        "path": str(root),
        "image_size": [8, 8],
        "val_size": 3,
        "test_size": 0.25,
        "batch_size": 4,
    }
    memory = build(data_config(**fields), seed=0)
    workers = build(data_config(**fields, loader="workers", num_workers=0), seed=0)
    assert memory.meta.classes == ["cat", "dog", "eel"]
    assert (
        memory.meta.sizes == workers.meta.sizes == {"train": 11, "val": 3, "test": 4}
    )  # 18 × 0.25 rounds to 4
    assert memory.meta.input_shape == (3, 8, 8)
    a = torch.cat([x for x, _ in memory.train.epoch(2)])
    b = torch.cat([x for x, _ in workers.train.epoch(2)])
    # same order and same pixels; statistics differ slightly (workers estimate them from a sample)
    assert torch.equal(
        torch.cat([y for _, y in memory.train.epoch(2)]),
        torch.cat([y for _, y in workers.train.epoch(2)]),
    )
    assert a.shape == b.shape

    def pixels(x, meta):  # undo each loader's own normalisation
        mean, std = (torch.tensor(v).reshape(1, -1, 1, 1) for v in (meta.mean, meta.std))
        return x * std + mean

    torch.testing.assert_close(pixels(a, memory.meta), pixels(b, workers.meta), atol=1e-5, rtol=0)


def test_image_folder_errors(tmp_path):
    (tmp_path / "one" / "only").mkdir(parents=True)
    with pytest.raises(DataError, match="needs at least two class sub-folders"):
        build(data_config(name="image_folder", path=str(tmp_path / "one")))
    root = image_tree(tmp_path / "pets")
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="holds no PNG or JPEG files"):
        build(data_config(name="image_folder", path=str(root)))
    (root / "empty" / "broken.png").write_text("not an image")
    with pytest.raises(DataError, match="broken.png: not a readable image"):
        build(data_config(name="image_folder", path=str(root)))


def test_random_crop_shifts_content_within_the_padding():
    torch.manual_seed(0)
    images = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).view(2, 1, 6, 6) + 1
    cropped = random_crop(images, 2)
    assert cropped.shape == images.shape
    for b in range(2):  # every kept pixel is a pixel of the same image, or padding (0)
        kept = cropped[b][cropped[b] > 0]
        assert set(kept.tolist()) <= set(images[b].flatten().tolist())


def test_a_reflected_crop_fills_the_border_with_the_image_mirrored():
    torch.manual_seed(0)
    images = torch.arange(64 * 6 * 6, dtype=torch.float32).view(64, 1, 6, 6) + 1
    cropped = random_crop(images, 2, fill="reflect")
    assert bool((cropped > 0).all())  # no zeros: the padding holds pixels of the image
    for b in range(64):
        assert set(cropped[b].flatten().tolist()) <= set(images[b].flatten().tolist())
    shifted = (cropped != images).flatten(1).any(1)
    assert 40 < int(shifted.sum()) < 64  # 24 of 25 offsets move the image
    reference = F.pad(images[:1], (2, 2, 2, 2), mode="reflect")[0, 0]
    assert reference[0, 0] == images[0, 0, 2, 2]  # what "mirrored" means: no edge repeated


def test_flip_and_cutout():
    torch.manual_seed(1)
    images = torch.randn(64, 3, 8, 8)
    flipped = random_flip(images)
    same = (flipped == images).flatten(1).all(1)
    mirrored = (flipped == images.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and 10 < int(mirrored.sum()) < 54
    cut = cutout(torch.ones(16, 1, 10, 10), 4)
    zeros = (cut == 0).flatten(1).sum(1)
    assert int(zeros.max()) == 16 and int(zeros.min()) >= 4  # a 4×4 square, clipped at the border


def test_augmentation_is_applied_to_training_batches_only():
    bundle = build(
        data_config(name="mnist_sample", augment={"crop_padding": 2, "cutout": 6}), seed=0
    )
    x, _ = next(bundle.train.epoch(0))
    raw = bundle.train.inputs[bundle.train.order(0)[:64]]
    assert not torch.equal(x, raw)
    assert torch.equal(next(bundle.test.epoch(0))[0], bundle.test.inputs[:512])
    with pytest.raises(Exception, match="augment"):
        build(data_config(name="sst2", augment={"flip": True}))
