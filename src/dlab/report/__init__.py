"""Reports of runs: one self-contained HTML page per run, and comparison pages across runs."""

from __future__ import annotations

import time
import traceback
from pathlib import Path
from typing import Any

import dlab.report.lifecycle  # noqa: F401  (registers its sections)
from dlab._io import atomic_write_text
from dlab.errors import DlabError
from dlab.report.context import ReportContext
from dlab.report.html import escape, note, page
from dlab.report.sections import SECTIONS


def build_report(run: Any) -> str:
    """The report's HTML: every section that applies (the shared ones and the task's), in order;
    a failing section says why."""
    ctx = ReportContext(run)
    sections = [*SECTIONS.values(), *(ctx.task.report_sections() if ctx.task else [])]
    rendered = []
    for section in sorted(sections, key=lambda s: (s.order, s.name)):
        try:
            body = section.render(ctx)
        except DlabError as exc:  # e.g. the data is not on this machine: say so, keep the rest
            body = note(f"not available here: {exc}")
        except Exception as exc:  # a report must never lose the rest of itself to one section
            detail = traceback.format_exception_only(type(exc), exc)[-1].strip()
            body = f'<p class="error section-error">this section failed: {escape(detail)}</p>'
        if body is not None:
            rendered.append((section.name, section.title, body))
    subtitle = f"{run.recipe.description or run.recipe.model.name + ' on ' + run.recipe.data.name} — {run.path} — {time.strftime('%Y-%m-%d %H:%M')}"
    return page(f"dlab report: {run.recipe.name}", subtitle, rendered)


def write_report(run: Any) -> Path:
    """Write <run>/report.html (atomically) and return its path."""
    path = run.path / "report.html"
    atomic_write_text(path, build_report(run))
    return path


from dlab.report.compare import compare_runs  # noqa: E402  (uses the helpers above)

__all__ = ["build_report", "compare_runs", "write_report"]
