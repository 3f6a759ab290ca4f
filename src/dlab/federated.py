"""Federated learning with Flower: `dlab federate RECIPE --clients N --rounds R`.

Flower is the engine; dlab brings the pieces Flower leaves to the user: the data partitions, the
local training (the dlab trainer, so every recipe field works, DP-SGD included), the global
evaluation and the run folder. One Flower ServerApp runs a FedAvg or FedProx strategy; one
ClientApp trains the model on partition `partition-id` of the recipe's training split.

- Simulation (`dlab federate`): Flower's `run_simulation` on its Ray backend, every client a
  virtual SuperNode on this machine (`pip install "dlab[federated]"`). Flower 1.41 marks
  `run_simulation` deprecated in favour of `flwr run`; it still runs and prints a notice.
- Deployment (across machines): Flower's SuperLink and SuperNodes run the same pieces through
  `dlab.federated_app` and the Flower App in `examples/flower_app` (its README has the commands).

Partitions: IID (a random equal split) or Dirichlet(alpha) per class (`--alpha`; 0.1 gives
most clients two or three classes, 1.0 a skewed mixture, 100 nearly IID). Each client keeps 10%
of its partition to evaluate the global model on its own data (per-client metrics).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlab.errors import DlabError, RecipeError

LOCAL_VALIDATION = 0.1


@dataclass
class FederatedSettings:
    """How a federation is simulated; saved in the run's meta.json."""

    clients: int = 10
    rounds: int = 5
    local_epochs: int = 1
    alpha: float | None = None  # None: IID; else Dirichlet(alpha) label skew
    fraction: float = 1.0  # clients sampled per round
    strategy: str = "fedavg"  # or fedprox
    mu: float = 0.01  # FedProx's proximal weight
    central: bool = True  # also train the recipe centrally for the comparison line
    client_cpus: float = 1.0  # Ray resources per virtual client

    def check(self) -> None:
        if self.clients < 2:
            raise DlabError(f"--clients: a federation needs at least 2 clients, not {self.clients}")
        if self.rounds < 1 or self.local_epochs < 1:
            raise DlabError("--rounds and --local-epochs: at least 1")
        if not 0 < self.fraction <= 1:
            raise DlabError(f"--fraction: a share of clients in (0, 1], not {self.fraction}")
        if self.alpha is not None and self.alpha <= 0:
            raise DlabError(f"--alpha: the Dirichlet concentration must be > 0, not {self.alpha}")
        if self.strategy not in ("fedavg", "fedprox"):
            raise DlabError(f"--strategy: fedavg or fedprox, not {self.strategy!r}")


def partition(
    labels: np.ndarray,
    clients: int,
    alpha: float | None,
    seed: int,
    min_size: int = 10,
    attempts: int = 100,
) -> list[np.ndarray]:
    """Sample indices per client: IID, or per class split by proportions ~ Dirichlet(alpha).

    Dirichlet draws are repeated (as flwr-datasets does) until every client has `min_size`
    samples; a DlabError says so when `attempts` draws all fail.
    """
    rng = np.random.default_rng(seed)
    if alpha is None:
        return [np.sort(part) for part in np.array_split(rng.permutation(len(labels)), clients)]
    classes = np.unique(labels)
    for _ in range(attempts):
        parts: list[list[int]] = [[] for _ in range(clients)]
        for c in classes:
            members = rng.permutation(np.flatnonzero(labels == c))
            shares = rng.dirichlet(np.full(clients, alpha))
            cuts = (np.cumsum(shares)[:-1] * len(members)).astype(int)
            for client, chunk in enumerate(np.split(members, cuts)):
                parts[client].extend(chunk.tolist())
        if min(len(p) for p in parts) >= min_size:
            return [np.sort(np.array(p, dtype=np.int64)) for p in parts]
    raise DlabError(
        f"--alpha: {attempts} Dirichlet({alpha}) draws all left a client with fewer than "
        f"{min_size} of {len(labels)} samples; use fewer clients or a larger alpha"
    )


class ProximalLoss(nn.Module):
    """FedProx: the recipe's loss + (mu/2)·||w − w_global||², pulling local training toward the
    global model on non-IID data (Li et al., 2020)."""

    def __init__(self, base: nn.Module, model: nn.Module, mu: float):
        super().__init__()
        self.base, self.model, self.mu = base, model, mu
        self.anchor = [p.detach().clone() for p in model.parameters()]

    def forward(self, outputs: Any, targets: torch.Tensor) -> torch.Tensor:
        drift = sum(
            (p - a).pow(2).sum()
            for p, a in zip(self.model.parameters(), self.anchor, strict=True)
            if p.requires_grad
        )
        return self.base(outputs, targets) + 0.5 * self.mu * drift


@dataclass
class _Federation:
    """What a process needs to play the server or a client: built once per process."""

    recipe: Any
    settings: FederatedSettings
    bundle: Any
    parts: list[np.ndarray] = field(default_factory=list)


@cache
def _federation(recipe_yaml: str, settings_json: str) -> _Federation:
    from dlab import data as datasets
    from dlab.data.bundle import TensorLoader
    from dlab.recipe import from_dict, parse_yaml

    recipe = from_dict(parse_yaml(recipe_yaml, "recipe"), "recipe")
    settings = FederatedSettings(**json.loads(settings_json))
    bundle = datasets.build(recipe.data, recipe.seed)
    from dlab.tasks import task_of

    if not task_of(bundle.meta).labels_inputs or not isinstance(bundle.train, TensorLoader):
        raise RecipeError(
            f"data.name: federated runs partition in-memory classification data by label; "
            f"{bundle.meta.dataset} is {bundle.meta.task} data in a {type(bundle.train).__name__}"
        )
    labels = bundle.train.targets.numpy()
    parts = partition(labels, settings.clients, settings.alpha, recipe.seed)
    return _Federation(recipe, settings, bundle, parts)


def _client_data(fed: _Federation, client: int, server_round: int = 0) -> tuple[Any, Any, int]:
    """The client's local training loader (its order a function of seed, client and round),
    its local validation loader, and its training sample count."""
    from dlab.data.bundle import TensorLoader

    index = torch.from_numpy(fed.parts[client])
    order = index[torch.randperm(len(index), generator=torch.Generator().manual_seed(client))]
    held = max(1, int(len(order) * LOCAL_VALIDATION))
    train_index, val_index = order[held:], order[:held]
    source, batch = fed.bundle.train, fed.recipe.data.batch_size
    train = TensorLoader(
        source.inputs[train_index],
        source.targets[train_index],
        batch_size=min(batch, len(train_index)),
        shuffle=True,
        seed=fed.recipe.seed * 1_000_003 + client * 1_000 + server_round,
        transform=source.transform,
    )
    val = TensorLoader(source.inputs[val_index], source.targets[val_index], batch_size=512)
    return train, val, len(train_index)


def _model(fed: _Federation, arrays: Any) -> nn.Module:
    from dlab import models

    model = models.build(fed.recipe.model, fed.bundle.meta)
    model.load_state_dict(arrays.to_torch_state_dict())
    return model


def _local_config(fed: _Federation, steps_per_epoch: int) -> Any:
    """The recipe's training section for one round of local epochs (a DP-SGD budget spans all
    the rounds)."""
    train = fed.recipe.train
    privacy = train.privacy
    if privacy is not None:
        rounds = fed.settings.rounds * fed.settings.local_epochs * steps_per_epoch
        privacy = privacy.model_copy(update={"steps": rounds})
    return train.model_copy(
        update={
            "epochs": fed.settings.local_epochs,
            "max_steps": None,
            "early_stopping": None,
            "checkpoint_every": 10**9,
            "log_every": 10**9,
            "privacy": privacy,
        }
    )


def _client_train(fed: _Federation, msg: Any, context: Any) -> Any:
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    from dlab.data.bundle import DataBundle
    from dlab.registry import LOSSES
    from dlab.training.trainer import Trainer

    client = int(context.node_config["partition-id"])
    server_round = int(msg.content["config"].get("server-round", 1))
    train, _, count = _client_data(fed, client, server_round)
    model = _model(fed, msg.content["arrays"])
    config = _local_config(fed, len(train))
    loss = LOSSES.build(config.loss)
    if fed.settings.strategy == "fedprox":
        loss = ProximalLoss(loss, model, float(msg.content["config"].get("proximal-mu", 0.0)))
    local = DataBundle(train=train, val=None, test=None, meta=fed.bundle.meta)
    torch.manual_seed(fed.recipe.seed * 1_000_003 + client * 1_000 + server_round)
    trainer = Trainer(
        model,
        local,
        config,
        seed=train.seed,
        progress=False,
        loss=loss,
    )
    if trainer.privacy is not None and "privacy" in context.state:
        trainer.privacy.load_state_dict(json.loads(context.state["privacy"]["history"]))
    history = trainer.fit()
    metrics = {
        "num-examples": count,
        "client": client,
        "train_loss": float(history.last.get("train_loss", float("nan"))),
        "train_accuracy": float(history.last.get("train_accuracy", float("nan"))),
    }
    if trainer.privacy is not None:  # the client's budget spans all its rounds
        context.state["privacy"] = ConfigRecord(
            {"history": json.dumps(trainer.privacy.state_dict())}
        )
        metrics["epsilon"] = trainer.privacy.epsilon()
    content = RecordDict(
        {"arrays": ArrayRecord(model.state_dict()), "metrics": MetricRecord(metrics)}
    )
    return Message(content=content, reply_to=msg)


def _evaluate(fed: _Federation, model: nn.Module, loader: Any) -> dict[str, float]:
    from dlab.registry import LOSSES
    from dlab.training.metrics import build_metrics, evaluate

    metrics = build_metrics(["accuracy"], fed.bundle.meta)
    loss = LOSSES.build(fed.recipe.train.loss)
    return evaluate(model, loader, loss, metrics, torch.device("cpu"))


def _client_evaluate(fed: _Federation, msg: Any, context: Any) -> Any:
    from flwr.app import Message, MetricRecord, RecordDict

    client = int(context.node_config["partition-id"])
    _, val, _ = _client_data(fed, client)
    scores = _evaluate(fed, _model(fed, msg.content["arrays"]), val)
    metrics = {"num-examples": val.num_samples, "client": client, **scores}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)


def run_strategy(grid: Any, fed: _Federation, log: Path) -> dict[str, torch.Tensor]:
    """The ServerApp's work: Flower's FedAvg/FedProx over `grid`, one record per round in `log`
    (global validation metrics, the clients' train and evaluation rows); the final weights."""
    from flwr.app import ArrayRecord, MetricRecord
    from flwr.serverapp.strategy import FedAvg, FedProx
    from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

    from dlab import models

    settings = fed.settings
    pending: dict[str, list[dict[str, Any]]] = {}  # this round's client rows, until its record

    def keep(kind: str) -> Any:
        def aggregate(replies: list[Any], key: str) -> Any:
            rows = [dict(r["metrics"]) for r in replies]
            pending[kind] = sorted(rows, key=lambda m: int(m["client"]))
            return aggregate_metricrecords(replies, key)

        return aggregate

    held_out = fed.bundle.val or fed.bundle.test  # the final test evaluation comes after
    started = time.perf_counter()

    def global_evaluation(server_round: int, arrays: Any) -> Any:
        """Called before round 1 and after each round (Flower's order: train, evaluate, this)."""
        scores = _evaluate(fed, _model(fed, arrays), held_out)
        record: dict[str, Any] = {"kind": "epoch", "epoch": server_round, "step": server_round}
        record.update({f"val_{k}": v for k, v in scores.items()})
        trained = pending.pop("clients_train", [])
        if trained:
            weights = [r["num-examples"] for r in trained]
            for name in ("train_loss", "train_accuracy", "epsilon"):
                if name in trained[0]:
                    values = [r[name] for r in trained]
                    record[name] = float(np.average(values, weights=weights))
            record["clients_train"] = trained
        record["clients_evaluate"] = pending.pop("clients_evaluate", [])
        record["elapsed_s"] = time.perf_counter() - started
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return MetricRecord(scores)

    kind = FedProx if settings.strategy == "fedprox" else FedAvg
    options = {"proximal_mu": settings.mu} if settings.strategy == "fedprox" else {}
    sampled = min(settings.clients, max(2, round(settings.fraction * settings.clients)))
    strategy = kind(
        fraction_train=settings.fraction,
        fraction_evaluate=settings.fraction,
        min_train_nodes=sampled,
        min_evaluate_nodes=sampled,
        min_available_nodes=settings.clients,
        train_metrics_aggr_fn=keep("clients_train"),
        evaluate_metrics_aggr_fn=keep("clients_evaluate"),
        **options,
    )
    torch.manual_seed(fed.recipe.seed)
    initial = models.build(fed.recipe.model, fed.bundle.meta)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(initial.state_dict()),
        num_rounds=settings.rounds,
        evaluate_fn=global_evaluation,
    )
    return result.arrays.to_torch_state_dict()


def build_apps(
    recipe_yaml: str, settings: FederatedSettings, log: Path
) -> tuple[Any, Any, dict[str, Any]]:
    """Flower's ServerApp and ClientApp for a simulation of this recipe; the server leaves the
    final global weights in the returned dict."""
    from flwr.clientapp import ClientApp
    from flwr.serverapp import ServerApp

    settings_json = json.dumps(asdict(settings))
    outcome: dict[str, Any] = {}
    client_app = ClientApp()

    @client_app.train()
    def train(msg: Any, context: Any) -> Any:
        return _client_train(_federation(recipe_yaml, settings_json), msg, context)

    @client_app.evaluate()
    def evaluate(msg: Any, context: Any) -> Any:
        return _client_evaluate(_federation(recipe_yaml, settings_json), msg, context)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Any, context: Any) -> None:
        fed = _federation(recipe_yaml, settings_json)
        outcome["state_dict"] = run_strategy(grid, fed, log)

    return server_app, client_app, outcome


def start_run(recipe: Any, settings: FederatedSettings, runs_dir: str | Path | None) -> Any:
    """Validate the recipe and the partitions, and open the run folder of a federation."""
    from dlab import models, runtime
    from dlab.runs import RunDir

    settings.check()
    recipe_yaml = recipe.to_yaml()
    fed = _federation(recipe_yaml, json.dumps(asdict(settings)))  # data errors before any run
    run_dir = RunDir.create(recipe, runs_dir)
    torch.manual_seed(recipe.seed)
    model = models.build(recipe.model, fed.bundle.meta)
    run_dir.update_meta(
        status="running",
        kind="federated",
        federated={**asdict(settings), "client_samples": [len(p) for p in fed.parts]},
        data=fed.bundle.meta.to_json(),
        parameters=models.count_parameters(model),
        trainable_parameters=models.count_parameters(model, trainable_only=True),
        hardware=runtime.hardware_summary(torch.device("cpu")),
        seed=recipe.seed,
    )
    return run_dir, fed


def finish_run(
    run_dir: Any,
    fed: _Federation,
    state_dict: dict[str, torch.Tensor],
    seconds: float,
    *,
    runs_dir: str | Path | None = None,
    progress: bool = False,
) -> Any:
    """Weights, metrics, the centralised comparison, the test evaluation and the report."""
    from dlab import models
    from dlab.api import Run, train
    from dlab.runs import completed
    from dlab.training.checkpoint import save_weights

    settings, recipe = fed.settings, fed.recipe
    model = models.build(recipe.model, fed.bundle.meta)
    model.load_state_dict(state_dict)
    save_weights(model, run_dir.weights)
    log = run_dir.path / "federated.jsonl"
    rounds = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    numeric = [{k: v for k, v in r.items() if not isinstance(v, list)} for r in rounds]
    (run_dir.path / "metrics.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in numeric[1:]), encoding="utf-8"
    )
    trained = sum(len(p) for p in fed.parts) * (1 - LOCAL_VALIDATION)
    passes = settings.fraction * settings.rounds * settings.local_epochs
    summary = completed(
        epochs=settings.rounds, seconds=seconds, samples=trained * passes, final=numeric[-1]
    )
    if settings.central:  # the same recipe on all the data, for as many passes over it
        epochs = settings.rounds * settings.local_epochs
        central = train(
            recipe,
            [f"train.epochs={epochs}", "train.max_steps=null"],
            runs_dir=runs_dir,
            progress=progress,
            report=False,
        )
        report = central.dir.meta.get("evaluation", {})
        split = "test" if "test" in report else "val"
        summary["central"] = {
            "run": str(central.path),
            "epochs": epochs,
            "accuracy": report.get(split, {}).get("accuracy"),
            "split": split,
        }
    run_dir.update_meta(**summary)
    run = Run(run_dir)
    run.evaluate("test" if fed.bundle.test is not None else "val", bundle=fed.bundle)
    run.write_report()
    return run


def federate(
    recipe: Any,
    overrides: Any = (),
    settings: FederatedSettings | None = None,
    *,
    runs_dir: str | Path | None = None,
    progress: bool = True,
) -> Any:
    """Simulate the federation on this machine with Flower, write a run folder, and return its Run."""
    from dlab.recipe import load_recipe

    settings = settings or FederatedSettings()
    try:
        from flwr.simulation import run_simulation
    except ImportError:
        raise DlabError(
            "federate: Flower's simulation engine is not installed; pip install 'dlab[federated]'"
        ) from None
    recipe_obj = load_recipe(recipe, overrides)
    run_dir, fed = start_run(recipe_obj, settings, runs_dir)
    log = run_dir.path / "federated.jsonl"
    server_app, client_app, outcome = build_apps(recipe_obj.to_yaml(), settings, log)
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # we ask for no GPUs
    started = time.perf_counter()
    try:
        run_simulation(
            server_app=server_app,
            client_app=client_app,
            num_supernodes=settings.clients,
            backend_config={"client_resources": {"num_cpus": settings.client_cpus}},
        )
    except BaseException:
        run_dir.update_meta(status="failed")
        raise
    if "state_dict" not in outcome:
        run_dir.update_meta(status="failed")
        done = log.read_text().count("\n") - 1 if log.exists() else 0
        raise DlabError(
            f"federate: the Flower simulation ended without a global model; its log is above "
            f"(rounds done: {max(done, 0)})"
        )
    seconds = time.perf_counter() - started
    return finish_run(
        run_dir, fed, outcome["state_dict"], seconds, runs_dir=runs_dir, progress=progress
    )
