"""`make mutation`: mutmut over the core, one group of files at a time, each against its own tests.

    python tests/mutation_run.py [GROUP ...] [--max-children 2]    # default: core recipe

mutmut first runs every selected test to learn which tests reach which function, then runs those
tests once per mutant. With one selection for all the core files, each metrics or checkpoint
mutant waited on the trainer's slow tests: the whole run took hours and was never finished. So
each group (a few files and the test files written for them) runs in a copy of the working tree
whose [tool.mutmut] names only that group; the checkout is never touched. The results land in
mutants/GROUP/ (git-ignored) and the scores per file come last (`tests/mutation_scores.py`).

A group's score counts only its own tests: a mutant that some other test file would notice counts
as a survivor here, so the scores are a lower bound for the whole suite.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from mutation_scores import main as scores  # noqa: E402

GROUPS = {  # files to mutate, and the test files that must notice
    "core": (
        ["src/dlab/training/metrics.py", "src/dlab/training/checkpoint.py", "src/dlab/data/idx.py"],
        ["tests/training/test_metrics.py", "tests/training/test_checkpoint.py",
         "tests/data/test_idx.py"],
    ),  # about 30 minutes on 2 cores
    "recipe": (["src/dlab/recipe/*.py"], ["tests/test_recipe.py"]),  # about 10 minutes
    "trainer": (  # hours: its tests train models
        ["src/dlab/training/trainer.py"],
        ["tests/training/test_trainer.py", "tests/training/test_switches.py",
         "tests/training/test_privacy.py", "tests/test_old_runs.py"],
    ),
}  # fmt: skip
DEFAULT = ["core", "recipe"]


def toml_list(values: list[str]) -> str:
    return "[\n" + "".join(f'    "{v}",\n' for v in values) + "]"


def configure(pyproject: str, mutate: list[str], tests: list[str]) -> str:
    """pyproject.toml's text with [tool.mutmut] narrowed to one group."""
    for key, values in (("only_mutate", mutate), ("pytest_add_cli_args_test_selection", tests)):
        pattern = re.compile(rf"^{key} = \[.*?^\]", re.S | re.M)
        if not pattern.search(pyproject):
            raise SystemExit(f"pyproject.toml: [tool.mutmut] has no `{key} = [...]` to narrow")
        pyproject = pattern.sub(f"{key} = {toml_list(values)}", pyproject, count=1)
    return pyproject


def copy_tree(destination: Path) -> None:
    """The working tree as it is (tracked and new files, not ignored ones) into `destination`."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, capture_output=True, check=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, listed):
        source = ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def run_group(name: str, max_children: int) -> None:
    mutate, tests = GROUPS[name]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"dlab-mutation-{name}-") as folder:
        tree = Path(folder)
        copy_tree(tree)
        pyproject = tree / "pyproject.toml"
        pyproject.write_text(configure(pyproject.read_text(), mutate, tests))
        mutmut = Path(sys.executable).with_name("mutmut")
        command = [str(mutmut), "run", "--max-children", str(max_children)]
        subprocess.run(command, cwd=tree, env=os.environ, check=False)
        results = ROOT / "mutants" / name
        shutil.rmtree(results, ignore_errors=True)
        for meta in (tree / "mutants").rglob("*.py.meta"):
            target = results / meta.relative_to(tree / "mutants")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(meta, target)
    print(f"mutation group {name}: {time.perf_counter() - started:.0f} s", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("groups", nargs="*", default=DEFAULT, help=f"of {', '.join(GROUPS)}")
    parser.add_argument("--max-children", type=int, default=2)
    args = parser.parse_args(argv)
    unknown = [g for g in args.groups if g not in GROUPS]
    if unknown:
        parser.error(f"no group {', '.join(unknown)} (choose from {', '.join(GROUPS)})")
    for name in args.groups:
        run_group(name, args.max_children)
    return scores([str(ROOT / "mutants")])


if __name__ == "__main__":
    sys.exit(main())
