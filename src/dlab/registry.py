"""Name -> builder registries for models, data sets, optimizers, losses, schedulers and tasks.

Each entry pairs a builder with a pydantic config class (its parameters, defaults and docs), so a
recipe section `{name: seed_cnn, dropout: 0.2}` is validated against exactly that component's
fields. Built-in entries live in the modules that define them; a registry imports those modules
the first time it is asked for a name, which keeps `import dlab` light and free of cycles.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from dlab.errors import RecipeError, did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered component: its name, builder, config class and a one-line summary."""

    name: str
    builder: Callable[..., T]
    config: type
    summary: str
    info: Mapping[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """A named collection of builders of one kind (e.g. 'model')."""

    def __init__(
        self,
        kind: str,
        base_config: type | None = None,
        modules: tuple[str, ...] = (),
        plural: str | None = None,
    ):
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self.base_config = base_config
        self._modules = modules
        self._loaded = False
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, config: type | None = None, summary: str = "", **info: Any
    ) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register `builder(config, ...)` under `name` with its config class."""

        def decorate(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            cfg = config if config is not None else self.base_config
            if cfg is None:
                raise ValueError(f"{self.kind} '{name}' needs a config class")
            text = summary or ((builder.__doc__ or "").strip().splitlines() or [""])[0]
            self._entries[name] = Entry(name, builder, cfg, text, dict(info))
            return builder

        return decorate

    def _load_builtins(self) -> None:
        if not self._loaded:
            self._loaded = True
            for module in self._modules:
                if module.endswith(".*"):  # every module of a package: a new file registers itself
                    package = importlib.import_module(module[:-2])
                    for found in pkgutil.iter_modules(package.__path__, f"{package.__name__}."):
                        importlib.import_module(found.name)
                else:
                    importlib.import_module(module)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._load_builtins()
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load_builtins()
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        self._load_builtins()
        return iter(sorted(self._entries.values(), key=lambda e: e.name))

    def get(self, name: str) -> Entry[T]:
        """The entry called `name`; a RecipeError naming the closest valid one otherwise."""
        self._load_builtins()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            hint = did_you_mean(name, self._entries)
            raise RecipeError(
                f"unknown {self.kind} '{name}'{hint}; see `dlab list {self.plural}`"
            ) from None

    def config_class(self, name: str) -> type:
        """The pydantic config class of entry `name`."""
        return self.get(name).config

    def build(self, config: Any, *args: Any, **kwargs: Any) -> T:
        """Call the builder registered under `config.name` with the config and extra arguments."""
        return self.get(config.name).builder(config, *args, **kwargs)


# The registries. Their built-in entries are imported on first use (see Registry._load_builtins).
MODELS: Registry[Any] = Registry(
    "model",
    modules=(
        "dlab.models.mlp",
        "dlab.models.cnn",
        "dlab.models.cnn1d",
        "dlab.models.resnet",
        "dlab.models.airbench",
        "dlab.models.recurrent",
        "dlab.models.transformer",
        "dlab.models.gpt",
        "dlab.models.pretrained",
        "dlab.models.recommenders",
        "dlab.models.tabular",
        "dlab.models.autoencoders",
        "dlab.models.unet",
        "dlab.models.centernet",
    ),
)
DATASETS: Registry[Any] = Registry(
    "dataset",
    modules=(
        "dlab.data.mnist",
        "dlab.data.cifar",
        "dlab.data.small",
        "dlab.data.folder",
        "dlab.data.text",
        "dlab.data.language",
        "dlab.data.pairs",
        "dlab.data.series",
        "dlab.data.speech",
        "dlab.data.sounds",
        "dlab.data.ratings",
        "dlab.data.movielens",
        "dlab.data.tables",
        "dlab.data.tabular_sets",
        "dlab.data.scenes",
        "dlab.data.annotated",
    ),
)
OPTIMIZERS: Registry[Any] = Registry("optimizer", modules=("dlab.training.optim",))
SCHEDULERS: Registry[Any] = Registry("scheduler", modules=("dlab.training.optim",))
# a task that brings its own loss (detection's focal loss, segmentation's per-pixel one) registers
# it in its own file
LOSSES: Registry[Any] = Registry(
    "loss",
    modules=("dlab.training.losses", "dlab.tasks.detection", "dlab.tasks.segmentation"),
    plural="losses",
)
TASKS: Registry[Any] = Registry(
    "task",
    base_config=dict,  # a task has no recipe section of its own: the data set names it
    modules=("dlab.tasks.*",),  # every file in dlab/tasks/
)

REGISTRIES: dict[str, Registry[Any]] = {
    "models": MODELS,
    "datasets": DATASETS,
    "optimizers": OPTIMIZERS,
    "schedulers": SCHEDULERS,
    "losses": LOSSES,
    "tasks": TASKS,
}
