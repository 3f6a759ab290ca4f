"""Recipes from files and text: YAML parsing, `-o a.b=value` overrides, finding recipes by name,
and validation errors as one line that names the field and the valid choices."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from dlab.errors import RecipeError, did_you_mean
from dlab.recipe import ComponentConfig, Recipe, Section


def parse_yaml(text: str, source: str) -> dict[str, Any]:
    """YAML text -> a mapping, or a RecipeError naming the line."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{source}: not valid YAML{where}: {problem}") from None
    except RecursionError:
        raise RecipeError(f"{source}: YAML nests too deeply") from None
    if data is None:
        raise RecipeError(
            f"{source}: the recipe is empty; it needs at least data and model sections"
        )
    if not isinstance(data, dict):
        raise RecipeError(
            f"{source}: a recipe is a mapping of sections (data, model, train), not a {type(data).__name__}"
        )
    return data


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


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _clean_loc(loc: Sequence[Any], data: Any) -> list[str]:
    """The part of a pydantic error location that names keys of the recipe (no union tags)."""
    path: list[str] = []
    node = data
    for i, part in enumerate(loc):
        if (isinstance(node, Mapping) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            path.append(str(part))
            node = node[part]
        elif i == len(loc) - 1 and isinstance(part, str) and part.isidentifier():
            path.append(part)  # a missing field
            break
        else:
            break
    return path


def format_validation_error(exc: ValidationError, data: Any, source: str) -> str:
    """One line: '<source>: <dotted.path>: <problem> (got <value>)', plus a count of the rest."""
    errors = exc.errors(include_url=False)
    seen: dict[str, str] = {}
    for err in errors:
        path = _clean_loc(err["loc"], data)
        ctx = err.get("ctx") or {}
        kind = err["type"]
        if kind == "unknown_key":
            path.append(ctx["key"])
            message = f"unknown key{ctx.get('hint', '')}"
        elif kind in ("unknown_name", "missing_name"):
            path.append("name")
            message = err["msg"]
        elif kind == "missing":
            message = "missing; this field has no default"
        else:
            message = (
                err["msg"].replace("Input should be", "should be").replace("Value error, ", "")
            )
            message = message[0].lower() + message[1:] if message else message
            if kind not in (
                "unknown_name",
                "missing_name",
                "recipe_name",
                "section_type",
                "space_kind",
                "space_values",
                "empty_space",
                "space_field",
            ):
                message += f" (got {_describe(err.get('input'))})"
        key = ".".join(path) or "(top level)"
        seen.setdefault(key, message)
    first_key, first_message = next(iter(seen.items()))
    more = (
        f" (and {len(seen) - 1} more problem{'s' if len(seen) > 2 else ''})"
        if len(seen) > 1
        else ""
    )
    where = (
        "" if first_message.startswith("tune.space.") else f"{first_key}: "
    )  # the message names its field
    return f"{source}: {where}{first_message}{more}"


_OVERRIDE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)=(.*)$", re.DOTALL)
_COMPONENT_PATHS = {
    ("data",),
    ("model",),
    ("train", "optimizer"),
    ("train", "loss"),
    ("train", "scheduler"),
}


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """Apply one `dotted.key=value` override in place; the value is parsed as YAML."""
    match = _OVERRIDE.match(assignment.strip())
    if not match:
        raise RecipeError(
            f"override {assignment!r} should look like section.key=value, e.g. train.optimizer.lr=0.01"
        )
    keys = match.group(1).split(".")
    try:
        value = yaml.safe_load(match.group(2)) if match.group(2).strip() else None
    except yaml.YAMLError:
        value = match.group(2)  # e.g. an unquoted string with a colon: keep it as text
    if isinstance(value, float) and not math.isfinite(value):
        raise RecipeError(f"override {match.group(1)}: {match.group(2)!r} is not a finite number")
    node: Any = data
    for depth, key in enumerate(keys[:-1]):
        child = node.get(key) if isinstance(node, dict) else None
        if isinstance(child, str) and tuple(keys[: depth + 1]) in _COMPONENT_PATHS:
            child = {"name": child}  # shorthand `optimizer: sgd` grows into a section
        if child is None:
            child = {}
        if not isinstance(child, dict):
            raise RecipeError(
                f"override {match.group(1)}: {'.'.join(keys[: depth + 1])} is a value, not a section"
            )
        node[key] = child
        node = child
    last = keys[-1]
    path = tuple(keys)
    switching_component = (
        path[:-1] in _COMPONENT_PATHS and last == "name" and node.get("name") != value
    )
    if switching_component:
        node.clear()  # the old component's settings do not apply to the new one
    if path in _COMPONENT_PATHS and isinstance(value, str) and isinstance(node.get(last), dict):
        value = {"name": value} if node[last].get("name") != value else node[last]
    node[last] = value


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
    raise RecipeError(
        f"recipe not found: {name_or_path}{did_you_mean(path.stem, known)}; see `dlab list recipes`"
    )


def recipe_dirs() -> list[Path]:
    """Folders searched for recipes by name: ./recipes, $DLAB_RECIPES_DIR, the source checkout's."""
    import os

    candidates = [Path.cwd() / "recipes"]
    if os.environ.get("DLAB_RECIPES_DIR"):
        candidates.append(Path(os.environ["DLAB_RECIPES_DIR"]))
    candidates.append(Path(__file__).resolve().parents[3] / "recipes")
    unique: list[Path] = []
    for folder in candidates:
        if folder.is_dir() and folder.resolve() not in [u.resolve() for u in unique]:
            unique.append(folder)
    return unique


def load_recipe(
    source: str | Path | Mapping[str, Any] | Recipe, overrides: Sequence[str] = ()
) -> Recipe:
    """A validated Recipe from a path, a shipped recipe's name, a mapping or a Recipe."""
    if isinstance(source, Recipe):
        return source.override(*overrides) if overrides else source
    if isinstance(source, Mapping):
        data = dict(source)
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
