"""The recipe schema: typed, frozen, validated sections; see `dlab.recipe`."""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BeforeValidator,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from dlab.errors import RecipeError, did_you_mean
from dlab.recipe.section import Section
from dlab.recipe.text import apply_override, dump_yaml, format_validation_error, parse_yaml
from dlab.recipe.tracking import MlflowSettings
from dlab.recipe.tuning import TuneConfig, lower_is_better
from dlab.registry import DATASETS, LOSSES, MODELS, OPTIMIZERS, SCHEDULERS, Registry


class ComponentConfig(Section):
    """A section that names a registered component; subclasses add that component's fields."""

    name: str = Field(description="registered name of the component (see `dlab list`)")


def _dispatch(registry: Registry[Any]) -> BeforeValidator:
    """Validate a section with the config class registered under its `name`."""
    return BeforeValidator(functools.partial(_validate_section, registry))


def _validate_section(registry: Registry[Any], value: Any) -> Any:
    """A section given as a config, a bare name or a mapping with a 'name' key, validated by the
    config class of that name (a module-level function, not a closure made at import, so that
    mutation testing can reach it)."""
    if isinstance(value, ComponentConfig):
        return value
    if isinstance(value, str):
        value = {"name": value}
    if not isinstance(value, Mapping):
        raise PydanticCustomError(
            "section_type",
            "should be a mapping with a 'name' key or a {kind} name",
            {"kind": registry.kind},
        )
    if "name" not in value:
        raise PydanticCustomError(
            "missing_name",
            "needs a 'name': one of {names}",
            {"names": ", ".join(registry.names())},
        )
    name = value["name"]
    if not isinstance(name, str) or name not in registry:
        raise PydanticCustomError(
            "unknown_name",
            "unknown {kind} '{name}'{hint}; see `dlab list {plural}`",
            {
                "kind": registry.kind,
                "name": name,
                "hint": did_you_mean(str(name), registry.names()),
                "plural": registry.plural,
            },
        )
    return registry.config_class(name).model_validate(dict(value))


# --- base classes of registered components (their subclasses live next to their builders) ---


class AugmentConfig(Section):
    """Training-time image augmentation (validation and test images are never augmented)."""

    crop_padding: int = Field(
        0, ge=0, description="random crop after padding each side by this many pixels"
    )
    crop_fill: Literal["zeros", "reflect"] = Field(
        "zeros", description="what the crop's padding holds: zeros, or the image mirrored"
    )
    flip: bool = Field(
        False, description="mirror half of the images left-right (not for digits or text)"
    )
    cutout: int = Field(
        0, ge=0, description="zero a random square of this side in each image (DeVries & Taylor)"
    )


class SoundAugmentConfig(Section):
    """Training-time augmentation of sound features (validation and test clips are never
    augmented): a time shift, noise at a signal-to-noise ratio, SpecAugment masks."""

    shift: int = Field(0, ge=0, description="move each clip by up to this many frames")
    snr_db: float | None = Field(
        None, description="add Gaussian noise to the features at this SNR in dB (e.g. 20)"
    )
    time_masks: int = Field(0, ge=0, le=10, description="SpecAugment: time bands zeroed per clip")
    time_width: int = Field(10, ge=1, description="widest time band, in frames")
    freq_masks: int = Field(0, ge=0, le=10, description="SpecAugment: feature bands zeroed")
    freq_width: int = Field(3, ge=1, description="widest feature band, in coefficients")

    @property
    def active(self) -> bool:
        return bool(self.shift or self.snr_db is not None or self.time_masks or self.freq_masks)


class DataConfig(ComponentConfig):
    """Fields every data set accepts; a data set's config class adds its own."""

    batch_size: int = Field(64, gt=0, description="training batch size")
    eval_batch_size: int = Field(512, gt=0, description="batch size for validation and test")
    val_size: float = Field(
        0.1,
        ge=0,
        description="validation split taken from the training data: a fraction (<1) or a count (>=1)",
    )
    normalize: bool = Field(
        True, description="standardise inputs with statistics of the training split"
    )
    split_seed: int = Field(
        0,
        description="seed of the train/val split; independent of the recipe seed so runs share a split",
    )
    limit: int | None = Field(
        None,
        ge=1,
        description="keep only this many training samples (class-balanced where there are classes)",
    )
    loader: Literal["memory", "workers"] = Field(
        "memory",
        description="memory: tensors batched by index, no workers (fast); workers: torch DataLoader",
    )
    num_workers: int = Field(2, ge=0, description="DataLoader worker processes (loader: workers)")


class ImageDataConfig(DataConfig):
    """Fields of image data sets: DataConfig plus augmentation, and the task to learn."""

    augment: AugmentConfig | None = Field(None, description="training-time augmentation")
    task: Literal["classification", "reconstruction"] = Field(
        "classification",
        description="classification: learn the labels; reconstruction: learn the images alone "
        "(autoencoders; labels only score the clusters afterwards)",
    )
    anomalies: list[str] = Field(
        default_factory=list,
        description="reconstruction: classes left out of training and validation; the test split "
        "measures how well they stand out (anomaly detection)",
    )
    clusters: int | None = Field(
        None,
        ge=2,
        description="reconstruction: k of k-means on the codes (default: the class count)",
    )


class ModelConfig(ComponentConfig):
    """Fields every model accepts; a model's config class adds its own."""


class OptimizerConfig(ComponentConfig):
    """Fields every optimizer accepts."""

    lr: float = Field(
        1e-3, gt=0, description="learning rate (the peak rate when a scheduler is used)"
    )
    weight_decay: float = Field(0.0, ge=0, description="weight decay applied by the optimizer")
    norm_lr_scale: float = Field(
        1.0,
        gt=0,
        description="learning rate of normalisation layers' parameters = lr × this (airbench "
        "trains its batch-norm shifts at 64×)",
    )
    norm_decay: bool = Field(
        False,
        description="decay normalisation parameters too, by weight_decay / norm_lr_scale: the "
        "same shrink per step as the weights (airbench); off, they are never decayed",
    )


class LossConfig(ComponentConfig):
    """Fields every loss accepts."""


class SchedulerConfig(ComponentConfig):
    """Fields every learning-rate schedule accepts."""


DataSection = Annotated[SerializeAsAny[DataConfig], _dispatch(DATASETS)]
ModelSection = Annotated[SerializeAsAny[ModelConfig], _dispatch(MODELS)]
OptimizerSection = Annotated[SerializeAsAny[OptimizerConfig], _dispatch(OPTIMIZERS)]
LossSection = Annotated[SerializeAsAny[LossConfig], _dispatch(LOSSES)]
SchedulerSection = Annotated[SerializeAsAny[SchedulerConfig], _dispatch(SCHEDULERS)]


class EarlyStopping(Section):
    """Stop when a validation metric stops improving."""

    monitor: str = Field("val_loss", description="metric to watch, e.g. val_loss or val_accuracy")
    mode: Literal["auto", "min", "max"] = Field(
        "auto",
        description="whether lower or higher is better; auto: min for losses and errors, max otherwise",
    )
    patience: int = Field(3, ge=1, description="epochs without improvement before stopping")
    min_delta: float = Field(0.0, ge=0, description="smallest change that counts as an improvement")
    restore_best: bool = Field(
        True, description="end with the weights of the best epoch, not the last"
    )

    def direction(self) -> Literal["min", "max"]:
        """'min' if lower values of the monitored metric are better, else 'max'."""
        if self.mode != "auto":
            return self.mode
        return "min" if lower_is_better(self.monitor) else "max"


class Lookahead(Section):
    """Lookahead on the weights (airbench's form): every `every` steps a slow copy moves toward
    the weights by 1 − d and the weights jump to it, d = decay·(step/total)^power; the run ends
    on the slow copy."""

    every: int = Field(5, ge=1, description="steps between updates of the slow weights")
    decay: float = Field(
        0.95**5, gt=0, lt=1, description="how much of the slow copy stays at an update, at the end"
    )
    power: float = Field(
        3.0,
        ge=0,
        description="the decay ramps as (step/total)^power: early updates follow the weights",
    )


class Privacy(Section):
    """DP-SGD (Opacus): the (epsilon, delta) budget of the whole run and the per-sample clip."""

    epsilon: float = Field(
        gt=0, description="privacy budget of the whole run (smaller: more private)"
    )
    delta: float = Field(
        1e-5, gt=0, lt=1, description="failure probability; below 1/N for N training samples"
    )
    max_grad_norm: float = Field(
        1.0, gt=0, description="each sample's gradient is clipped to this L2 norm"
    )
    steps: int | None = Field(
        None,
        ge=1,
        description="optimizer steps the budget spans (default: the run's own; a federated "
        "client's budget spans all its rounds)",
    )


class TrainConfig(Section):
    """How to train: optimizer, loss, schedule, regularisation, checkpoints, device."""

    epochs: int = Field(10, ge=1, description="passes over the training split")
    max_steps: int | None = Field(
        None, ge=1, description="stop after this many optimizer steps (overrides epochs)"
    )
    optimizer: OptimizerSection = Field(
        default_factory=lambda: {"name": "adam"}, description="optimizer and its settings"
    )
    loss: LossSection = Field(
        default_factory=lambda: {"name": "cross_entropy"}, description="training loss"
    )
    scheduler: SchedulerSection = Field(
        default_factory=lambda: {"name": "constant"},
        description="learning-rate schedule, stepped every batch",
    )
    warmup_steps: int = Field(
        0,
        ge=0,
        description="linear learning-rate warm-up over this many steps, from peak/warmup_steps to the peak",
    )
    l1: float = Field(0.0, ge=0, description="L1 penalty λ·Σ|w| on weight matrices and kernels")
    l2: float = Field(0.0, ge=0, description="L2 penalty (λ/2)·Σw² on weight matrices and kernels")
    grad_clip: float | None = Field(
        None, gt=0, description="clip the global gradient norm to this value"
    )
    metrics: list[str] = Field(
        default_factory=lambda: ["accuracy"],
        description="metrics computed on validation and test splits",
    )
    early_stopping: EarlyStopping | None = Field(
        None, description="stop when a validation metric stalls"
    )
    checkpoint_every: int = Field(
        500, ge=1, description="write a checkpoint every this many steps (and each epoch)"
    )
    keep_checkpoints: int = Field(2, ge=1, description="how many recent checkpoints to keep")
    log_every: int = Field(50, ge=1, description="log step metrics every this many steps")
    loggers: list[Literal["tensorboard", "mlflow"]] = Field(
        default_factory=lambda: ["tensorboard"],
        description="where metrics go besides metrics.jsonl: tensorboard (<run>/tb), mlflow "
        "(parameters, metrics, artifacts and the model; see train.mlflow)",
    )
    mlflow: MlflowSettings = Field(
        default_factory=MlflowSettings, description="MLflow tracking server, experiment, model"
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:N or mps")
    threads: int | Literal["auto"] = Field(
        "auto", description="CPU threads; auto: 1 for tiny steps, all usable cores otherwise"
    )
    deterministic: bool = Field(False, description="use only deterministic kernels (slower on GPU)")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="bf16: forward and loss under bfloat16 autocast (weights and optimizer stay fp32)",
    )
    channels_last: bool = Field(
        False,
        description="NHWC memory layout for image models (faster convolutions on some CPUs/GPUs)",
    )

    grad_accumulation: int = Field(
        1,
        ge=1,
        description="split each batch into this many micro-batches and add their gradients: "
        "the memory of batch_size/N, the step of the whole batch",
    )
    activation_checkpointing: bool = Field(
        False,
        description="keep only each Transformer block's input and recompute its activations in "
        "the backward pass (less memory, about a third more compute)",
    )
    parallel: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="with --nproc: ddp keeps a whole model per process; fsdp shards parameters, "
        "gradients and optimizer state across processes (for models too big for one device)",
    )
    lookahead: Lookahead | None = Field(
        None, description="average the weights with a slow copy every few steps (airbench)"
    )
    privacy: Privacy | None = Field(
        None, description="train with DP-SGD through Opacus: {epsilon, delta, max_grad_norm}"
    )
    compile: bool = Field(
        False,
        description="torch.compile the model for training (a one-off compile, then faster steps)",
    )

    @field_validator("loggers")
    @classmethod
    def _check_loggers(cls, loggers: list[str]) -> list[str]:
        if len(set(loggers)) != len(loggers):
            raise PydanticCustomError("loggers", "names a logger twice")
        return loggers

    @field_validator("threads")
    @classmethod
    def _check_threads(cls, threads: int | str) -> int | str:
        # a field validator, so that the error names train.threads and the value given
        if isinstance(threads, int) and threads < 1:
            raise PydanticCustomError("threads", "should be 'auto' or at least 1")
        return threads


RECIPE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class Recipe(Section):
    """One experiment: data, model and training, plus a seed."""

    name: str = Field("experiment", description="recipe name; runs are stored under runs/<name>/")
    description: str = Field("", description="free text shown in `dlab list recipes` and reports")
    seed: int = Field(0, description="seed for weights, dropout and data order")
    data: DataSection = Field(description="the data set and how to batch it")
    model: ModelSection = Field(description="the model and its hyper-parameters")
    train: TrainConfig = Field(default_factory=TrainConfig, description="how to train")
    tune: TuneConfig | None = Field(None, description="hyper-parameter search (`dlab tune`)")

    @model_validator(mode="after")
    def _check_name(self) -> Recipe:
        if not RECIPE_NAME.match(self.name):
            raise PydanticCustomError(
                "recipe_name",
                "name should use letters, digits, '_', '-' and '.' only (it names a folder)",
            )
        return self

    @model_validator(mode="after")
    def _check_tune_space(self) -> Recipe:
        """Every searched field must exist and accept the bounds of its range."""
        if self.tune is None:
            return self
        base = self.without_tune().to_dict()
        for path, spec in self.tune.space.items():
            kind, values = next(iter(spec.items()))
            for value in values if kind == "choice" else values[:2]:
                data = yaml.safe_load(yaml.safe_dump(base))
                try:
                    apply_override(
                        data, f"{path}={yaml.safe_dump(value, default_flow_style=True).strip()}"
                    )
                    Recipe.model_validate(data)
                except ValidationError as exc:
                    detail = format_validation_error(exc, data, "").removeprefix(": ")
                    raise PydanticCustomError(
                        "space_field",
                        "tune.space.{path}: {value} does not fit the recipe: {detail}",
                        {"path": path, "value": repr(value), "detail": detail},
                    ) from None
                except RecipeError as exc:
                    raise PydanticCustomError(
                        "space_field",
                        "tune.space.{path}: {detail}",
                        {"path": path, "detail": str(exc).removeprefix("override ")},
                    ) from None
        return self

    def without_tune(self) -> Recipe:
        """The same recipe without its tune section (what each trial trains)."""
        return self.model_copy(update={"tune": None})

    def to_dict(self) -> dict[str, Any]:
        """The resolved recipe (every default filled in) as plain data."""
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        """The resolved recipe as YAML; `Recipe.from_yaml(r.to_yaml()) == r`."""
        return dump_yaml(self.to_dict())

    @classmethod
    def from_yaml(cls, text: str, source: str = "<recipe>") -> Recipe:
        """Parse and validate YAML text."""
        return from_dict(parse_yaml(text, source), source)

    def override(self, *assignments: str) -> Recipe:
        """A copy with `a.b=value` overrides applied and validated."""
        data = self.to_dict()
        for assignment in assignments:
            apply_override(data, assignment)
        return from_dict(data, "override")


def from_dict(data: Mapping[str, Any], source: str = "<recipe>") -> Recipe:
    """Validate plain data into a Recipe; a RecipeError with a dotted path otherwise."""
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, data, source)) from None
    except RecursionError:
        raise RecipeError(
            f"{source}: the recipe refers to itself (a recursive YAML alias)"
        ) from None
