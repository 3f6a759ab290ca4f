"""The ServerApp's work (FedAvg/FedProx, per-round records), the simulation, the run folder."""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlab.errors import DlabError
from dlab.extras import require
from dlab.federated.clients import client_evaluate, client_train, evaluate_global
from dlab.federated.settings import (
    LOCAL_VALIDATION,
    FederatedSettings,
    Federation,
    federation,
    model_from,
    training_count,
)

logger = logging.getLogger("dlab.federated")


def reply_problem(content: Any, limits: dict[int, int]) -> str | None:
    """Why a client's training reply must not enter the average, or None: its example count
    (its weight in the average) must be the one the server computes for its partition, and
    every weight it sends must be finite."""
    metrics = content["metrics"]
    client, count = metrics.get("client"), metrics.get("num-examples")
    if client not in limits:
        return f"client {client!r} is not one of the {len(limits)} partitions"
    if not isinstance(count, int) or count != limits[client]:
        return (
            f"client {client} reports {count!r} examples; its partition trains on {limits[client]}"
        )
    for name, array in content["arrays"].to_torch_state_dict().items():
        if array.is_floating_point() and not bool(torch.isfinite(array).all()):
            return f"client {client} sent non-finite weights ({name})"
    return None


def keep_valid(replies: Any, limits: dict[int, int], dropped: list[dict[str, Any]]) -> list[Any]:
    """The replies that may enter the average; each dropped one is logged and listed."""
    kept = []
    for reply in replies:
        problem = None if reply.has_error() else reply_problem(reply.content, limits)
        if problem is None:
            kept.append(reply)
        else:
            logger.warning("dropped a client update: %s", problem)
            dropped.append({"client": reply.content["metrics"].get("client"), "why": problem})
    return kept


def _strategy(
    settings: FederatedSettings,
    train_rows: Any,
    evaluate_rows: Any,
    limits: dict[int, int],
    dropped: list[dict[str, Any]],
) -> Any:
    """Flower's FedAvg or FedProx, sampling `fraction` of the clients (at least two) each round,
    averaging only the updates that `keep_valid` lets through."""
    from flwr.serverapp.strategy import FedAvg, FedProx

    base = FedProx if settings.strategy == "fedprox" else FedAvg

    class Checked(base):  # type: ignore[misc, valid-type]
        def aggregate_train(self, server_round: int, replies: Any) -> Any:
            return super().aggregate_train(server_round, keep_valid(replies, limits, dropped))

    options = {"proximal_mu": settings.mu} if settings.strategy == "fedprox" else {}
    sampled = min(settings.clients, max(2, round(settings.fraction * settings.clients)))
    return Checked(
        fraction_train=settings.fraction,
        fraction_evaluate=settings.fraction,
        min_train_nodes=sampled,
        min_evaluate_nodes=sampled,
        min_available_nodes=settings.clients,
        train_metrics_aggr_fn=train_rows,
        evaluate_metrics_aggr_fn=evaluate_rows,
        **options,
    )


def run_strategy(grid: Any, fed: Federation, log: Path) -> dict[str, torch.Tensor]:
    """The ServerApp's work: Flower's FedAvg/FedProx over `grid`, one record per round in `log`
    (global validation metrics, the clients' train and evaluation rows); the final weights."""
    from flwr.app import ArrayRecord, MetricRecord
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
        scores = evaluate_global(fed, model_from(fed, arrays), held_out)
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
        if dropped:  # updates left out of this round's average, and why
            record["dropped"] = list(dropped)
            dropped.clear()
        record["elapsed_s"] = time.perf_counter() - started
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return MetricRecord(scores)

    limits = {i: training_count(len(part)) for i, part in enumerate(fed.parts)}
    dropped: list[dict[str, Any]] = []
    strategy = _strategy(settings, keep("clients_train"), keep("clients_evaluate"), limits, dropped)
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
        return client_train(federation(recipe_yaml, settings_json), msg, context)

    @client_app.evaluate()
    def evaluate(msg: Any, context: Any) -> Any:
        return client_evaluate(federation(recipe_yaml, settings_json), msg, context)

    server_app = ServerApp()

    @server_app.main()
    def main(grid: Any, context: Any) -> None:
        fed = federation(recipe_yaml, settings_json)
        outcome["state_dict"] = run_strategy(grid, fed, log)

    return server_app, client_app, outcome


def start_run(recipe: Any, settings: FederatedSettings, runs_dir: str | Path | None) -> Any:
    """Validate the recipe and the partitions, and open the run folder of a federation."""
    from dlab import models, runtime
    from dlab.runs import RunDir

    settings.check()
    recipe_yaml = recipe.to_yaml()
    fed = federation(recipe_yaml, json.dumps(asdict(settings)))  # data errors before any run
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
    fed: Federation,
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
    # the simulation engine is Ray, which flwr[simulation] brings
    require("federated", "federate (Flower's simulation engine)", ("flwr", "ray"))
    from flwr.simulation import run_simulation

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
