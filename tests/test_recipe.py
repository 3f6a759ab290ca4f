"""Recipes: validation with precise messages, overrides, YAML round trips, and fuzzing."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import yaml
from conftest import RECIPES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dlab.errors import DlabError, RecipeError
from dlab.recipe import Recipe, apply_override, from_dict, load_recipe
from dlab.registry import DATASETS, LOSSES, MODELS, OPTIMIZERS, SCHEDULERS

MINIMAL = {"data": {"name": "mnist_sample"}, "model": {"name": "cnn"}}


def test_minimal_recipe_fills_every_default():
    recipe = from_dict(MINIMAL)
    assert recipe.train.epochs == 10
    assert recipe.train.optimizer.name == "adam" and recipe.train.optimizer.lr == 1e-3
    assert recipe.model.channels == [32, 64] and recipe.model.hidden == 128
    assert recipe.data.batch_size == 64


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_shipped_recipe_loads_and_round_trips(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    again = Recipe.from_yaml(recipe.to_yaml())
    assert again == recipe
    assert again.to_yaml() == recipe.to_yaml()


def test_shipped_recipes_exist():
    assert {"demo", "mnist_cnn", "mnist_mlp"} <= {p.stem for p in RECIPES.glob("*.yaml")}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {**MINIMAL, "model": {"name": "cnn", "dropot": 0.1}},
            "model.dropot: unknown key (did you mean 'dropout'?)",
        ),
        ({**MINIMAL, "train": {"epochz": 3}}, "train.epochz: unknown key (did you mean 'epochs'?)"),
        ({**MINIMAL, "trian": {}}, "trian: unknown key (did you mean 'train'?)"),
        (
            {**MINIMAL, "train": {"optimizer": {"name": "sgd", "momentun": 0.9}}},
            "train.optimizer.momentun: unknown key (did you mean 'momentum'?)",
        ),
        ({**MINIMAL, "train": {"epochs": "three"}}, "train.epochs: should be a valid integer"),
        (
            {**MINIMAL, "train": {"optimizer": {"name": "adam", "lr": -0.1}}},
            "train.optimizer.lr: should be greater than 0 (got -0.1)",
        ),
        (
            {**MINIMAL, "train": {"optimizer": {"name": "adam", "lr": math.inf}}},
            "train.optimizer.lr: should be a finite number",
        ),
        (
            {**MINIMAL, "model": {"name": "cnm"}},
            "model.name: unknown model 'cnm' (did you mean 'cnn'?); see `dlab list models`",
        ),
        (
            {**MINIMAL, "train": {"optimizer": "adm"}},
            "train.optimizer.name: unknown optimizer 'adm' (did you mean 'adam'?)",
        ),
        ({"model": {"name": "cnn"}}, "data: missing"),
        (
            {**MINIMAL, "train": {"optimizer": {"name": "sgd", "nesterov": True}}},
            "nesterov: true needs momentum > 0",
        ),
        ({**MINIMAL, "name": "a/b"}, "name should use letters"),
    ],
)
def test_invalid_recipes_name_the_field(data, message):
    with pytest.raises(RecipeError) as info:
        from_dict(data, "r.yaml")
    text = str(info.value)
    assert text.startswith("r.yaml: ")
    assert message in text
    assert "\n" not in text


def test_several_problems_are_counted_on_one_line():
    with pytest.raises(RecipeError, match=r"\(and 1 more problem\)$"):
        from_dict({**MINIMAL, "train": {"epochs": 0, "log_every": 0}})


def test_overrides_are_typed_and_validated():
    recipe = load_recipe(
        RECIPES / "mnist_cnn.yaml",
        ["train.optimizer.lr=0.1", "model.channels=[8, 16]", "train.grad_clip=1"],
    )
    assert recipe.train.optimizer.lr == 0.1
    assert recipe.model.channels == [8, 16]
    assert recipe.train.grad_clip == 1.0
    with pytest.raises(RecipeError, match="train.optimizer.lr: should be greater than 0"):
        load_recipe(RECIPES / "mnist_cnn.yaml", ["train.optimizer.lr=-1"])
    with pytest.raises(RecipeError, match=r"train.epochs: should be a valid integer"):
        load_recipe(RECIPES / "mnist_cnn.yaml", ["train.epochs=many"])
    with pytest.raises(RecipeError, match="unknown key"):
        load_recipe(RECIPES / "mnist_cnn.yaml", ["train.lr=0.1"])


def test_switching_a_component_drops_the_old_components_settings():
    recipe = load_recipe(
        RECIPES / "mnist_cnn.yaml", ["train.optimizer.name=sgd", "train.optimizer.momentum=0.9"]
    )
    assert recipe.train.optimizer.name == "sgd" and recipe.train.optimizer.momentum == 0.9
    assert recipe.train.optimizer.lr == 0.01  # sgd's own default, not adam's 0.002
    assert (
        load_recipe(RECIPES / "mnist_cnn.yaml", ["train.scheduler=cosine"]).train.scheduler.name
        == "cosine"
    )
    switched = load_recipe(RECIPES / "mnist_cnn.yaml", ["model.name=mlp"])
    assert switched.model.name == "mlp" and switched.model.hidden == [128, 64]


def test_switching_the_data_set_keeps_how_to_load_but_not_which_data():
    """`-o data.name=text_file` on the SmolLM2 recipe must keep its pretrained tokenizer and batch
    sizes (before, the tokenizer fell back to `word` and generation indexed past its vocabulary);
    the old data set's split sizes and path do not carry over."""
    recipe = load_recipe("smollm2_shakespeare_lora", ["data.name=text_file", "data.path=my.txt"])
    assert recipe.data.name == "text_file" and recipe.data.path == "my.txt"
    assert recipe.data.tokenizer.kind == "pretrained" and recipe.data.tokenizer.path == "smollm2"
    assert (recipe.data.batch_size, recipe.data.eval_batch_size) == (8, 8)
    mnist = load_recipe(RECIPES / "mnist_cnn.yaml", [])
    assert mnist.data.val_size == 5000  # a count fit for MNIST ...
    digits = load_recipe(RECIPES / "mnist_cnn.yaml", ["data.name=digits"]).data
    assert digits.val_size == 0.1 and digits.batch_size == mnist.data.batch_size  # ... not digits
    with pytest.raises(RecipeError, match="data.name: unknown dataset 'nope'"):
        load_recipe(RECIPES / "mnist_cnn.yaml", ["data.name=nope"])


def test_naming_the_component_already_chosen_keeps_its_settings():
    """`-o train.optimizer.name=adam` on a recipe already on Adam changes nothing; only a switch
    to another component drops the old settings."""
    recipe = load_recipe(RECIPES / "mnist_cnn.yaml", ["train.optimizer.name=adam"])
    assert recipe.train.optimizer.name == "adam" and recipe.train.optimizer.lr == 0.002
    shorthand = load_recipe(RECIPES / "mnist_cnn.yaml", ["train.optimizer=adam"])
    assert shorthand.train.optimizer.lr == 0.002


def test_a_shorthand_component_grows_into_a_section_before_its_field_is_set():
    """mnist_cnn says `scheduler: onecycle`; setting one of its fields keeps the one-cycle."""
    recipe = load_recipe(RECIPES / "mnist_cnn.yaml", ["train.scheduler.pct_start=0.2"])
    assert recipe.train.scheduler.name == "onecycle"
    assert recipe.train.scheduler.pct_start == 0.2


def test_override_values_may_hold_equals_signs_and_text_yaml_cannot_parse():
    recipe = load_recipe(RECIPES / "mnist_cnn.yaml", ["description=lr=0.1 and a=b"])
    assert recipe.description == "lr=0.1 and a=b"
    # not valid YAML ("mapping values are not allowed here"): kept as the text typed, not None
    recipe = load_recipe(RECIPES / "mnist_cnn.yaml", ["description=risk: high: low"])
    assert recipe.description == "risk: high: low"
    with pytest.raises(RecipeError, match=r"train.optimizer.lr: .*\(got '\[0.1'\)"):
        load_recipe(RECIPES / "mnist_cnn.yaml", ["train.optimizer.lr=[0.1"])


@pytest.mark.parametrize("bad", ["lr", "train..lr=1", "=3", "train.epochs"])
def test_malformed_overrides(bad):
    with pytest.raises(RecipeError, match="should look like section.key=value"):
        apply_override({}, bad)


def test_override_through_a_value_is_refused():
    with pytest.raises(RecipeError, match="train.epochs is a value, not a section"):
        load_recipe(RECIPES / "mnist_cnn.yaml", ["train.epochs.x=1"])


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(RecipeError, match="recipe not found: nope.yaml"):
        load_recipe("nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("data: {name: mnist\nmodel: [")
    with pytest.raises(RecipeError, match=r"broken.yaml: not valid YAML at line \d+"):
        load_recipe(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(RecipeError, match="a recipe is a mapping"):
        load_recipe(listed)
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(RecipeError, match="not a UTF-8 text file"):
        load_recipe(binary)


def test_recipes_are_frozen():
    recipe = from_dict(MINIMAL)
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen-instance error
        recipe.train.epochs = 3  # type: ignore[misc]


def test_early_stopping_direction():
    recipe = from_dict({**MINIMAL, "train": {"early_stopping": {"monitor": "val_accuracy"}}})
    assert recipe.train.early_stopping.direction() == "max"
    recipe = from_dict({**MINIMAL, "train": {"early_stopping": {}}})
    assert recipe.train.early_stopping.direction() == "min"


# --- fuzzing: random documents and random values may only ever raise dlab's own error ------------

yaml_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
)
yaml_values = st.recursive(
    yaml_scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _only_dlab_errors(load):
    try:
        return load()
    except DlabError:
        return None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_random_text_documents(text):
    _only_dlab_errors(lambda: Recipe.from_yaml(text))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(yaml_values)
def test_random_yaml_documents(value):
    _only_dlab_errors(lambda: Recipe.from_yaml(yaml.safe_dump(value)))


def _every_field_path() -> list[tuple[str, ...]]:
    paths = [("name",), ("seed",), ("description",)]
    for registry, prefix in (
        (DATASETS, ("data",)),
        (MODELS, ("model",)),
        (OPTIMIZERS, ("train", "optimizer")),
        (LOSSES, ("train", "loss")),
        (SCHEDULERS, ("train", "scheduler")),
    ):
        for entry in registry:
            paths += [
                (*prefix, "@" + entry.name, field)
                for field in entry.config.model_fields
                if field != "name"
            ]
    from dlab.recipe import EarlyStopping, TrainConfig

    paths += [("train", f) for f in TrainConfig.model_fields]
    paths += [("train", "early_stopping", f) for f in EarlyStopping.model_fields]
    return paths


FIELD_PATHS = _every_field_path()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(FIELD_PATHS), yaml_values)
def test_random_values_for_every_field(path, value):
    data = {"data": {"name": "mnist_sample"}, "model": {"name": "cnn"}, "train": {}}
    node = data
    for key in path[:-1]:
        if key.startswith("@"):
            node["name"] = key[1:]
            continue
        node = node.setdefault(key, {})
    node[path[-1]] = value
    recipe = _only_dlab_errors(lambda: from_dict(data))
    if recipe is not None:
        assert Recipe.from_yaml(recipe.to_yaml()) == recipe


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(FIELD_PATHS), st.text(max_size=20))
def test_random_override_strings(path, text):
    keys = [k for k in path if not k.startswith("@")]
    _only_dlab_errors(lambda: load_recipe(dict(MINIMAL), [".".join(keys) + "=" + text]))


def test_a_yaml_alias_bomb_is_refused_in_a_moment(tmp_path):
    """Nine levels of ten aliases: a 1 KB file that expands to a billion values."""
    import time

    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 10):
        refs = ", ".join([f"*a{level - 1}"] * 10)
        lines.append(f"a{level}: &a{level} [{refs}]")
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("\n".join(lines) + "\ndata: {name: mnist}\nmodel: {name: mlp, hidden: *a9}\n")
    assert len(bomb.read_bytes()) < 1200
    started = time.perf_counter()
    with pytest.raises(RecipeError, match="expands to more than 20,000 values"):
        load_recipe(bomb)
    # the same bomb in one -o value, in YAML's flow style
    parts = ["&b0 [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"]
    parts += [f"&b{k} [" + ", ".join([f"*b{k - 1}"] * 10) + "]" for k in range(1, 10)]
    with pytest.raises(RecipeError, match="override model.hidden: the recipe expands"):
        load_recipe("mnist_mlp", ["model.hidden=[" + ", ".join(parts) + "]"])
    assert time.perf_counter() - started < 2


@pytest.mark.parametrize("text", ["\x85", "a\u2028b", "end\u2029", "multi\nline é"])
def test_text_with_yaml_line_break_characters_round_trips(text):
    """Found by the fuzzing above: PyYAML wrote NEL raw and read it back as a space."""
    recipe = from_dict({**MINIMAL, "description": text})
    assert Recipe.from_yaml(recipe.to_yaml()).description == text


def test_overrides_leave_the_callers_mapping_as_it_was():
    given = {"data": {"name": "mnist_sample"}, "model": {"name": "cnn"}}
    load_recipe(given, ["data.batch_size=7", "model.dropout=0.5"])
    assert given == {"data": {"name": "mnist_sample"}, "model": {"name": "cnn"}}


# --- every message of the validator, word for word, and the helpers around loading -------------

EXACT_ERRORS = {
    "a section that is a number": (
        {**MINIMAL, "model": 3},
        "r.yaml: model: should be a mapping with a 'name' key or a model name",
    ),
    "a section without a name": (
        {**MINIMAL, "train": {"optimizer": {"lr": 0.1}}},
        "r.yaml: train.optimizer.name: needs a 'name': one of adam, adamw, rmsprop, sgd",
    ),
    "a name that is not text": (
        {**MINIMAL, "model": {"name": 3}},
        "r.yaml: model.name: unknown model '3'; see `dlab list models`",
    ),
    "an unknown name": (
        {**MINIMAL, "train": {"scheduler": "cosin"}},
        "r.yaml: train.scheduler.name: unknown scheduler 'cosin' (did you mean 'cosine'?); "
        "see `dlab list schedulers`",
    ),
    "a missing section": (
        {"model": {"name": "cnn"}},
        "r.yaml: data: missing; this field has no default",
    ),
    "a long value, shortened": (
        {**MINIMAL, "description": ["x" * 100]},
        "r.yaml: description: should be a valid string (got ['" + "x" * 55 + "...)",
    ),
    "three problems": (
        {**MINIMAL, "train": {"epochs": 0, "log_every": 0, "grad_clip": -1}},
        "r.yaml: train.epochs: should be greater than or equal to 1 (got 0) (and 2 more problems)",
    ),
    "a bad item of a list": (
        {**MINIMAL, "model": {"name": "cnn", "channels": ["x", 8]}},
        "r.yaml: model.channels.0: should be a valid integer, unable to parse string as an "
        "integer (got 'x')",
    ),
    "an empty list": (
        {**MINIMAL, "model": {"name": "cnn", "channels": []}},
        "r.yaml: model.channels: list should have at least 1 item after validation, not 0 (got [])",
    ),
    "a value of exactly sixty characters, whole": (
        {**MINIMAL, "description": ["y" * 56]},
        "r.yaml: description: should be a valid string (got ['" + "y" * 56 + "'])",
    ),
    "sixty-one characters, shortened": (
        {**MINIMAL, "description": ["y" * 57]},
        "r.yaml: description: should be a valid string (got ['" + "y" * 55 + "...)",
    ),
    "neither of a union's alternatives": (
        {**MINIMAL, "train": {"threads": "many"}},
        "r.yaml: train.threads: should be a valid integer, unable to parse string as an integer "
        "or should be 'auto' (got 'many')",
    ),
    "no threads": (
        {**MINIMAL, "train": {"threads": 0}},
        "r.yaml: train.threads: should be 'auto' or at least 1 (got 0)",
    ),
    "a log range from zero": (
        {
            **MINIMAL,
            "tune": {
                "metric": "val_loss",
                "space": {"train.optimizer.lr": {"log_uniform": [0, 0.1]}},
            },
        },
        "r.yaml: tune: space.train.optimizer.lr: log_uniform needs a positive low",
    ),
    "nothing to search": (
        {**MINIMAL, "tune": {"metric": "val_loss", "space": {}}},
        "r.yaml: tune: space is empty: name at least one field to search",
    ),
    "not a mapping at all": (
        3,
        "r.yaml: (top level): should be a valid dictionary or instance of Recipe (got 3)",
    ),
    "a name that cannot name a folder": (
        {**MINIMAL, "name": "a b"},
        "r.yaml: (top level): name should use letters, digits, '_', '-' and '.' only "
        "(it names a folder)",
    ),
    "a search range the recipe refuses": (
        {
            **MINIMAL,
            "tune": {"metric": "val_loss", "space": {"train.optimizer.lr": {"uniform": [-1, 0.1]}}},
        },
        "r.yaml: tune.space.train.optimizer.lr: -1 does not fit the recipe: "
        "train.optimizer.lr: should be greater than 0 (got -1)",
    ),
    "an unknown kind of range": (
        {
            **MINIMAL,
            "tune": {"metric": "val_loss", "space": {"train.optimizer.lr": {"gauss": [0, 1]}}},
        },
        "r.yaml: tune: space.train.optimizer.lr: use exactly one of log_uniform, uniform, int, choice",
    ),
}


@pytest.mark.parametrize("case", EXACT_ERRORS, ids=list(EXACT_ERRORS))
def test_validation_errors_word_for_word(case):
    data, message = EXACT_ERRORS[case]
    with pytest.raises(RecipeError) as info:
        from_dict(data, "r.yaml")
    assert str(info.value) == message


def test_sections_may_be_given_as_built_configs():
    recipe = from_dict(MINIMAL)
    rebuilt = from_dict({"data": recipe.data, "model": recipe.model, "train": {"epochs": 3}})
    assert rebuilt.data == recipe.data and rebuilt.model is recipe.model
    assert rebuilt.train.epochs == 3


def test_recipe_override_is_load_recipe_with_overrides():
    recipe = load_recipe(RECIPES / "mnist_cnn.yaml")
    changes = ["train.epochs=3", "model.channels=[4, 8]"]
    assert recipe.override(*changes) == load_recipe(RECIPES / "mnist_cnn.yaml", changes)
    assert recipe.override(*changes).train.epochs == 3 and recipe.train.epochs != 3
    assert load_recipe(recipe, changes) == recipe.override(*changes)
    assert load_recipe(recipe) is recipe
    with pytest.raises(RecipeError, match=r"^override: train.epochs: should be a valid integer"):
        recipe.override("train.epochs=many")


@pytest.mark.parametrize(
    ("metric", "mode", "stopping", "tuning"),
    [
        ("val_loss", "auto", "min", "minimize"),
        ("val_accuracy", "auto", "max", "maximize"),
        ("val_error", "auto", "min", "minimize"),
        ("val_mae", "auto", "min", "minimize"),
        ("val_mse", "auto", "min", "minimize"),
        ("val_rmse", "auto", "min", "minimize"),
        ("val_perplexity", "auto", "min", "minimize"),
        ("val_f1", "auto", "max", "maximize"),
        ("val_loss", "max", "max", "maximize"),
        ("val_accuracy", "min", "min", "minimize"),
    ],
)
def test_which_way_is_better_for_early_stopping_and_tuning(metric, mode, stopping, tuning):
    direction = {"auto": "auto", "min": "minimize", "max": "maximize"}[mode]
    recipe = from_dict(
        {
            **MINIMAL,
            "train": {"early_stopping": {"monitor": metric, "mode": mode}},
            "tune": {
                "metric": metric,
                "direction": direction,
                "space": {"train.optimizer.lr": {"log_uniform": [1e-4, 1e-2]}},
            },
        }
    )
    assert recipe.train.early_stopping.direction() == stopping
    assert recipe.tune.resolved_direction() == tuning


def test_recipes_are_found_by_name_in_the_working_folder_and_dlab_recipes_dir(
    tmp_path, monkeypatch
):
    from dlab.recipe import find_recipe, recipe_dirs

    shipped = find_recipe("mnist_cnn")
    assert shipped.samefile(RECIPES / "mnist_cnn.yaml")
    assert find_recipe("mnist_cnn.yaml").samefile(shipped)
    mine, extra = tmp_path / "work" / "recipes", tmp_path / "extra"
    mine.mkdir(parents=True)
    extra.mkdir()
    (mine / "mine.yaml").write_text("data: {name: mnist_sample}\nmodel: {name: mlp}\n")
    (extra / "theirs.yaml").write_text("data: {name: mnist_sample}\nmodel: {name: cnn}\n")
    (mine / "mnist_cnn.yaml").write_text("data: {name: mnist_sample}\nmodel: {name: mlp}\n")
    monkeypatch.chdir(tmp_path / "work")
    monkeypatch.setenv("DLAB_RECIPES_DIR", str(extra))
    folders = recipe_dirs()
    assert folders[:2] == [mine, extra] and len(folders) == 3  # the checkout's comes last
    assert find_recipe("mine") == mine / "mine.yaml"
    assert find_recipe("theirs") == extra / "theirs.yaml"
    assert find_recipe("mnist_cnn") == mine / "mnist_cnn.yaml"  # the working folder's wins
    assert load_recipe("theirs").name == "theirs" and load_recipe("theirs").model.name == "cnn"
    monkeypatch.setenv("DLAB_RECIPES_DIR", str(mine.resolve()))  # the same folder twice: once
    assert len(recipe_dirs()) == 2
    with pytest.raises(RecipeError) as info:
        find_recipe("mnist_cn")
    assert str(info.value) == (
        "recipe not found: mnist_cn (did you mean 'mnist_cnn'?); see `dlab list recipes`"
    )
    with pytest.raises(RecipeError, match=r"recipes: is a directory, not a recipe file$"):
        find_recipe("recipes")
    with pytest.raises(RecipeError, match="recipe not found: elsewhere/mine"):
        find_recipe("elsewhere/mine")  # a path with a folder is a path, never a name to look up


def test_field_docs_list_every_field_with_its_default_and_description():
    from dlab.recipe import field_docs

    rows = {name: (default, doc) for name, default, doc in field_docs(Recipe)}
    assert rows["seed"] == ("0", "seed for weights, dropout and data order")
    assert rows["data"][0] == "required" and rows["model"][0] == "required"
    assert rows["train.epochs"][0] == "10"
    # nested plain sections are listed field by field; named components (optimizer) are not
    assert rows["train.early_stopping"][0] == "None"
    assert "train.optimizer" in rows and not any(n.startswith("train.optimizer.") for n in rows)
    assert all(doc for name, (_, doc) in rows.items()), [n for n, (_, d) in rows.items() if not d]
    assert list(rows)[:3] == ["name", "description", "seed"]  # in the schema's order


def test_recipes_are_written_as_readable_yaml_in_their_own_order():
    from dlab.recipe.text import dump_yaml

    # keys in the order given, unicode as itself, plain strings unquoted; a NEL double-quoted
    assert dump_yaml({"b": 1, "a": "é plain", "c": "x\x85y"}) == 'b: 1\na: é plain\nc: "x\\Ny"\n'
    recipe = from_dict(MINIMAL)
    assert recipe.to_yaml().startswith("name: experiment\ndescription: ''\nseed: 0\ndata:\n")
    plain = recipe.to_dict()  # JSON types only: the run record and YAML take it as it is
    assert plain["train"]["optimizer"]["betas"] == [0.9, 0.999]
    assert json.loads(json.dumps(plain)) == plain


def test_messages_name_the_file_or_the_mapping_they_came_from(tmp_path):
    with pytest.raises(RecipeError, match=r"^my.yaml: data: missing"):
        Recipe.from_yaml("model: {name: cnn}", "my.yaml")
    with pytest.raises(RecipeError, match=r"^my.yaml: not valid YAML at line 1, column 8"):
        Recipe.from_yaml("data: [", "my.yaml")
    with pytest.raises(RecipeError, match=r"^<recipe>: data: missing"):
        load_recipe({"model": {"name": "cnn"}})
    path = tmp_path / "r.yml"
    path.write_text("model: {name: cnn}\n")
    with pytest.raises(RecipeError, match=rf"^{re.escape(str(path))}: data: missing"):
        load_recipe(path)


def test_overrides_fill_missing_sections_switch_shorthands_and_refuse_infinities():
    section = load_recipe(MINIMAL, ["train.early_stopping.patience=5"])  # no train section yet
    assert section.train.early_stopping.patience == 5
    assert (
        load_recipe({**MINIMAL, "train": {"grad_clip": 1.0}}, ["train.grad_clip="]).train.grad_clip
        is None
    )
    on_adam = {**MINIMAL, "train": {"optimizer": {"name": "adam", "lr": 0.002}}}
    switched = load_recipe(on_adam, ["train.optimizer=sgd"]).train.optimizer
    assert switched.name == "sgd" and switched.lr == 0.01  # sgd's defaults, not adam's settings
    kept = load_recipe(on_adam, ["train.optimizer=adam"]).train.optimizer
    assert kept.name == "adam" and kept.lr == 0.002
    with pytest.raises(RecipeError) as info:
        load_recipe(MINIMAL, ["train.optimizer.lr=.inf"])
    assert str(info.value) == "override train.optimizer.lr: '.inf' is not a finite number"
    with pytest.raises(RecipeError) as info:
        load_recipe(RECIPES / "mnist_cnn.yaml", ["train.epochs.x=1"])
    assert str(info.value) == "override train.epochs.x: train.epochs is a value, not a section"


def test_a_yml_recipe_is_found_by_its_file_name(tmp_path, monkeypatch):
    from dlab.recipe import find_recipe

    (tmp_path / "recipes").mkdir()
    (tmp_path / "recipes" / "short.yml").write_text(
        "data: {name: mnist_sample}\nmodel: {name: mlp}\n"
    )
    monkeypatch.chdir(tmp_path)
    assert find_recipe("short.yml") == tmp_path / "recipes" / "short.yml"


def test_field_docs_show_the_default_a_factory_makes():
    from dlab.recipe import field_docs

    rows = {name: default for name, default, _ in field_docs(Recipe)}
    assert rows["train"].startswith("TrainConfig(epochs=10, ")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "data: [",
            "not valid YAML at line 1, column 8: expected the node content, but found '<stream end>'",
        ),
        (
            "a: 1\n  b: 2\n",
            "not valid YAML at line 2, column 4: mapping values are not allowed here",
        ),
        ("", "the recipe is empty; it needs at least data and model sections"),
        ("- 1\n", "a recipe is a mapping of sections (data, model, train), not a list"),
        ("[" * 2000, "YAML nests too deeply"),
    ],
)
def test_yaml_problems_are_placed_exactly(text, message):
    from dlab.recipe.text import parse_yaml

    with pytest.raises(RecipeError) as info:
        parse_yaml(text, "r.yaml")
    assert str(info.value) == f"r.yaml: {message}"


def test_a_recipe_may_hold_exactly_the_largest_number_of_values():
    from dlab.recipe.text import MAX_VALUES, parse_yaml

    # the mapping, its list and the list's items: MAX_VALUES values in all
    fits = parse_yaml("v: [" + ",".join(["1"] * (MAX_VALUES - 2)) + "]", "r.yaml")
    assert len(fits["v"]) == MAX_VALUES - 2
    with pytest.raises(RecipeError) as info:
        parse_yaml("v: [" + ",".join(["1"] * (MAX_VALUES - 1)) + "]", "r.yaml")
    assert str(info.value) == (
        "r.yaml: the recipe expands to more than 20,000 values (nested YAML aliases?); "
        "write the values out"
    )


def test_a_plug_in_validator_that_raises_value_error_reads_like_the_rest():
    """Task plug-ins bring their own config classes; pydantic prefixes their ValueErrors."""
    from pydantic import BaseModel, ValidationError, field_validator

    from dlab.recipe.text import format_validation_error

    class Details(BaseModel):
        size: int

        @field_validator("size")
        @classmethod
        def _even(cls, size: int) -> int:
            if size % 2:
                raise ValueError("Must be even")
            return size

    with pytest.raises(ValidationError) as info:
        Details.model_validate({"size": 3})
    assert format_validation_error(info.value, {"size": 3}, "d") == "d: size: must be even (got 3)"


def test_a_recipe_named_with_a_folder_is_pointed_to_its_name(tmp_path, monkeypatch):
    """Only a missing path with a folder whose name is a shipped recipe's gets the hint to drop
    the folder; any other missing name gets the closest names."""
    from dlab.recipe.loading import find_recipe

    monkeypatch.chdir(tmp_path)  # no ./recipes here
    with pytest.raises(RecipeError) as info:
        find_recipe("recipes/mnist_cnn.yaml")
    assert str(info.value) == (
        "recipe not found: recipes/mnist_cnn.yaml; a shipped recipe is named without a folder: "
        "`mnist_cnn` (`dlab recipe copy mnist_cnn` writes a copy to edit)"
    )
    with pytest.raises(RecipeError) as info:
        find_recipe("elsewhere/not_a_recipe.yaml")
    assert str(info.value) == (
        "recipe not found: elsewhere/not_a_recipe.yaml; see `dlab list recipes`"
    )
    with pytest.raises(RecipeError) as info:  # a shipped name, with another suffix
        find_recipe("mnist_cnn.yml")
    assert str(info.value) == (
        "recipe not found: mnist_cnn.yml (did you mean 'mnist_cnn'?); see `dlab list recipes`"
    )
    with pytest.raises(RecipeError) as info:
        find_recipe("mnist_cnnn")
    assert str(info.value) == (
        "recipe not found: mnist_cnnn (did you mean 'mnist_cnn'?); see `dlab list recipes`"
    )


def test_copying_a_recipe_keeps_its_text_and_never_overwrites_unasked(tmp_path, monkeypatch):
    from dlab.recipe.loading import copy_recipe, shipped_recipes_dir

    monkeypatch.chdir(tmp_path)
    shipped = (shipped_recipes_dir() / "mnist_cnn.yaml").read_text(encoding="utf-8")
    copy = copy_recipe("mnist_cnn")
    assert copy == Path("recipes/mnist_cnn.yaml") and copy.read_text(encoding="utf-8") == shipped
    copy.write_text("# edited\n" + shipped, encoding="utf-8")
    with pytest.raises(RecipeError, match="recipes/mnist_cnn.yaml: exists; --force replaces it"):
        copy_recipe("mnist_cnn")
    assert copy.read_text(encoding="utf-8").startswith("# edited")
    # the name now finds the copy; --force copies what the name meant before it: the shipped one
    assert copy_recipe("mnist_cnn", force=True).read_text(encoding="utf-8") == shipped
    with pytest.raises(RecipeError, match="recipes/mnist_cnn.yaml: is the recipe itself"):
        copy_recipe(copy, force=True)
    (tmp_path / "afile").write_text("")
    with pytest.raises(RecipeError, match="afile: is a file, not a folder"):
        copy_recipe("mnist_cnn", "afile")
    assert copy_recipe("mnist_mlp", tmp_path / "deep" / "er").is_file()  # folders made as needed
    mine = tmp_path / "mine.yaml"  # a recipe file of one's own, over an older copy of it
    mine.write_text("name: mine\n", encoding="utf-8")
    (tmp_path / "recipes" / "mine.yaml").write_text("name: old\n", encoding="utf-8")
    assert copy_recipe(mine, force=True).read_text(encoding="utf-8") == "name: mine\n"


def test_flatten_names_fields_as_overrides_do():
    from dlab.recipe import flatten

    tree = {"train": {"optimizer": {"lr": 0.01, "name": "sgd"}, "callbacks": {}}, "seed": 0}
    assert flatten(tree) == {
        "train.optimizer.lr": 0.01,
        "train.optimizer.name": "sgd",
        "train.callbacks": {},  # an empty section is a field of its own
        "seed": 0,
    }
    assert flatten({"a": {"b": {"c": [1]}}}, "x.") == {"x.a.b.c": [1]}


def test_messages_name_the_source_the_key_and_the_yaml_problem():
    # a reader error has neither a line mark nor a `problem`: its own first line is the message
    with pytest.raises(RecipeError) as info:
        Recipe.from_yaml("data: \x00")
    assert str(info.value) == (
        "<recipe>: not valid YAML: unacceptable character #x0000: special characters are not "
        "allowed"
    )
    # a union's tags (`int`, `literal['auto']`) are not keys of the recipe
    with pytest.raises(RecipeError) as info:
        from_dict({**MINIMAL, "train": {"threads": "many"}})
    assert str(info.value) == (
        "<recipe>: train.threads: should be a valid integer, unable to parse string as an integer "
        "or should be 'auto' (got 'many')"
    )


def test_field_docs_leave_an_undocumented_field_blank():
    from pydantic import BaseModel

    from dlab.recipe.loading import field_docs

    class Section(BaseModel):
        size: int = 1

    assert field_docs(Section, "train.") == [("train.size", "1", "")]


def test_text_with_line_separators_is_written_double_quoted_and_reads_back():
    from dlab.recipe.text import dump_yaml

    assert dump_yaml({"description": "X-ray scans"}) == "description: X-ray scans\n"
    for odd in ("a\x85b", "a\u2028b", "a\u2029b"):
        text = dump_yaml({"description": odd})
        assert text.startswith('description: "') and yaml.safe_load(text) == {"description": odd}
