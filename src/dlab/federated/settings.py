"""A federation's settings, its data partitions and what every client and the server share."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
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
class Federation:
    """What a process needs to play the server or a client: built once per process."""

    recipe: Any
    settings: FederatedSettings
    bundle: Any
    parts: list[np.ndarray] = field(default_factory=list)


@cache
def federation(recipe_yaml: str, settings_json: str) -> Federation:
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
    return Federation(recipe, settings, bundle, parts)


def training_count(partition: int) -> int:
    """How many of a partition's samples its client trains on (the rest validate locally)."""
    return partition - max(1, int(partition * LOCAL_VALIDATION))


def client_data(fed: Federation, client: int, server_round: int = 0) -> tuple[Any, Any, int]:
    """The client's local training loader (its order a function of seed, client and round),
    its local validation loader, and its training sample count."""
    from dlab.data.bundle import TensorLoader

    index = torch.from_numpy(fed.parts[client])
    order = index[torch.randperm(len(index), generator=torch.Generator().manual_seed(client))]
    held = len(order) - training_count(len(order))
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


def model_from(fed: Federation, arrays: Any) -> nn.Module:
    from dlab import models

    model = models.build(fed.recipe.model, fed.bundle.meta)
    model.load_state_dict(arrays.to_torch_state_dict())
    return model
