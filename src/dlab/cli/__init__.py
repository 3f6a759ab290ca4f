"""The `dlab` command line: parses, calls one library function, prints. No logic of its own.

The commands live by theme: `commands.py` (train, evaluate, generate, predict, list, report,
demo), `learning.py` (check, exercise, lesson), `groups.py` (runs, data, recipe) and
`lifecycle.py` (tune, compress, export, serve, federate).
"""

from __future__ import annotations

import sys
import warnings

from dlab.cli import commands, groups, learning, lifecycle  # noqa: F401  (they register on app)
from dlab.cli.app import app
from dlab.errors import DlabError, DlabWarning

__all__ = ["app", "main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `dlab` script: user errors become one line on stderr and exit code 2."""
    show = warnings.showwarning

    def one_line(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, DlabWarning):
            sys.stderr.write(f"dlab: warning: {message}\n")
        else:
            show(message, category, filename, lineno, file, line)

    warnings.showwarning = one_line
    try:
        app(args=argv, prog_name="dlab")  # typer reports its own usage errors and exits 2
    except DlabError as exc:
        sys.stderr.write(f"dlab: error: {exc}\n")
        return exc.exit_code
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        sys.stderr.write("dlab: interrupted\n")
        return 130
    finally:
        warnings.showwarning = show
    return 0
