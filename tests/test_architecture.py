"""The shape of the source: no import cycles, no file over 500 lines, no function over 60 lines
(except where a `# long: <why>` comment on the line above its `def` says why)."""

from __future__ import annotations

import ast
from pathlib import Path

SOURCE = Path(__file__).resolve().parents[1] / "src"
MAX_FILE_LINES, MAX_FUNCTION_LINES = 500, 60


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SOURCE / "dlab").rglob("*.py"):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _module_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The dlab modules `name` imports when it loads: top-level imports, not those inside
    functions (which run later) or under `if TYPE_CHECKING:` (which never run)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                visit(node.orelse)
            elif isinstance(node, ast.If | ast.Try | ast.With):
                for block in ("body", "orelse", "finalbody"):
                    visit(getattr(node, block, []))
                for handler in getattr(node, "handlers", []):
                    visit(handler.body)
            elif isinstance(node, ast.Import):
                found.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                for alias in node.names:
                    full = f"{base}.{alias.name}"
                    found.add(full if full in modules else base)

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return components


def test_no_import_cycles_in_dlab():
    modules = _modules()
    graph = {name: _module_imports(name, path, modules) for name, path in modules.items()}
    assert graph["dlab.training.trainer"] >= {"dlab.training.callbacks", "dlab.tasks"}
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_source_file_over_500_lines():
    long = {
        str(path.relative_to(SOURCE)): n
        for path in (SOURCE / "dlab").rglob("*.py")
        if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_FILE_LINES
    }
    assert long == {}


def test_no_function_over_60_lines_without_a_reason():
    long = {}
    for path in (SOURCE / "dlab").rglob("*.py"):
        lines = path.read_text(encoding="utf-8").splitlines()
        for node in ast.walk(ast.parse("\n".join(lines))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            if node.end_lineno - node.lineno + 1 <= MAX_FUNCTION_LINES:
                continue
            if not lines[start - 2].strip().startswith("# long:"):
                long[f"{path.relative_to(SOURCE)}:{node.name}"] = node.end_lineno - node.lineno + 1
    assert long == {}


# --- the core install stays small: no optional library is imported until a verb needs it ---

def _optional_modules() -> set[str]:
    """The top-level modules of every distribution that an extra (not dev, bench, mutation)
    adds beyond the core requirements, found through the installed packages' own records."""
    import importlib.metadata

    from conftest import PYPROJECT, requirement_names

    from dlab.extras import EXTRAS

    core = requirement_names(PYPROJECT["project"]["dependencies"])
    for requirement in list(core):  # and what they pull in themselves (torch needs filelock)
        needs = importlib.metadata.requires(requirement) or []
        core |= requirement_names([n for n in needs if "extra ==" not in n])  # not their extras
    extras = PYPROJECT["project"]["optional-dependencies"]
    wanted = set().union(*(requirement_names(extras[e]) for e in EXTRAS)) - core
    wanted.discard(PYPROJECT["project"]["name"])
    modules = set()
    for module, distributions in importlib.metadata.packages_distributions().items():
        if {d.lower().replace("_", "-") for d in distributions} & wanted and module.isidentifier():
            modules.add(module)
    return modules


def test_importing_dlab_or_asking_for_help_imports_no_optional_library():
    import subprocess
    import sys

    optional = _optional_modules()
    assert {"optuna", "transformers", "flwr", "opacus", "onnx", "fastapi", "gguf"} <= optional
    probe = (
        "import sys, json, contextlib\n"
        "import dlab\n"
        "from dlab.cli import main\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):\n"
        "    main(['--help'])\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(None):\n"
        "    main(['train', '--help'])\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    import json

    loaded = {name.split(".")[0] for name in json.loads(done.stdout.splitlines()[-1])}
    assert not loaded & optional, sorted(loaded & optional)
