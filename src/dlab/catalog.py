"""What `dlab list`, `dlab data` and `dlab recipe doc` show: tables built from the registries."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

from dlab.data.store import RemoteDataset, fetch, import_files
from dlab.errors import DataError, DlabError, did_you_mean
from dlab.recipe import Recipe, field_docs, load_recipe, recipe_dirs
from dlab.registry import DATASETS, MODELS, REGISTRIES

Rows = tuple[list[str], list[list[str]]]


def catalog(what: str) -> Rows:
    """(columns, rows) describing one kind of registered thing."""
    listers: dict[str, Callable[[], Rows]] = {
        "models": _models,
        "datasets": _datasets,
        "recipes": _recipes,
    }
    if what in listers:
        return listers[what]()
    if what in REGISTRIES:
        return ["name", "summary"], [[e.name, e.summary] for e in REGISTRIES[what]]
    choices = [*listers, *REGISTRIES]
    raise DlabError(
        f"list: nothing called '{what}'{did_you_mean(what, choices)}; choose from {', '.join(dict.fromkeys(choices))}"
    )


def _models() -> Rows:
    import torch

    from dlab.models import MNIST_META, count_parameters

    rows = []
    for entry in MODELS:
        if entry.info.get("needs_path"):
            rows.append([entry.name, "its own", "model.path", entry.summary])
            continue
        meta = entry.info.get("example_meta", MNIST_META)
        torch.manual_seed(0)
        model = entry.builder(entry.config(name=entry.name), meta)
        shape = "×".join(map(str, meta.input_shape))
        rows.append(
            [entry.name, f"{count_parameters(model):,}", f"{meta.dataset} ({shape})", entry.summary]
        )
    return ["name", "parameters", "counted for", "summary"], rows


def _availability(entry: Any) -> str:
    """Whether a data set can be used on this machine now, and if not, how to get it."""
    locate = entry.info.get("available")
    remote: RemoteDataset | None = entry.info.get("remote")
    package = entry.info.get("packaged")
    if locate is not None and locate():
        return f"yes ({locate()})"
    if remote is not None and locate is None and remote.present():
        return f"yes ({remote.directory()})"
    if package and importlib.util.find_spec(package):
        return f"packaged ({package})"
    if entry.info.get("source") == "data.path":
        return "your files (data.path)"
    if remote is not None:
        return f"no: dlab data fetch {entry.name}"
    return f"no: pip install {package}" if package else "-"


def _datasets() -> Rows:
    rows = [
        [
            e.name,
            e.info.get("size", "-"),
            e.info.get("splits", "-"),
            e.info.get("source", "-"),
            _availability(e),
            e.summary,
        ]
        for e in DATASETS
    ]
    return ["name", "size", "splits", "source", "local", "summary"], rows


def _recipes() -> Rows:
    rows = []
    seen: set[str] = set()
    for folder in recipe_dirs():
        for path in sorted(folder.glob("*.yaml")):
            if path.stem in seen:
                continue
            seen.add(path.stem)
            try:
                recipe = load_recipe(path)
                rows.append(
                    [path.stem, str(path), recipe.model.name, recipe.data.name, recipe.description]
                )
            except DlabError as exc:
                rows.append([path.stem, str(path), "?", "?", f"invalid: {exc}"])
    return ["name", "path", "model", "data", "description"], rows


def fetch_dataset(name: str, mirrors: list[str] | None, console: Console | None = None) -> Path:
    """Download a registered data set's files with a progress bar."""
    remote = _remote(name)
    console = console or Console()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        console=console,
        transient=not console.is_terminal,
    ) as progress:

        def start(filename: str, total: int | None) -> Callable[[int], None]:
            task = progress.add_task(filename, total=total)
            return lambda n: progress.advance(task, n)

        return fetch(remote, mirrors=mirrors, progress=start)


def import_dataset(name: str, source: Path) -> Path:
    """Copy a registered data set's files from a local folder (verified)."""
    importer = DATASETS.get(name.replace("-", "_")).info.get("importer")
    if importer is not None:  # a data set that checks a folder its own way (FSDD's recordings)
        return importer(Path(source))
    return import_files(_remote(name), source)


def _remote(name: str) -> RemoteDataset:
    entry = DATASETS.get(name.replace("-", "_"))  # `dlab data fetch movielens-100k` too
    remote = entry.info.get("remote")
    if remote is None:
        how = (
            "it ships inside a Python package"
            if entry.info.get("packaged")
            else "it has no published files"
        )
        other = entry.info.get("files_as")  # the same data as downloadable files, by its name
        also = f"; its files are `{other}`: dlab data fetch {other}" if other else ""
        raise DataError(f"data: {name} cannot be fetched: {how}{also}")
    return remote


def recipe_fields(recipe: str | None = None) -> list[list[str]]:
    """Rows (field, default, meaning) for the recipe schema, with a recipe's own components if given."""
    rows = [[n, d, doc] for n, d, doc in field_docs(Recipe) if n not in ("data", "model", "train")]
    rows += [
        ["train." + n, d, doc] for n, d, doc in field_docs(Recipe.model_fields["train"].annotation)
    ]
    if recipe is not None:
        loaded = load_recipe(recipe)
        for prefix, section in (
            ("data.", loaded.data),
            ("model.", loaded.model),
            ("train.optimizer.", loaded.train.optimizer),
            ("train.loss.", loaded.train.loss),
            ("train.scheduler.", loaded.train.scheduler),
        ):
            rows += [[prefix + n, d, doc] for n, d, doc in field_docs(type(section))]
    return rows
