"""Run directories: what one verb writes and the next reads.

runs/<recipe>/<YYYYmmdd-HHMMSS>/
  recipe.yaml          the resolved recipe (rebuilds the exact model)
  meta.json            status, data metadata, hardware, timings, final metrics
  metrics.jsonl        one JSON record per logged step and per epoch
  model.safetensors    final weights (the best epoch's, when early stopping restores them)
  tokenizer.json       text models: the tokenizer of the training split (or the pretrained one)
  checkpoints/         resumable training state (see dlab.training.checkpoint)
  tb/                  TensorBoard event files
  eval/                per-split reports (metrics, confusion matrix, BLEU, samples)
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from dlab._io import atomic_write_json, atomic_write_text, read_json
from dlab.data.bundle import DataMeta
from dlab.errors import RunError
from dlab.recipe import Recipe, from_dict, parse_yaml
from dlab.training.checkpoint import CheckpointStore

RUNS_DIR_ENV = "DLAB_RUNS_DIR"

Status = Literal["created", "running", "completed", "interrupted", "diverged", "failed"]


class RunRecord(BaseModel):
    """meta.json, typed: what a run is, where it stands, and what each verb added to it.

    Every verb writes it through `RunDir.update_meta`, which checks the merged record against
    this model and replaces the file atomically. Fields written by other versions are kept.
    """

    model_config = ConfigDict(extra="allow")

    status: Status = "created"
    kind: Literal["train", "federated"] = "train"
    created: str | None = None  # local time, ISO 8601
    finished: str | None = None
    seed: int | None = None
    data: dict[str, Any] | None = None  # DataMeta.to_json()
    parameters: int | None = None
    trainable_parameters: int | None = None
    forward_flops_per_batch: float | None = None
    hardware: dict[str, Any] | None = None  # runtime.hardware_summary()
    processes: int | None = None  # ranks of a torchrun job
    # how training ended
    stop_reason: str | None = None
    steps: int | None = None
    epochs: int | None = None
    train_seconds: float | None = None
    samples_per_s: float | None = None
    final: dict[str, Any] | None = None  # the last epoch's record
    best_epoch: int | None = None
    # what later verbs added: headline metrics per split, provenance of derived runs
    evaluation: dict[str, dict[str, Any]] = {}
    test: dict[str, Any] | None = None  # evaluation["test"], where `runs list` reads it
    privacy: dict[str, Any] | None = None  # DP-SGD: epsilon spent, delta, noise
    federated: dict[str, Any] | None = None  # the federation's settings and client sizes
    central: dict[str, Any] | None = None  # the centralised run a federated one is compared to
    compressed_from: str | None = None
    compression: dict[str, Any] | None = None
    tuning: dict[str, Any] | None = None
    export: dict[str, Any] | None = None
    mlflow: dict[str, Any] | None = None  # the MLflow run it logs to: run_id, experiment_id, ...


def now() -> str:
    """The local time as meta.json writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def completed(
    *, epochs: int, seconds: float, samples: float, final: dict[str, Any], **more: Any
) -> dict[str, Any]:
    """The fields of a finished training run (one process, a job, or a federation)."""
    return {
        "status": "completed",
        "stop_reason": "completed",
        "epochs": epochs,
        "train_seconds": round(seconds, 3),
        "samples_per_s": round(samples / max(seconds, 1e-9), 1),
        "final": final,
        **more,
        "finished": now(),
    }


def runs_root(root: str | Path | None = None) -> Path:
    """Where runs are stored: `root`, $DLAB_RUNS_DIR, or ./runs."""
    if root is not None:
        return Path(root)
    return Path(os.environ.get(RUNS_DIR_ENV, "runs"))


class RunDir:
    """One run directory."""

    RECIPE, META, METRICS, WEIGHTS = (
        "recipe.yaml",
        "meta.json",
        "metrics.jsonl",
        "model.safetensors",
    )
    TOKENIZER = "tokenizer.json"

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    @classmethod
    def create(cls, recipe: Recipe, root: str | Path | None = None) -> RunDir:
        """A new, uniquely named run folder holding the resolved recipe."""
        parent = runs_root(root) / recipe.name
        parent.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        for attempt in range(1, 1000):
            path = parent / (stamp if attempt == 1 else f"{stamp}-{attempt}")
            try:
                path.mkdir()
                break
            except FileExistsError:
                continue
        run = cls(path)
        atomic_write_text(path / cls.RECIPE, recipe.to_yaml())
        run.update_meta(status="created", created=now())
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        """An existing run folder, or a RunError saying why it is not one."""
        path = Path(path)
        if not path.exists():
            raise RunError(f"{path}: no such run directory; see `dlab runs list`")
        if not path.is_dir():
            raise RunError(f"{path}: is a file, not a run directory")
        if not (path / cls.RECIPE).is_file() or not (path / cls.META).is_file():
            raise RunError(
                f"{path}: not a dlab run directory (no recipe.yaml and meta.json); see `dlab runs list`"
            )
        return cls(path)

    # --- contents ---------------------------------------------------------------------------

    @property
    def recipe(self) -> Recipe:
        """The resolved recipe this run was trained with."""
        source = str(self.path / self.RECIPE)
        return from_dict(
            parse_yaml((self.path / self.RECIPE).read_text(encoding="utf-8"), source), source
        )

    @property
    def meta(self) -> dict[str, Any]:
        """meta.json as a dict."""
        try:
            return read_json(self.path / self.META)
        except (OSError, json.JSONDecodeError) as exc:
            raise RunError(f"{self.path / self.META}: unreadable ({exc})") from None

    LOCK = ".lock"

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold this run for this process while it trains: a second process exits 2 naming the
        holder's PID. The operating system drops the lock with its process, so a run whose
        trainer was killed (SIGKILL too) resumes without manual steps."""
        from filelock import FileLock, Timeout

        lock = FileLock(str(self.path / self.LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            holder = self.path / f"{self.LOCK}.pid"
            pid = holder.read_text().strip() if holder.is_file() else "unknown"
            raise RunError(
                f"{self.path}: in use by another dlab process (PID {pid}); wait for it to "
                "finish or stop it, then resume"
            ) from None
        try:
            atomic_write_text(self.path / f"{self.LOCK}.pid", f"{os.getpid()}\n")
            yield
        finally:
            lock.release()

    def in_use(self) -> bool:
        """Whether a live process holds this run (see `lock`)."""
        from filelock import FileLock, Timeout

        if not (self.path / self.LOCK).exists():
            return False
        lock = FileLock(str(self.path / self.LOCK))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            return True
        lock.release()
        return False

    @property
    def record(self) -> RunRecord:
        """meta.json as a RunRecord."""
        return RunRecord.model_validate(self.meta)

    def update_meta(self, **fields: Any) -> dict[str, Any]:
        """Merge `fields` into meta.json, checked against RunRecord, and replace it atomically."""
        meta = self.meta if (self.path / self.META).exists() else {}
        meta.update(fields)
        try:
            RunRecord.model_validate(meta)
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(p) for p in problem["loc"])
            raise RunError(f"{self.path / self.META}: {where}: {problem['msg']}") from None
        atomic_write_json(self.path / self.META, meta)
        return meta

    @property
    def data_meta(self) -> DataMeta:
        """The data metadata saved at training time (shapes, classes, normalisation)."""
        data = self.meta.get("data")
        if data is None:
            raise RunError(
                f"{self.path}: the run has no data metadata yet (it never started training)"
            )
        return DataMeta.from_json(data)

    @property
    def status(self) -> str:
        """created, running, completed, interrupted, diverged or failed."""
        return str(self.meta.get("status", "unknown"))

    def metrics(self) -> list[dict[str, Any]]:
        """Every record in metrics.jsonl (skipping a torn last line)."""
        path = self.path / self.METRICS
        if not path.exists():
            return []
        records = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def epochs(self) -> list[dict[str, Any]]:
        """The epoch records."""
        return [r for r in self.metrics() if r.get("kind") == "epoch"]

    @property
    def weights(self) -> Path:
        """Path of the final weights."""
        return self.path / self.WEIGHTS

    @property
    def checkpoints(self) -> CheckpointStore:
        """This run's checkpoint store."""
        return CheckpointStore(self.path / "checkpoints")

    def summary(self) -> dict[str, Any]:
        """One row for `dlab runs list`."""
        meta = self.meta
        recipe_data: dict[str, Any] = {}
        with contextlib.suppress(Exception):  # a damaged run still gets listed
            recipe_data = parse_yaml(
                (self.path / self.RECIPE).read_text(encoding="utf-8"), str(self.path)
            )
        last = (self.epochs() or [{}])[-1]
        return {
            "run": str(self.path),
            "recipe": recipe_data.get("name", "?"),
            "model": (recipe_data.get("model") or {}).get("name", "?"),
            "data": (recipe_data.get("data") or {}).get("name", "?"),
            "status": _status(meta.get("status", "?"), self),
            "epochs": last.get("epoch", 0),
            "val_accuracy": last.get("val_accuracy"),
            "test_accuracy": (meta.get("test") or {}).get("accuracy"),
            "created": meta.get("created", ""),
        }


def _status(saved: str, run: RunDir) -> str:
    """A run whose record says running but whose trainer is gone (killed, a full disk, a lost
    machine) was interrupted."""
    return "interrupted" if saved == "running" and not run.in_use() else saved


def list_runs(root: str | Path | None = None) -> Iterator[RunDir]:
    """Every run under the runs root, oldest first."""
    base = runs_root(root)
    if not base.is_dir():
        return iter(())
    found = [
        p.parent for p in base.glob("*/*/" + RunDir.RECIPE) if (p.parent / RunDir.META).is_file()
    ]
    return iter(RunDir(p) for p in sorted(found, key=lambda p: (p.name, p.parent.name)))
