"""The package as users install it: its name, its extras and their messages, the recipes and
lessons it carries, and `dlab recipe copy`. (tests/e2e/test_wheel.py installs the real wheel.)"""

from __future__ import annotations

import importlib.metadata
import re
import sys

import pytest
from conftest import PYPROJECT, ROOT, requirement_names

import dlab
from dlab.cli import main
from dlab.errors import DlabError, RecipeError
from dlab.extras import DISTRIBUTION, EXTRAS, install_line, require
from dlab.lessons import find, lesson_files, lessons_dir
from dlab.recipe.loading import copy_recipe, find_recipe, shipped_recipes_dir

DEVELOPMENT_ONLY = {"dev", "mutation", "bench"}


def _requirement_names(extra: str) -> set[str]:
    """The distributions an extra lists, its references to other extras of ours expanded."""
    names: set[str] = set()
    for line in PYPROJECT["project"]["optional-dependencies"][extra]:
        if requirement_names([line]) == {DISTRIBUTION}:
            names |= _requirement_names(re.search(r"\[(\w+)\]", line).group(1))
        else:
            names |= requirement_names([line])
    return names


def test_the_distribution_name_is_ours_and_the_version_is_written_once():
    assert PYPROJECT["project"]["name"] == DISTRIBUTION == "dlab-toolkit"
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "dlab.__version__"}
    assert importlib.metadata.version(DISTRIBUTION) == dlab.__version__
    assert f"## {dlab.__version__}" in (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"pip install {DISTRIBUTION}" in readme and "pip install dlab " not in readme
    assert not re.search(r"""pip install ["']dlab\[""", readme)  # the other project's name


def test_every_user_extra_is_known_with_the_modules_its_requirements_install():
    extras = set(PYPROJECT["project"]["optional-dependencies"]) - DEVELOPMENT_ONLY
    assert set(EXTRAS) == extras
    provided = importlib.metadata.packages_distributions()
    for extra, modules in EXTRAS.items():
        listed = _requirement_names(extra)
        for module in modules:
            installed_by = {d.lower().replace("_", "-") for d in provided.get(module, [])}
            assert installed_by & listed, f"{extra}: {module} comes from {installed_by}, not {listed}"


def test_require_names_what_is_missing_and_the_command_that_installs_it(monkeypatch):
    require("tune", "tune")  # installed here: nothing to say
    monkeypatch.setitem(sys.modules, "optuna", None)  # import optuna now fails, as if absent
    with pytest.raises(DlabError) as info:
        require("tune", "tune")
    assert str(info.value) == 'tune needs optuna: pip install "dlab-toolkit[tune]"'
    with pytest.raises(RecipeError, match=r"^train\.privacy needs opacus: "):
        monkeypatch.setitem(sys.modules, "opacus", None)
        require("privacy", "train.privacy", error=RecipeError)
    assert install_line("serve") == 'pip install "dlab-toolkit[serve]"'


@pytest.mark.parametrize(
    ("argv", "module", "expected"),
    [
        (["tune", "sst2_lstm"], "optuna", 'tune needs optuna: pip install "dlab-toolkit[tune]"'),
        (["serve", "nowhere"], "fastapi", 'serve needs fastapi: pip install "dlab-toolkit[serve]"'),
        (
            ["export", "nowhere"],
            "onnxruntime",
            'export needs onnxruntime: pip install "dlab-toolkit[export]"',
        ),
        (
            ["federate", "mnist_cnn"],
            "flwr",
            "federate (Flower's simulation engine) needs flwr: "
            'pip install "dlab-toolkit[federated]"',
        ),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else None,
)
def test_a_verb_whose_extra_is_missing_says_one_line_before_any_work(
    argv, module, expected, monkeypatch, capsys, tmp_path
):
    monkeypatch.setitem(sys.modules, module, None)
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == f"dlab: error: {expected}"
    assert not (tmp_path / "runs").exists()  # nothing was started


def test_the_recipes_and_lessons_live_inside_the_package():
    package = ROOT / "src" / "dlab"
    assert shipped_recipes_dir() == package / "recipes"
    assert lessons_dir() == package / "lessons"
    assert len(list(shipped_recipes_dir().glob("*.yaml"))) >= 40 and len(lesson_files()) >= 14
    data = PYPROJECT["tool"]["setuptools"]["package-data"]["dlab"]
    assert "recipes/*.yaml" in data and "lessons/*.md" in data
    assert not (ROOT / "recipes").exists() and not (ROOT / "docs" / "lessons").exists()
    shipped = {path for pattern in data for path in package.glob(pattern)}
    missing = sorted(str(p.relative_to(package)) for p in set(lessons_dir().rglob("*.md")) - shipped)
    assert not missing, f"package-data leaves these out of the wheel: {missing}"


def test_a_lesson_is_found_by_its_number_with_or_without_the_zero():
    assert find("1") == find("01") == lessons_dir() / "01-linear-and-activation.md"
    assert find("12").stem == "12-transformer"
    with pytest.raises(DlabError, match="none called '99'"):
        find("99")


def test_recipe_copy_writes_an_editable_copy_that_the_name_then_finds(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    shipped = shipped_recipes_dir() / "mnist_cnn.yaml"
    assert main(["recipe", "copy", "mnist_cnn"]) == 0
    copy = tmp_path / "recipes" / "mnist_cnn.yaml"
    assert copy.read_text(encoding="utf-8") == shipped.read_text(encoding="utf-8")  # comments too
    assert "`dlab train mnist_cnn` in this folder now trains your copy" in capsys.readouterr().out
    assert find_recipe("mnist_cnn").resolve() == copy.resolve()

    copy.write_text(copy.read_text(encoding="utf-8") + "# mine\n", encoding="utf-8")
    assert main(["recipe", "copy", "mnist_cnn"]) == 2
    assert "recipes/mnist_cnn.yaml: exists; --force replaces it" in capsys.readouterr().err
    assert copy.read_text(encoding="utf-8").endswith("# mine\n")  # nothing lost
    # --force copies the shipped recipe again, not the copy onto itself
    assert copy_recipe("mnist_cnn", "recipes", force=True) == copy.relative_to(tmp_path)
    assert copy.read_text(encoding="utf-8") == shipped.read_text(encoding="utf-8")

    assert main(["recipe", "copy", "mnist_cnn", "mine"]) == 0
    assert "train it with `dlab train mine/mnist_cnn.yaml`" in capsys.readouterr().out
    with pytest.raises(RecipeError, match="is the recipe itself"):
        copy_recipe(copy, "recipes")
    (tmp_path / "afile").write_text("")
    with pytest.raises(RecipeError, match="^afile: is a file, not a folder$"):
        copy_recipe("mnist_cnn", "afile")


def test_an_old_recipes_path_points_to_the_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RecipeError) as info:
        find_recipe("recipes/mnist_cnn.yaml")
    assert str(info.value) == (
        "recipe not found: recipes/mnist_cnn.yaml; a shipped recipe is named without a folder: "
        "`mnist_cnn` (`dlab recipe copy mnist_cnn` writes a copy to edit)"
    )
