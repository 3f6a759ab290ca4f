"""The ClientApp's work: local training with the dlab trainer, and evaluation."""

from __future__ import annotations

import json
from typing import Any

import torch
from torch import nn

from dlab.federated.settings import Federation, ProximalLoss, client_data, model_from


def _local_config(fed: Federation, steps_per_epoch: int) -> Any:
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


def client_train(fed: Federation, msg: Any, context: Any) -> Any:
    from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

    from dlab.data.bundle import DataBundle
    from dlab.registry import LOSSES
    from dlab.training.trainer import Trainer

    client = int(context.node_config["partition-id"])
    server_round = int(msg.content["config"].get("server-round", 1))
    train, _, count = client_data(fed, client, server_round)
    model = model_from(fed, msg.content["arrays"])
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


def evaluate_global(fed: Federation, model: nn.Module, loader: Any) -> dict[str, float]:
    from dlab.registry import LOSSES
    from dlab.training.metrics import build_metrics, evaluate

    metrics = build_metrics(["accuracy"], fed.bundle.meta)
    loss = LOSSES.build(fed.recipe.train.loss)
    return evaluate(model, loader, loss, metrics, torch.device("cpu"))


def client_evaluate(fed: Federation, msg: Any, context: Any) -> Any:
    from flwr.app import Message, MetricRecord, RecordDict

    client = int(context.node_config["partition-id"])
    _, val, _ = client_data(fed, client)
    scores = evaluate_global(fed, model_from(fed, msg.content["arrays"]), val)
    metrics = {"num-examples": val.num_samples, "client": client, **scores}
    return Message(content=RecordDict({"metrics": MetricRecord(metrics)}), reply_to=msg)
