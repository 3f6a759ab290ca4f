"""A self-contained HTML page: inline CSS, images embedded as data URIs, no scripts, no network."""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Iterable, Sequence
from typing import Any

STYLE = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:18px 32px}header h1{margin:0;font-size:22px}
header p{margin:4px 0 0;color:#b9c0cc;font-size:13px}
main{max-width:1180px;margin:0 auto;padding:8px 24px 48px}
section{background:#fff;border:1px solid #e1e4ea;border-radius:8px;margin:18px 0;padding:16px 22px}
h2{font-size:17px;margin:0 0 10px}h3{font-size:14px;margin:14px 0 6px;color:#475066}
table{border-collapse:collapse;font-size:13px;margin:6px 0}td,th{border-bottom:1px solid #eceef2;padding:4px 10px;text-align:left}
th{color:#475066;font-weight:600}td.n{text-align:right;font-variant-numeric:tabular-nums}
img{max-width:100%;height:auto}.row{display:flex;flex-wrap:wrap;gap:16px;align-items:flex-start}
.note{color:#6b7385;font-size:13px;font-style:italic}.error{color:#a4262c;font-size:13px}
.tok{padding:1px 2px;border-radius:3px;margin:0 1px;font-family:ui-monospace,monospace;font-size:13px}
pre{background:#f3f4f7;padding:10px;border-radius:6px;white-space:pre-wrap;font-size:13px}
.ok{color:#17703a}.bad{color:#a4262c}
"""


def escape(text: Any) -> str:
    """HTML-escaped text."""
    return html.escape(str(text))


def figure(fig: Any, alt: str, width: int | None = None) -> str:
    """A matplotlib figure as an embedded PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    size = f' width="{width}"' if width else ""
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}"{size}>'


def number(value: Any) -> str:
    """A compact rendering of a metric value."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return escape(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"


def table(rows: Iterable[Sequence[Any]], columns: Sequence[str]) -> str:
    """A table; numeric cells are right-aligned."""
    head = "".join(f"<th>{escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="n">{number(v)}</td>'
            if isinstance(v, int | float) and not isinstance(v, bool)
            else f"<td>{escape(v)}</td>"
            for v in row
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def note(text: str) -> str:
    return f'<p class="note">{escape(text)}</p>'


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """The whole document: (id, title, body) per section."""
    parts = [
        f'<section id="{escape(sid)}"><h2>{escape(heading)}</h2>{body}</section>'
        for sid, heading, body in sections
    ]
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header>"
        f"<main>{''.join(parts)}</main></body></html>"
    )
