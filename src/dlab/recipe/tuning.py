"""The `tune:` section: the search space of `dlab tune`, its metric, sampler, pruner and heartbeat."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from pydantic_core import PydanticCustomError

from dlab.recipe.section import Section


def lower_is_better(metric: str) -> bool:
    """Losses and errors: val_loss, val_mae, val_rmse ("mse" is inside it), val_perplexity."""
    return any(word in metric for word in ("loss", "error", "mae", "mse", "perplexity"))


SPACE_KINDS = ("log_uniform", "uniform", "int", "choice")


class TuneConfig(Section):
    """A hyper-parameter search with Optuna over any recipe fields."""

    space: dict[str, dict[str, list[Any]]] = Field(
        description="dotted recipe field -> {log_uniform: [lo, hi]} | {uniform: [lo, hi]} | {int: [lo, hi]} | {choice: [a, b, ...]}"
    )
    metric: str = Field(
        "val_loss",
        description="validation metric to optimise (as logged: val_loss, val_accuracy, ...)",
    )
    direction: Literal["auto", "minimize", "maximize"] = Field(
        "auto", description="auto: minimise losses and errors, maximise the rest"
    )
    trials: int = Field(
        20, ge=1, description="trials the study runs in total (across restarts and workers)"
    )
    sampler: Literal["tpe", "random"] = Field("tpe", description="TPE (Bayesian) or random search")
    pruner: Literal["median", "hyperband", "none"] = Field(
        "median", description="stop trials whose per-epoch metric lags"
    )
    seed: int = Field(
        0,
        description="seed of the sampler (mixed with the trials stored and the process, so workers differ)",
    )
    heartbeat: int = Field(
        10, ge=1, description="seconds between a running trial's heartbeats in the storage"
    )
    grace: int = Field(
        60,
        ge=2,
        description="seconds without a heartbeat after which a trial (its worker died) is marked failed and retried once",
    )

    @model_validator(mode="after")
    def _check_space(self) -> TuneConfig:
        if self.grace <= self.heartbeat:
            raise PydanticCustomError(
                "grace_short",
                "grace ({grace} s) must be longer than heartbeat ({heartbeat} s)",
                {"grace": self.grace, "heartbeat": self.heartbeat},
            )
        if not self.space:
            raise PydanticCustomError(
                "empty_space", "space is empty: name at least one field to search"
            )
        for path, spec in self.space.items():
            if len(spec) != 1 or next(iter(spec)) not in SPACE_KINDS:
                raise PydanticCustomError(
                    "space_kind",
                    "space.{path}: use exactly one of {kinds}",
                    {"path": path, "kinds": ", ".join(SPACE_KINDS)},
                )
            kind, values = next(iter(spec.items()))
            if kind == "choice" and not values:
                raise PydanticCustomError(
                    "space_values", "space.{path}: choice needs at least one value", {"path": path}
                )
            if kind != "choice" and (
                len(values) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
                or values[0] >= values[1]
            ):
                raise PydanticCustomError(
                    "space_values",
                    "space.{path}: {kind} needs [low, high] numbers with low < high",
                    {"path": path, "kind": kind},
                )
            if kind == "log_uniform" and values[0] <= 0:
                raise PydanticCustomError(
                    "space_values", "space.{path}: log_uniform needs a positive low", {"path": path}
                )
        return self

    def resolved_direction(self) -> Literal["minimize", "maximize"]:
        """minimize for losses and errors unless told otherwise."""
        if self.direction != "auto":
            return self.direction
        return "minimize" if lower_is_better(self.metric) else "maximize"
