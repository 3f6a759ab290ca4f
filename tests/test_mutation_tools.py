"""The mutation-testing tools behind `make mutation`: each group narrows [tool.mutmut] to its own
files and tests, and the scores count what the tests noticed."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mutation_run
import mutation_scores

ROOT = Path(__file__).resolve().parents[1]


def test_each_group_narrows_the_configuration_to_its_own_files_and_tests():
    import tomllib  # Python 3.11+, as the development environment is

    pyproject = (ROOT / "pyproject.toml").read_text()
    mutate, tests = mutation_run.GROUPS["core"]
    narrowed = tomllib.loads(mutation_run.configure(pyproject, mutate, tests))["tool"]["mutmut"]
    original = tomllib.loads(pyproject)["tool"]["mutmut"]
    assert narrowed["only_mutate"] == [
        "src/dlab/training/metrics.py",
        "src/dlab/training/checkpoint.py",
        "src/dlab/data/idx.py",
    ]
    assert narrowed["pytest_add_cli_args_test_selection"] == [
        "tests/training/test_metrics.py",
        "tests/training/test_checkpoint.py",
        "tests/data/test_idx.py",
    ]
    keys = ("only_mutate", "pytest_add_cli_args_test_selection")
    assert {k: v for k, v in narrowed.items() if k not in keys} == {
        k: v for k, v in original.items() if k not in keys
    }  # the rest of the section as it was
    with pytest.raises(SystemExit, match="has no `only_mutate = \\[...\\]`"):
        mutation_run.configure("[tool.mutmut]\n", mutate, tests)


def test_every_group_names_files_and_tests_that_exist():
    for name, (mutate, tests) in mutation_run.GROUPS.items():
        for pattern in mutate + tests:
            assert list(ROOT.glob(pattern)), f"group {name}: nothing matches {pattern}"


def test_scores_count_noticed_mutants_and_fail_below_the_target(tmp_path, capsys):
    folder = tmp_path / "mutants" / "core" / "src"
    folder.mkdir(parents=True)
    codes = {"a": 1, "b": 1, "c": -24, "d": 0, "e": 33}  # killed ×2, timeout, survived, no tests
    (folder / "good.py.meta").write_text(json.dumps({"exit_code_by_key": {"a": 1, "b": 3}}))
    (folder / "weak.py.meta").write_text(json.dumps({"exit_code_by_key": codes}))
    assert mutation_scores.main([str(tmp_path / "mutants"), "--target", "0.85"]) == 1
    out = capsys.readouterr()
    assert "core/src/good.py" in out.out and "100.0%" in out.out
    weak = next(line for line in out.out.splitlines() if "weak.py" in line)
    assert weak.split()[1:] == ["5", "3", "1", "1", "0", "60.0%"]
    assert "below 85%: core/src/weak.py" in out.err
    assert mutation_scores.main([str(tmp_path / "mutants"), "--target", "0.6"]) == 0
