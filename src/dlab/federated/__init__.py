"""Federated learning with Flower: `dlab federate RECIPE --clients N --rounds R`.

Flower is the engine; dlab brings the pieces Flower leaves to the user: the data partitions, the
local training (the dlab trainer, so every recipe field works, DP-SGD included), the global
evaluation and the run folder. One Flower ServerApp runs a FedAvg or FedProx strategy; one
ClientApp trains the model on partition `partition-id` of the recipe's training split.

- Simulation (`dlab federate`): Flower's `run_simulation` on its Ray backend, every client a
  virtual SuperNode on this machine (`pip install "dlab-toolkit[federated]"`). Flower 1.41 marks
  `run_simulation` deprecated in favour of `flwr run`; it still runs and prints a notice.
- Deployment (across machines): Flower's SuperLink and SuperNodes run the same pieces through
  `dlab.federated.app` and the Flower App in `examples/flower_app` (its README has the commands).

Partitions: IID (a random equal split) or Dirichlet(alpha) per class (`--alpha`; 0.1 gives
most clients two or three classes, 1.0 a skewed mixture, 100 nearly IID). Each client keeps 10%
of its partition to evaluate the global model on its own data (per-client metrics).
"""

from dlab.federated.server import federate
from dlab.federated.settings import FederatedSettings, ProximalLoss, partition

__all__ = ["FederatedSettings", "ProximalLoss", "federate", "partition"]
