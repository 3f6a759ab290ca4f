"""The Flower ServerApp and ClientApp for deployment: a SuperLink and SuperNodes on real machines.

`dlab federate` simulates a federation on one machine; across machines Flower's own runtime runs
these two apps, which read their settings from the run config of the Flower App in
`examples/flower_app` (see its README):

    flower-superlink --insecure --port 9200                      # the server machine
    flower-supernode --insecure --superlink HOST:9200 --port 9300 \\
        --node-config "partition-id=0 num-partitions=2"            # each client machine, its id
    flwr run examples/flower_app CONNECTION --run-config "recipe='mnist_cnn' clients=2"

Every SuperNode needs dlab installed and the recipe's data set; it trains on partition
`partition-id` of the training split as the simulation's virtual clients do. The ServerApp
writes a normal run folder (under the run config's `runs-dir`) with the per-round records, the
final weights, the test evaluation and the report.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from functools import cache
from typing import Any

from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from dlab.federated.clients import client_evaluate, client_train
from dlab.federated.server import finish_run, run_strategy, start_run
from dlab.federated.settings import FederatedSettings, federation


def settings_of(config: dict[str, Any]) -> FederatedSettings:
    """Run-config keys (Flower's kebab-case) as FederatedSettings; alpha 0 means IID."""
    alpha = float(config.get("alpha", 0.0))
    return FederatedSettings(
        clients=int(config["clients"]),
        rounds=int(config.get("rounds", 5)),
        local_epochs=int(config.get("local-epochs", 1)),
        alpha=alpha if alpha > 0 else None,
        fraction=float(config.get("fraction", 1.0)),
        strategy=str(config.get("strategy", "fedavg")),
        mu=float(config.get("mu", 0.01)),
        central=bool(config.get("central", False)),
    )


@cache
def _recipe_yaml(recipe: str) -> str:
    from dlab.recipe import load_recipe

    return load_recipe(recipe).to_yaml()


def _fed(context: Context) -> Any:
    config = dict(context.run_config)
    settings = settings_of(config)
    return federation(_recipe_yaml(str(config["recipe"])), json.dumps(asdict(settings)))


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    return client_train(_fed(context), msg, context)


@client_app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    return client_evaluate(_fed(context), msg, context)


server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    from dlab.recipe import load_recipe

    config = dict(context.run_config)
    settings = settings_of(config)
    runs_dir = str(config.get("runs-dir", "runs"))
    run_dir, fed = start_run(load_recipe(str(config["recipe"])), settings, runs_dir)
    started = time.perf_counter()
    try:
        state = run_strategy(grid, fed, run_dir.path / "federated.jsonl")
    except BaseException:
        run_dir.update_meta(status="failed")
        raise
    run = finish_run(run_dir, fed, state, time.perf_counter() - started, runs_dir=runs_dir)
    print(f"federated run written to {run.path}", flush=True)
