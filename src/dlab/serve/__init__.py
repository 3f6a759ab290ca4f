"""`dlab serve RUN|MODEL.onnx`: a model behind HTTP, safe by default.

It binds 127.0.0.1 unless told otherwise; any other address needs a token (--token or
DLAB_SERVE_TOKEN, checked in constant time) unless --insecure is given on purpose; CORS is off
unless --cors names the origins allowed.
"""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Any

from dlab.errors import DlabError
from dlab.extras import require

require("serve", "dlab.serve")  # before FastAPI is imported: one line instead of a traceback

from dlab.serve.app import create_app  # noqa: E402
from dlab.serve.backends import load_backend  # noqa: E402

TOKEN_ENV = "DLAB_SERVE_TOKEN"

__all__ = ["TOKEN_ENV", "build_app", "is_loopback", "serve"]


def is_loopback(host: str) -> bool:
    """Whether `host` only accepts connections from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_app(
    target: str | Path,
    host: str = "127.0.0.1",
    token: str | None = None,
    insecure: bool = False,
    backend: str = "auto",
    max_batch: int = 32,
    max_wait_ms: float = 5.0,
    cors: list[str] | None = None,
    allowed_hosts: list[str] | None = None,
) -> Any:
    """Check the safety rules and build the application for `target`. `allowed_hosts`: the
    Host names requests may use (None: any; `serve` fills it in for a loopback server)."""
    token = token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(host) and token is None and not insecure:
        raise DlabError(
            f"serve: binding {host} exposes the model to the network; give --token (or set {TOKEN_ENV}), "
            "or pass --insecure if that is really what you want"
        )
    if token is not None and len(token) < 16:
        raise DlabError("serve: the token should be at least 16 characters long")
    return create_app(
        load_backend(target, backend),
        token=token,
        max_batch=max_batch,
        max_wait_ms=max_wait_ms,
        cors=cors,
        allowed_hosts=allowed_hosts,
    )


def serve(
    target: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    limit_concurrency: int = 128,
    keep_alive_s: float = 5.0,
    header_timeout_s: float = 10.0,
    **options: Any,
) -> None:
    """Serve until interrupted. Past `limit_concurrency` open connections and requests, uvicorn
    answers 503 at once (a flood of idle connections cannot grow without bound); an idle
    keep-alive connection closes after `keep_alive_s`, and one whose request headers take
    longer than `header_timeout_s` to arrive is closed (dlab.serve.connections)."""
    import uvicorn

    from dlab.serve.connections import with_header_timeout

    extra = options.pop("allowed_hosts", None) or []
    if is_loopback(host) and "*" not in extra:  # DNS rebinding: only this machine's names
        options["allowed_hosts"] = ["127.0.0.1", "localhost", "[::1]", "::1", host, *extra]
    elif extra and "*" not in extra:
        options["allowed_hosts"] = [host, *extra]
    app = build_app(target, host=host, **options)
    uvicorn.run(
        app,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        limit_concurrency=limit_concurrency,
        timeout_keep_alive=keep_alive_s,
        http=with_header_timeout(header_timeout_s),
    )
