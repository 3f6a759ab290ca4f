"""Checkpoints: a pickle-free exact round trip, atomic placement, pruning, and damaged stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from dlab.errors import RunError
from dlab.training.checkpoint import CheckpointStore, load_weights, save_weights
from dlab.training.state import flatten, rng_state, set_rng_state, unflatten


def test_flatten_round_trips_optimizer_state_exactly():
    model = nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), betas=(0.8, 0.9))
    model(torch.randn(4, 3)).sum().backward()
    optimizer.step()
    state = {
        "optimizer": optimizer.state_dict(),
        "tuple": (1, 2.5, "x"),
        "none": None,
        "nested": [{"a": torch.ones(2)}],
    }
    tensors: dict[str, torch.Tensor] = {}
    skeleton = flatten(state, tensors)
    json.dumps(skeleton)  # the skeleton is plain JSON
    back = unflatten(json.loads(json.dumps(skeleton)), tensors)
    assert back["tuple"] == (1, 2.5, "x")
    assert set(back["optimizer"]["state"]) == {0, 1}  # integer keys survive
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.9)
    for key in ("exp_avg", "exp_avg_sq", "step"):
        assert torch.equal(
            back["optimizer"]["state"][0][key], optimizer.state_dict()["state"][0][key]
        )


def test_rng_state_round_trip():
    state = rng_state()
    tensors: dict[str, torch.Tensor] = {}
    restored = unflatten(json.loads(json.dumps(flatten(state, tensors))), tensors)
    expected = (torch.rand(3), np.random.rand(3))
    set_rng_state(restored)
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])


def test_unsupported_objects_are_a_bug_not_silently_dropped():
    with pytest.raises(TypeError, match="cannot checkpoint a object"):
        flatten({"x": object()}, {})


def state(step):
    return {"trainer": {"step": step}, "weights_seen": torch.arange(step)}


def test_store_keeps_the_newest_and_points_at_the_latest(tmp_path):
    store = CheckpointStore(tmp_path, keep=2)
    model = nn.Linear(2, 2)
    for step in (5, 10, 15):
        store.save(model, state(step), recipe_yaml="name: x\n")
    names = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert names == ["ckpt-000002-step10", "ckpt-000003-step15"]
    latest = store.latest()
    assert latest.name == "ckpt-000003-step15"
    assert (latest / "recipe.yaml").read_text() == "name: x\n"
    loaded = CheckpointStore.load(latest, nn.Linear(2, 2))
    assert torch.equal(loaded["weights_seen"], torch.arange(15))


def test_a_half_written_checkpoint_is_ignored_and_cleaned(tmp_path):
    store = CheckpointStore(tmp_path)
    model = nn.Linear(2, 2)
    store.save(model, state(5))
    torn = tmp_path / ".ckpt-000002-step10.tmp-4242"  # a process killed mid-write leaves this
    torn.mkdir()
    (torn / "model.safetensors").write_bytes(b"partial")
    assert store.latest().name == "ckpt-000001-step5"
    (tmp_path / "latest").unlink()  # even without the pointer, complete folders are found
    assert store.latest().name == "ckpt-000001-step5"
    store.save(model, state(10))
    assert not torn.exists()
    assert store.latest().name == "ckpt-000002-step10"


def test_damaged_checkpoints_are_run_errors(tmp_path):
    store = CheckpointStore(tmp_path)
    folder = store.save(nn.Linear(2, 2), state(1))
    with pytest.raises(RunError, match="weights do not fit the model"):
        CheckpointStore.load(folder, nn.Linear(3, 2))
    (folder / "state.json").write_text("{not json")
    with pytest.raises(RunError, match="unreadable checkpoint"):
        CheckpointStore.load(folder, nn.Linear(2, 2))


def test_tied_weights_are_saved_once_and_reloaded(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(5, 3)
            self.out = nn.Linear(3, 5, bias=False)
            self.out.weight = self.embed.weight

    model = Tied()
    save_weights(model, tmp_path / "w.safetensors")
    other = Tied()
    load_weights(other, tmp_path / "w.safetensors")
    assert torch.equal(other.out.weight, model.embed.weight)
    assert other.out.weight.data_ptr() == other.embed.weight.data_ptr()


def test_saving_weights_that_fails_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    from torch import nn

    from dlab.training import checkpoint

    model = nn.Linear(3, 2)
    path = tmp_path / "model.safetensors"
    checkpoint.save_weights(model, path)
    before = path.read_bytes()

    def full_disk(model, tmp, metadata):  # half a file written, then the disk is full
        Path(tmp).write_bytes(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "write_model", full_disk)
    with pytest.raises(OSError, match="No space left"):
        checkpoint.save_weights(nn.Linear(3, 2), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.safetensors"]


def test_a_full_disk_stops_training_in_one_line_with_the_last_checkpoint_intact(
    tmp_path, monkeypatch
):
    import errno

    import dlab
    from dlab.errors import DiskFull
    from dlab.training import checkpoint

    real, calls = checkpoint.write_model, []

    def fills_up(model, path, metadata):
        calls.append(path)
        if len(calls) >= 3:  # the third checkpoint meets a full disk
            Path(path).write_bytes(b"half")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(model, path, metadata)

    monkeypatch.setattr(checkpoint, "write_model", fills_up)
    recipe = {
        "name": "full",
        "data": {"name": "mnist_sample", "limit": 200, "batch_size": 50},
        "model": {"name": "mlp", "hidden": [8]},
        "train": {"epochs": 2, "checkpoint_every": 2},
    }
    with pytest.raises(DiskFull) as caught:
        dlab.train(recipe, runs_dir=tmp_path, progress=False)
    message = str(caught.value)
    assert "\n" not in message and "no space left on the disk" in message
    assert "the last good checkpoint is ckpt-000002-step4" in message and "--resume" in message
    run = next((tmp_path / "full").iterdir())
    store = checkpoint.CheckpointStore(run / "checkpoints")
    assert store.latest().name == "ckpt-000002-step4"
    assert not list((run / "checkpoints").glob(".ckpt-*"))  # nothing half-written stays
    assert dlab.load(run).dir.meta["status"] == "interrupted"
    monkeypatch.setattr(checkpoint, "write_model", real)  # space is freed: resume finishes
    resumed = dlab.train(None, resume=run, progress=False)
    assert resumed.dir.meta["status"] == "completed" and resumed.dir.meta["steps"] == 8


def test_a_stale_pointer_falls_back_to_the_newest_complete_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path, keep=3)
    for step in (5, 10, 15):
        store.save(nn.Linear(2, 2), state(step))
    (tmp_path / "latest").write_text("ckpt-000009-step99\n")  # names a folder that is gone
    assert store.latest().name == "ckpt-000003-step15"


def test_the_pointer_names_a_checkpoint_only_once_its_folder_is_in_place(tmp_path, monkeypatch):
    """A crash between the two steps must leave `latest` naming a complete checkpoint."""
    from dlab.training import checkpoint

    store = CheckpointStore(tmp_path)
    store.save(nn.Linear(2, 2), state(5))
    written = checkpoint.atomic_write_text
    pointed_at = []

    def check_then_write(path, text):
        pointed_at.append((tmp_path / text.strip() / "state.json").is_file())
        written(path, text)

    monkeypatch.setattr(checkpoint, "atomic_write_text", check_then_write)
    store.save(nn.Linear(2, 2), state(10))
    assert pointed_at == [True]

    def crash(*args):  # the rename fails: the new checkpoint never appears
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(checkpoint.os, "rename", crash)
    with pytest.raises(OSError):
        store.save(nn.Linear(2, 2), state(15))
    assert (tmp_path / "latest").read_text().strip() == "ckpt-000002-step10"


def test_weights_with_keys_the_model_lacks_are_refused(tmp_path):
    class Wider(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(2, 2)
            self.extra = nn.Linear(2, 2)

    class Narrower(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(2, 2)

    save_weights(Wider(), tmp_path / "w.safetensors")
    with pytest.raises(RunError, match=r"unexpected \['extra.bias', 'extra.weight'\]"):
        load_weights(Narrower(), tmp_path / "w.safetensors")
    with pytest.raises(RunError, match=r"missing \['extra.bias', 'extra.weight'\]"):
        save_weights(Narrower(), tmp_path / "n.safetensors")
        load_weights(Wider(), tmp_path / "n.safetensors")


class Adapted(nn.Module):
    """A frozen base with a small trainable part, as a LoRA model is: only that part is saved."""

    saves_trainable_only = True

    def __init__(self, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.base = nn.Linear(4, 4).requires_grad_(False)
        self.adapter = nn.Linear(4, 2)


def test_a_model_that_saves_only_its_trainable_part(tmp_path):
    from safetensors import safe_open

    trained = Adapted(seed=0)
    save_weights(trained, tmp_path / "w.safetensors")
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        assert sorted(f.keys()) == ["adapter.bias", "adapter.weight"]  # the frozen base is not
        assert f.metadata() == {"format": "dlab-weights-1", "subset": "trainable"}
    fresh = Adapted(seed=1)  # another adapter on the same (re-created) base
    fresh.base.load_state_dict(trained.base.state_dict())
    load_weights(fresh, tmp_path / "w.safetensors")
    for key, value in trained.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key
    save_weights(nn.Linear(4, 2), tmp_path / "other.safetensors")  # keys of another model
    with pytest.raises(RunError, match=r"missing \['adapter.bias', 'adapter.weight'\]"):
        load_weights(Adapted(), tmp_path / "other.safetensors")


def test_weights_files_say_what_they_are(tmp_path):
    from safetensors import safe_open

    save_weights(nn.Linear(2, 2), tmp_path / "w.safetensors")
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "dlab-weights-1"}
    folder = CheckpointStore(tmp_path / "c").save(nn.Linear(2, 2), state(3))
    for name in ("model.safetensors", "state.safetensors"):
        with safe_open(str(folder / name), "pt") as f:
            assert f.metadata()["format"] == "dlab-checkpoint-1"


def test_the_pointer_is_followed_when_it_names_a_complete_checkpoint(tmp_path):
    """`latest` is the authority: pointed back at an older complete checkpoint, it is used."""
    store = CheckpointStore(tmp_path, keep=3)
    for step in (5, 10, 15):
        store.save(nn.Linear(2, 2), state(step))
    (tmp_path / "latest").write_text("ckpt-000002-step10\n")
    assert store.latest() == tmp_path / "ckpt-000002-step10"


def test_a_checkpoint_of_another_format_is_refused_by_name(tmp_path):
    folder = CheckpointStore(tmp_path).save(nn.Linear(2, 2), state(1))
    (folder / "state.json").write_text(json.dumps({"format": "other-9", "state": {}}))
    with pytest.raises(RunError) as info:
        CheckpointStore.load_state(folder)
    assert str(info.value) == f"{folder}: not a dlab-checkpoint-1 checkpoint"


def test_an_empty_store_has_no_latest_and_a_missing_weights_file_is_named(tmp_path):
    assert CheckpointStore(tmp_path / "none").latest() is None
    (tmp_path / "empty").mkdir()
    assert CheckpointStore(tmp_path / "empty").latest() is None
    with pytest.raises(RunError) as info:
        load_weights(nn.Linear(2, 2), tmp_path / "gone.safetensors")
    assert str(info.value) == f"{tmp_path / 'gone.safetensors'}: weights file not found"


def test_a_folder_with_a_checkpoint_name_but_no_state_is_not_a_checkpoint(tmp_path):
    store = CheckpointStore(tmp_path / "deep" / "er" / "checkpoints")  # parents made as needed
    store.save(nn.Linear(2, 2), state(5))
    copied_in_part = store.folder / "ckpt-000009-step99"  # e.g. a copy cut short
    copied_in_part.mkdir()
    (copied_in_part / "model.safetensors").write_bytes(b"partial")
    (store.folder / "latest").unlink()
    assert store.latest().name == "ckpt-000001-step5"
    assert store.save(nn.Linear(2, 2), state(10)).name == "ckpt-000002-step10"


def test_a_full_disk_before_the_first_checkpoint_says_there_is_none(tmp_path, monkeypatch):
    import errno

    from dlab.errors import DiskFull
    from dlab.training import checkpoint

    def full(model, path, metadata):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "write_model", full)
    with pytest.raises(DiskFull) as info:
        CheckpointStore(tmp_path).save(nn.Linear(2, 2), state(5))
    assert str(info.value) == (
        f"no space left on the disk of {tmp_path} while writing ckpt-000001-step5; "
        "no checkpoint yet"
    )
    assert not list(tmp_path.iterdir())  # the half-written folder is gone


def test_a_gathered_state_dict_is_saved_as_it_is_and_loads_into_the_model(tmp_path):
    """FSDP gathers the full weights into a plain dict on rank 0; that dict is what is saved."""
    from safetensors import safe_open

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))
    save_weights({k: v.clone() for k, v in model.state_dict().items()}, tmp_path / "w.safetensors")
    with safe_open(str(tmp_path / "w.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "dlab-weights-1"}
    torch.manual_seed(1)
    fresh = load_weights(
        nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2)), tmp_path / "w.safetensors"
    )
    for key, value in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_weights_that_do_not_fit_say_how_in_one_line(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(nn.Linear(2, 2), path)
    with pytest.raises(RunError) as info:
        load_weights(nn.Linear(3, 2), path)
    assert str(info.value) == (
        f"{path}: weights do not fit the model (size mismatch for weight: copying a param with "
        "shape torch.Size([2, 2]) from checkpoint, the shape in current model is "
        "torch.Size([2, 3]).)"
    )
    many = nn.Sequential(*[nn.Linear(2, 2) for _ in range(3)])  # six keys the file lacks
    with pytest.raises(RunError) as info:
        load_weights(many, path)
    assert str(info.value) == (
        f"{path}: weights do not fit the model (missing ['0.bias', '0.weight', '1.bias'], "
        "unexpected ['bias', 'weight'])"
    )


def test_a_mismatch_names_two_of_the_shapes_and_three_of_the_keys(tmp_path):
    """torch lists every size mismatch on a line of its own: the message keeps the first two,
    on one line; of many missing or unexpected keys, the first three (sorted) of each."""
    path = tmp_path / "w.safetensors"
    save_weights(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), path)
    with pytest.raises(RunError) as info:
        load_weights(nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3)), path)  # four mismatches
    shape = (
        "copying a param with shape torch.Size([2{}]) from checkpoint, "
        "the shape in current model is torch.Size([3{}])."
    )
    assert str(info.value) == (
        f"{path}: weights do not fit the model (size mismatch for 0.weight: "
        f"{shape.format(', 2', ', 3')} size mismatch for 0.bias: {shape.format('', '')})"
    )
    save_weights(nn.Sequential(*[nn.Linear(2, 2) for _ in range(3)]), path)  # six keys
    with pytest.raises(RunError) as info:
        load_weights(nn.Linear(2, 2), path)
    assert str(info.value) == (
        f"{path}: weights do not fit the model (missing ['bias', 'weight'], "
        "unexpected ['0.bias', '0.weight', '1.bias'])"
    )


def test_a_refused_adapter_file_leaves_the_model_as_it_was(tmp_path):
    """A LoRA-style file lacking one of the trainable tensors is refused before anything loads:
    the model keeps all its weights, not a mix of the file's and its own."""
    path = tmp_path / "w.safetensors"
    trained = Adapted(seed=0)
    from safetensors.torch import save_file

    save_file({"adapter.weight": trained.adapter.weight.detach().contiguous()}, str(path))
    fresh = Adapted(seed=1)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    with pytest.raises(RunError, match=r"missing \['adapter.bias'\], unexpected \[\]"):
        load_weights(fresh, path)
    for key, value in before.items():
        assert torch.equal(fresh.state_dict()[key], value), key


def test_a_store_keeps_two_checkpoints_unless_told(tmp_path):
    store = CheckpointStore(tmp_path)
    for step in (1, 2, 3):
        store.save(nn.Linear(2, 2), state(step))
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == [
        "ckpt-000002-step2",
        "ckpt-000003-step3",
    ]


def test_a_folder_that_cannot_be_removed_never_fails_a_save(tmp_path, monkeypatch):
    """Removing a stale temporary folder or an old checkpoint can fail (a file held open, a
    network disk): the new checkpoint is still saved and named, and what could not be removed
    stays; a full disk is still reported as one, even if its half-written folder stays too."""
    import errno
    import os

    from dlab.errors import DiskFull
    from dlab.training import checkpoint

    real_unlink = os.unlink

    def unlink(name, *args, **kwargs):  # what shutil.rmtree calls for each file
        if str(name).endswith("held-open"):
            raise PermissionError(errno.EACCES, "Permission denied", str(name))
        return real_unlink(name, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    store = CheckpointStore(tmp_path, keep=1)
    stale = tmp_path / ".ckpt-000001-step5.tmp-99999"  # left by a killed process
    stale.mkdir(parents=True)
    (stale / "held-open").write_bytes(b"x")
    first = store.save(nn.Linear(2, 2), state(5))
    assert stale.is_dir() and (tmp_path / "latest").read_text().strip() == first.name
    (first / "held-open").write_bytes(b"x")
    second = store.save(nn.Linear(2, 2), state(10))  # keep=1: the first is removed, or tried
    assert (tmp_path / "latest").read_text().strip() == second.name
    assert (first / "held-open").is_file() and not (first / "state.json").exists()

    def full(model, path, metadata):
        (path.parent / "held-open").write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "write_model", full)
    with pytest.raises(DiskFull, match=f"the last good checkpoint is {second.name}"):
        store.save(nn.Linear(2, 2), state(15))
