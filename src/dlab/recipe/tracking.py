"""The `train.mlflow:` section: where a run's parameters, metrics, artifacts and model are tracked."""

from __future__ import annotations

from pydantic import Field

from dlab.recipe.section import Section


class MlflowSettings(Section):
    """MLflow tracking, used when `train.loggers` names mlflow."""

    tracking_uri: str | None = Field(
        None,
        description="tracking server or store, e.g. http://mlflow.lab:5000 (default: "
        "$MLFLOW_TRACKING_URI, else MLflow's own default)",
    )
    experiment: str | None = Field(None, description="experiment name (default: the recipe's name)")
    log_model: bool = Field(
        True, description="log the final model as an MLflow PyTorch model (mlflow.pytorch)"
    )
