"""Recipe text: YAML parsing, `-o a.b=value` overrides, and validation errors as one line that
names the field and the valid choices. Pure functions of plain data: the schema uses them."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from dlab.errors import RecipeError


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
    _check_size(data, source)
    return data


class _RecipeDumper(yaml.SafeDumper):
    """PyYAML with `allow_unicode` writes NEL, LS and PS raw inside single quotes, where its own
    reader takes them for line breaks ('\x85' came back as ' '): such strings go double-quoted,
    where they are escaped (\\N, \\L, \\P)."""


def _represent_text(dumper: yaml.SafeDumper, text: str) -> yaml.ScalarNode:
    style = '"' if any(c in text for c in "\x85\u2028\u2029") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_RecipeDumper.add_representer(str, _represent_text)


def dump_yaml(data: Any) -> str:
    """Plain data as readable YAML (unicode kept, key order kept) that reads back unchanged."""
    return yaml.dump(data, Dumper=_RecipeDumper, sort_keys=False, allow_unicode=True)


MAX_VALUES = 20_000  # values in a recipe once YAML aliases are expanded


def _check_size(data: Any, source: str) -> None:
    """Refuse a recipe that expands beyond MAX_VALUES values: YAML aliases can nest a 1 KB file
    into billions of values (a "billion laughs"), which validating or printing would never
    finish. The walk stops at the limit, so it costs at most MAX_VALUES steps."""
    seen, stack = 0, [data]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > MAX_VALUES:
            raise RecipeError(
                f"{source}: the recipe expands to more than {MAX_VALUES:,} values "
                "(nested YAML aliases?); write the values out"
            )
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _clean_loc(loc: Sequence[Any], data: Any, missing: bool = False) -> list[str]:
    """The part of a pydantic error location that names keys of the recipe: no union tags
    (`train.threads.int`), and the field's own name where a required field is `missing`."""
    path: list[str] = []
    node = data
    for i, part in enumerate(loc):
        if (isinstance(node, Mapping) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            path.append(str(part))
            node = node[part]
        elif missing and i == len(loc) - 1 and isinstance(part, str):
            path.append(part)  # the missing field
            break
        else:
            break
    return path


# kinds whose message says everything: no "(got ...)" after it
_NO_INPUT = {
    "recipe_name",
    "section_type",
    "space_kind",
    "space_values",
    "empty_space",
    "space_field",
}


def format_validation_error(exc: ValidationError, data: Any, source: str) -> str:
    """One line: '<source>: <dotted.path>: <problem> (got <value>)', plus a count of the rest.
    The alternatives of a union (`threads: int | 'auto'`) are one problem: 'should be a valid
    integer or should be 'auto''."""
    problems: dict[str, list[str]] = {}
    given: dict[str, str] = {}
    for err in exc.errors(include_url=False):
        kind = err["type"]
        path = _clean_loc(err["loc"], data, missing=kind == "missing")
        ctx = err.get("ctx") or {}
        shows_input = False
        if kind == "unknown_key":
            path.append(ctx["key"])
            message = f"unknown key{ctx['hint']}"
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
            shows_input = kind not in _NO_INPUT
        key = ".".join(path) or "(top level)"
        if shows_input:  # once per field, after all of its alternatives
            given.setdefault(key, f" (got {_describe(err.get('input'))})")
        if message not in problems.setdefault(key, []):
            problems[key].append(message)
    first_key, first_messages = next(iter(problems.items()))
    first_message = " or ".join(first_messages) + given.get(first_key, "")
    more = (
        f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
        if len(problems) > 1
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


# data fields that describe which data (and how much of it), not how to load it: they go on a switch
_WHICH_DATA = {"name", "path", "val_size", "test_size", "limit"}


def _settings_kept_by(section: tuple[str, ...], name: Any, node: dict[str, Any]) -> dict[str, Any]:
    """What survives `data.name=NEW`: the loading fields the new data set's config also has.

    Batch size, block size, the tokenizer and the like describe how to load, not what, so
    `-o data.name=text_file -o data.path=my.txt` on the SmolLM2 recipe keeps its pretrained
    tokenizer. A model's, optimizer's, loss's or scheduler's settings are its own and all go.
    """
    from dlab.registry import DATASETS

    if section != ("data",) or not isinstance(name, str) or name not in DATASETS:
        return {}
    fields = DATASETS.config_class(name).model_fields
    return {k: v for k, v in node.items() if k in fields and k not in _WHICH_DATA}


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
        _check_size(value, f"override {match.group(1)}")
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
        kept = _settings_kept_by(path[:-1], value, node)
        node.clear()  # the old component's settings do not apply to the new one ...
        node.update(kept)  # ... except a data set's loading settings that the new one shares
    if path in _COMPONENT_PATHS and isinstance(value, str) and isinstance(node.get(last), dict):
        value = {"name": value} if node[last].get("name") != value else node[last]
    node[last] = value


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A recipe's nested sections as dotted fields, the names overrides use:
    {'train': {'optimizer': {'lr': 0.01}}} -> {'train.optimizer.lr': 0.01}. An empty section
    is a field of its own ({})."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
