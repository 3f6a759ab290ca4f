"""DP-SGD through Opacus: per-sample gradients clipped to `max_grad_norm`, Gaussian noise whose
scale Opacus's RDP accountant calibrates so that the whole run spends at most `epsilon` (at
`delta`), and batches drawn by Poisson sampling, the sampling that accountant analyses.

The recipe says `train.privacy: {epsilon: 3, delta: 1e-5, max_grad_norm: 1.0}`; the trainer
records the epsilon actually spent after every epoch, and the run's meta and report show it.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from dlab.data.bundle import Batch, TensorLoader, epoch_generator
from dlab.errors import RecipeError
from dlab.extras import require

ACCOUNTANT = "rdp"  # Opacus's default: robust for any number of steps
# Opacus's default RDP orders stop at 63; small data sets with large batches want higher ones
ALPHAS = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 256))


class PoissonLoader:
    """Every sample joins each batch independently with probability batch_size / N.

    The draws are a function of (seed, epoch), so a resumed run sees the same batches; an epoch
    has as many batches as the fixed-size loader it wraps. An empty draw (probability
    (1 - q)^N, nil for real data sets) is drawn again.
    """

    def __init__(self, loader: TensorLoader):
        self.loader = loader
        self.batch_size, self.seed = loader.batch_size, loader.seed
        self.sample_rate = min(1.0, loader.batch_size / loader.num_samples)

    @property
    def num_samples(self) -> int:
        return self.loader.num_samples

    def __len__(self) -> int:
        return len(self.loader)

    def to(self, device: torch.device) -> PoissonLoader:
        self.loader.to(device)
        return self

    def sample_batch(self) -> Batch:
        return self.loader.sample_batch()

    def epoch(self, epoch: int, start: int = 0) -> Iterator[Batch]:
        generator = epoch_generator(self.seed, epoch)
        inputs, targets, n = self.loader.inputs, self.loader.targets, self.loader.num_samples
        for i in range(len(self)):
            chosen = torch.empty(0, dtype=torch.long)
            while len(chosen) == 0:
                chosen = torch.nonzero(torch.rand(n, generator=generator) < self.sample_rate)[:, 0]
            if i < start:
                continue  # drawn anyway, so that later batches match an uninterrupted run
            index = chosen.to(inputs.device)
            x = inputs[index]
            yield (self.loader.transform(x) if self.loader.transform else x), targets[index]


def refuse_unsupported(model: nn.Module, config: Any, loader: Any, distributed: bool) -> None:
    """Clear errors for what DP-SGD cannot do here, before any training starts."""
    require("privacy", "train.privacy: DP-SGD", error=RecipeError)
    from opacus.validators import ModuleValidator

    problems = ModuleValidator.validate(model, strict=False)
    if problems:
        names = sorted({type(p).__name__ for p in problems})
        detail = "; ".join(str(p).splitlines()[0] for p in problems[:2])
        raise RecipeError(
            f"train.privacy: Opacus cannot compute per-sample gradients for this model ({detail}). "
            "Batch norm mixes the samples of a batch: set model.batch_norm=false (or use a model "
            f"without it); recurrent layers need Opacus's DPLSTM. Found: {', '.join(names)}"
        )
    if not isinstance(loader, TensorLoader):
        raise RecipeError(
            "train.privacy: DP-SGD draws Poisson batches from in-memory data; "
            f"this data set's loader is a {type(loader).__name__}"
        )
    clashes = {
        "grad_clip": config.grad_clip is not None,
        "l1": config.l1 > 0,
        "l2": config.l2 > 0,
        "grad_accumulation": config.grad_accumulation > 1,
        "precision": config.precision != "fp32",
        "compile": config.compile,
    }
    for name, clash in clashes.items():
        if clash:
            raise RecipeError(
                f"train.{name}: not combined with train.privacy (per-sample clipping replaces "
                "gradient clipping; use optimizer.weight_decay instead of l1/l2)"
            )
    if distributed:
        raise RecipeError("train.privacy: DP-SGD runs in one process; drop --nproc")


class PrivateTraining:
    """The model, optimizer and loader of a DP-SGD run, and its accountant."""

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        loader: TensorLoader,
        config: Any,
        total_steps: int,
    ):
        from opacus import GradSampleModule
        from opacus.accountants import RDPAccountant
        from opacus.accountants.utils import get_noise_multiplier
        from opacus.optimizers import DPOptimizer

        privacy = config.privacy
        self.loader = PoissonLoader(loader)
        self.delta = privacy.delta
        with warnings.catch_warnings():  # its search visits noise levels that want other orders
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            self.noise_multiplier = get_noise_multiplier(
                target_epsilon=privacy.epsilon,
                target_delta=privacy.delta,
                sample_rate=self.loader.sample_rate,
                steps=total_steps,
                accountant=ACCOUNTANT,
                alphas=ALPHAS,
            )
        # Opacus's hooks see inputs that need no gradient (the data): expected, not a problem
        warnings.filterwarnings("ignore", message="Full backward hook is firing")
        self.model = GradSampleModule(model)
        self.optimizer = DPOptimizer(
            optimizer,
            noise_multiplier=self.noise_multiplier,
            max_grad_norm=privacy.max_grad_norm,
            expected_batch_size=loader.batch_size,
        )
        self.accountant = RDPAccountant()
        self.optimizer.attach_step_hook(
            self.accountant.get_optimizer_hook_fn(sample_rate=self.loader.sample_rate)
        )

    def epsilon(self) -> float:
        """The privacy spent so far (at the recipe's delta)."""
        if not self.accountant.history:
            return 0.0
        return float(self.accountant.get_epsilon(delta=self.delta, alphas=ALPHAS))

    def summary(self) -> dict[str, Any]:
        """What meta.json and the report show."""
        return {
            "epsilon_spent": self.epsilon(),
            "delta": self.delta,
            "noise_multiplier": self.noise_multiplier,
            "accountant": "Opacus RDP",
        }

    def state_dict(self) -> dict[str, Any]:
        return {"history": [list(h) for h in self.accountant.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.accountant.history = [tuple(h) for h in state["history"]]
