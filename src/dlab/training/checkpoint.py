"""Checkpoint folders, written atomically: a crash at any moment leaves the last complete one.

    checkpoints/
      latest                       -> the name of the newest complete checkpoint
      ckpt-000007-step1500/
        model.safetensors          weights (tied weights stored once)
        state.safetensors          optimizer, scheduler and RNG tensors
        state.json                 everything else: step, epoch, counters, RNG, data position
        recipe.yaml                the resolved recipe

A checkpoint is assembled in a hidden temporary folder, fsynced, renamed into place, and only
then named in `latest` (itself replaced atomically); older ones beyond `keep` are removed.
"""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

from dlab._io import _fsync_dir, atomic_write, atomic_write_text
from dlab.errors import DiskFull, RunError
from dlab.training.state import flatten, unflatten

FORMAT = "dlab-checkpoint-1"
_NAME = re.compile(r"^ckpt-(\d+)-step(\d+)$")


def _trainable_only(model: nn.Module) -> bool:
    """Models that wrap a frozen pretrained base (LoRA) save only what training changes."""
    return bool(getattr(model, "saves_trainable_only", False))


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    return {k: v.detach().contiguous() for k, v in model.state_dict().items() if k in names}


def write_model(
    model: nn.Module | dict[str, torch.Tensor], path: Path, metadata: dict[str, str]
) -> None:
    """Weights to safetensors: all of them (tied ones once), or the trainable part of a LoRA
    model; or a state dict already gathered whole (FSDP, tied weights under one name)."""
    if isinstance(model, dict):
        save_file(model, str(path), metadata=metadata)
    elif _trainable_only(model):
        save_file(_trainable_state(model), str(path), metadata={**metadata, "subset": "trainable"})
    else:
        save_model(model, str(path), metadata=metadata)


def save_weights(model: nn.Module | dict[str, torch.Tensor], path: Path) -> None:
    """Write a model's weights to safetensors atomically (no temporary file left on error; the
    folder synced after the rename)."""
    atomic_write(path, lambda tmp: write_model(model, tmp, {"format": "dlab-weights-1"}))


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load safetensors weights into `model`; every key must match (every trainable one for LoRA)."""
    if not path.is_file():
        raise RunError(f"{path}: weights file not found")
    try:
        if _trainable_only(model):
            state = load_file(str(path))
            expected = set(_trainable_state(model))
            missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
            if not (missing or unexpected):
                model.load_state_dict(state, strict=False)
        else:
            missing, unexpected = load_model(model, str(path), strict=False)
    except RuntimeError as exc:  # shapes differ: torch explains which, over several lines
        detail = " ".join(line.strip() for line in str(exc).splitlines()[1:3])
        raise RunError(f"{path}: weights do not fit the model ({detail})") from None
    if missing or unexpected:
        raise RunError(
            f"{path}: weights do not fit the model (missing {sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]})"
        )
    return model


class CheckpointStore:
    """The checkpoints of one run."""

    def __init__(self, folder: Path, keep: int = 2):
        self.folder, self.keep = Path(folder), keep

    def _complete(self) -> list[tuple[int, int, Path]]:
        found = []
        if self.folder.is_dir():
            for child in self.folder.iterdir():
                match = _NAME.match(child.name)
                if match and (child / "state.json").is_file():
                    found.append((int(match.group(1)), int(match.group(2)), child))
        return sorted(found)

    def save(
        self,
        model: nn.Module | dict[str, torch.Tensor],
        state: dict[str, Any],
        recipe_yaml: str | None = None,
    ) -> Path:
        """Write a new checkpoint holding `model`'s weights (or a gathered state dict of them)
        and `state`; return its folder."""
        self.folder.mkdir(parents=True, exist_ok=True)
        existing = self._complete()
        number = existing[-1][0] + 1 if existing else 1
        final = self.folder / f"ckpt-{number:06d}-step{state['trainer']['step']}"
        for stale in self.folder.glob(
            ".ckpt-*.tmp-*"
        ):  # left by a process that was killed mid-write
            shutil.rmtree(stale, ignore_errors=True)
        tmp = self.folder / f".{final.name}.tmp-{os.getpid()}"
        try:
            self._write(tmp, model, state, recipe_yaml)
        except OSError as exc:  # nothing half-written stays; the last complete checkpoint does
            shutil.rmtree(tmp, ignore_errors=True)
            if exc.errno != errno.ENOSPC:
                raise
            last = self.latest()
            kept = f"the last good checkpoint is {last.name}" if last else "no checkpoint yet"
            raise DiskFull(
                f"no space left on the disk of {self.folder} while writing {final.name}; {kept}"
            ) from None
        os.rename(tmp, final)
        _fsync_dir(self.folder)
        atomic_write_text(self.folder / "latest", final.name + "\n")
        for _, _, old in self._complete()[: -self.keep]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    @staticmethod
    def _write(
        tmp: Path,
        model: nn.Module | dict[str, torch.Tensor],
        state: dict[str, Any],
        recipe_yaml: str | None,
    ) -> None:
        """Every file of a checkpoint into the folder `tmp`, synced to disk."""
        tmp.mkdir()
        tensors: dict[str, torch.Tensor] = {}
        skeleton = flatten(state, tensors)
        write_model(model, tmp / "model.safetensors", {"format": FORMAT})  # or FSDP's gathered
        save_file(tensors, str(tmp / "state.safetensors"), metadata={"format": FORMAT})
        (tmp / "state.json").write_text(
            json.dumps({"format": FORMAT, "state": skeleton}), encoding="utf-8"
        )
        if recipe_yaml is not None:
            (tmp / "recipe.yaml").write_text(recipe_yaml, encoding="utf-8")
        for file in tmp.iterdir():
            with open(file, "rb+") as f:
                os.fsync(f.fileno())
        _fsync_dir(tmp)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        pointer = self.folder / "latest"
        if pointer.is_file():
            named = self.folder / pointer.read_text(encoding="utf-8").strip()
            if (named / "state.json").is_file():
                return named
        complete = self._complete()  # the pointer is missing or stale: trust the folders
        return complete[-1][2] if complete else None

    @staticmethod
    def load(folder: Path, model: nn.Module) -> dict[str, Any]:
        """Load weights into `model` and return the rest of the state."""
        state = CheckpointStore.load_state(folder)
        load_weights(model, folder / "model.safetensors")
        return state

    @staticmethod
    def load_state(folder: Path) -> dict[str, Any]:
        """The state of a checkpoint without its weights."""
        try:
            document = json.loads((folder / "state.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"{folder}: unreadable checkpoint ({exc})") from None
        if document.get("format") != FORMAT:
            raise RunError(f"{folder}: not a {FORMAT} checkpoint")
        tensors = load_file(str(folder / "state.safetensors"))
        return unflatten(document["state"], tensors)
