"""What report sections read: the run's files, and (lazily) its data, model and predictions."""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from dlab._io import read_json
from dlab.tasks import Task, task_of


class ReportContext:
    """One run, seen by the report: cheap things eagerly, data and model only when a section asks."""

    def __init__(self, run: Any):
        self.run = run
        self.path: Path = run.path
        self.meta: dict[str, Any] = run.dir.meta
        self.recipe = run.recipe
        self.records: list[dict[str, Any]] = run.dir.metrics()
        self.data_meta = run.dir.data_meta if "data" in self.meta else None
        self.task: Task | None = task_of(self.data_meta) if self.data_meta else None

    def headline(self, report: dict[str, Any]) -> dict[str, Any]:
        """The headline metrics of an evaluation report (every number where the task is unknown)."""
        if self.task is None:
            return {
                k: v for k, v in report.items() if isinstance(v, int | float) and k != "samples"
            }
        return self.task.headline_of(report)

    @property
    def epochs(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == "epoch"]

    @property
    def steps(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("kind") == "step"]

    @cached_property
    def evaluation(self) -> dict[str, dict[str, Any]]:
        """eval/<split>.json reports by split."""
        folder = self.path / "eval"
        found = {}
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            try:
                found[path.stem] = read_json(path)
            except (OSError, json.JSONDecodeError):
                continue
        return found

    @cached_property
    def bundle(self) -> Any:
        """The run's data (raises DataError where it is not on this machine)."""
        from dlab.data import build

        return build(self.recipe.data, self.recipe.seed)

    @cached_property
    def model(self) -> torch.nn.Module:
        return self.run.model

    @property
    def split(self) -> str:
        """The split the report shows: test where there is one, else validation."""
        return "test" if self.bundle.test is not None else "val"

    @cached_property
    def predictions(self) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        """(probabilities, targets, inputs) for up to 2,000 samples of the shown split."""
        loader = self.bundle.loader(self.split)
        probs, targets, inputs, seen = [], [], [], 0
        with torch.no_grad():
            for x, y in loader.epoch(0):
                probs.append(self.model(x).float().softmax(-1))
                targets.append(y)
                inputs.extend(list(x))
                seen += len(y)
                if seen >= 2000:
                    break
        return torch.cat(probs), torch.cat(targets), inputs
