"""Recipes: the typed, frozen, validated description of one experiment, loaded from YAML.

    name: mnist_cnn
    seed: 0
    data:  {name: mnist, batch_size: 64}
    model: {name: seed_cnn, dropout: 0.25}
    train: {epochs: 3, optimizer: {name: adam, lr: 0.001}}

Sections that name a registered component (`data`, `model`, `train.optimizer`, `train.loss`,
`train.scheduler`) are validated against that component's own config class, so a misspelt
key is caught wherever it is. Every field has a default and a description (`dlab recipe doc`).

`schema.py` holds the sections (`section.py` their base, `tuning.py` the `tune:` section); `text.py` parses YAML, applies `-o` overrides and turns
validation errors into one line each; `loading.py` finds recipes by name and loads them. All are
imported from `dlab.recipe`.
"""

from dlab.recipe.loading import field_docs, find_recipe, load_recipe, recipe_dirs
from dlab.recipe.schema import (
    RECIPE_NAME,
    AugmentConfig,
    ComponentConfig,
    DataConfig,
    EarlyStopping,
    ImageDataConfig,
    Lookahead,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    Privacy,
    Recipe,
    SchedulerConfig,
    SoundAugmentConfig,
    TrainConfig,
    from_dict,
)
from dlab.recipe.section import Section
from dlab.recipe.text import apply_override, flatten, format_validation_error, parse_yaml
from dlab.recipe.tuning import SPACE_KINDS, TuneConfig

__all__ = [
    "RECIPE_NAME",
    "SPACE_KINDS",
    "AugmentConfig",
    "ComponentConfig",
    "DataConfig",
    "EarlyStopping",
    "ImageDataConfig",
    "Lookahead",
    "LossConfig",
    "ModelConfig",
    "OptimizerConfig",
    "Privacy",
    "Recipe",
    "SchedulerConfig",
    "Section",
    "SoundAugmentConfig",
    "TrainConfig",
    "TuneConfig",
    "apply_override",
    "field_docs",
    "find_recipe",
    "flatten",
    "format_validation_error",
    "from_dict",
    "load_recipe",
    "parse_yaml",
    "recipe_dirs",
]
