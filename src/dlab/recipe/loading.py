"""Recipes from files: finding recipes by name, loading one with overrides, and the field
documentation `dlab recipe doc` prints."""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from dlab.errors import RecipeError, did_you_mean
from dlab.recipe.schema import ComponentConfig, Recipe, Section, from_dict
from dlab.recipe.text import apply_override, parse_yaml


def find_recipe(name_or_path: str | Path) -> Path:
    """A recipe path from a path or a shipped recipe's name (e.g. 'mnist_cnn')."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    if path.suffix in ("", ".yaml", ".yml") and len(path.parts) == 1:
        for folder in recipe_dirs():
            for candidate in (folder / path.name, folder / f"{path.name}.yaml"):
                if candidate.is_file():
                    return candidate
    if path.exists():
        raise RecipeError(f"{path}: is a directory, not a recipe file")
    known = [p.stem for folder in recipe_dirs() for p in folder.glob("*.yaml")]
    if len(path.parts) > 1 and path.stem in known:
        # `recipes/mnist_cnn.yaml` from an old checkout's instructions, or a folder that is missing
        raise RecipeError(
            f"recipe not found: {name_or_path}; a shipped recipe is named without a folder: "
            f"`{path.stem}` (`dlab recipe copy {path.stem}` writes a copy to edit)"
        )
    raise RecipeError(
        f"recipe not found: {name_or_path}{did_you_mean(path.stem, known)}; see `dlab list recipes`"
    )


def shipped_recipes_dir() -> Path:
    """The recipes that ship inside the package (the same files in a checkout and in a wheel)."""
    return Path(str(resources.files("dlab") / "recipes"))


def recipe_dirs() -> list[Path]:
    """Folders searched for recipes by name, in order: ./recipes, $DLAB_RECIPES_DIR, the shipped."""
    candidates = [Path.cwd() / "recipes"]
    if os.environ.get("DLAB_RECIPES_DIR"):
        candidates.append(Path(os.environ["DLAB_RECIPES_DIR"]))
    candidates.append(shipped_recipes_dir())
    unique: list[Path] = []
    for folder in candidates:
        if folder.is_dir() and folder.resolve() not in [u.resolve() for u in unique]:
            unique.append(folder)
    return unique


def copy_recipe(name_or_path: str | Path, folder: str | Path = "recipes", force: bool = False) -> Path:
    """Write an editable copy of a recipe (comments and all) into `folder`; return its path.

    The default folder, ./recipes, is the first searched by name, so afterwards `dlab train NAME`
    run from this folder trains the copy.
    """
    from dlab._io import atomic_write_text

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise RecipeError(f"{folder}: is a file, not a folder")
    source = find_recipe(name_or_path)
    target = folder / f"{source.stem}.yaml"
    if target.exists() and target.resolve() == source.resolve():
        # an earlier copy shadows the name: copy what the name meant without it (the shipped one)
        others = [d for d in recipe_dirs() if d.resolve() != folder.resolve()]
        found = [d / f"{source.stem}.yaml" for d in others if (d / f"{source.stem}.yaml").is_file()]
        if Path(name_or_path).is_file() or not found:
            raise RecipeError(f"{target}: is the recipe itself; give another folder")
        source = found[0]
    if target.exists() and not force:
        raise RecipeError(f"{target}: exists; --force replaces it with a fresh copy of {source}")
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(target, source.read_text(encoding="utf-8"))
    return target


def load_recipe(
    source: str | Path | Mapping[str, Any] | Recipe, overrides: Sequence[str] = ()
) -> Recipe:
    """A validated Recipe from a path, a shipped recipe's name, a mapping or a Recipe."""
    if isinstance(source, Recipe):
        return source.override(*overrides) if overrides else source
    if isinstance(source, Mapping):
        data = copy.deepcopy(dict(source))  # overrides write into nested sections: not the caller's
        label = "<recipe>"
    else:
        path = find_recipe(source)
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise RecipeError(f"{path}: not a UTF-8 text file") from None
        data = parse_yaml(text, str(path))
        data.setdefault("name", path.stem)
        label = str(path)
    for assignment in overrides:
        apply_override(data, assignment)
    return from_dict(data, label)


def field_docs(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """(dotted name, default, description) for every field of a section, recursively."""
    rows: list[tuple[str, str, str]] = []
    for name, info in model.model_fields.items():
        default = (
            "required" if info.is_required() else repr(info.get_default(call_default_factory=True))
        )
        rows.append((prefix + name, default, info.description or ""))
        annotation = info.annotation
        if (
            isinstance(annotation, type)
            and issubclass(annotation, Section)
            and not issubclass(annotation, ComponentConfig)
        ):
            rows.extend(field_docs(annotation, prefix + name + "."))
    return rows
