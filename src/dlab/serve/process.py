"""`dlab serve` in a background process: for notebooks, load tests and end-to-end tests.

with serving("runs/mnist_cnn/<id>", "--max-batch", "1") as url:
    httpx.post(f"{url}/predict", json={"inputs": ...})
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from dlab.errors import DlabError


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class _PortTaken(Exception):
    """Another process bound the chosen port between `free_port` and the server's bind."""


@contextlib.contextmanager
def serving(target: str | Path, *options: str, timeout: float = 60.0) -> Iterator[str]:
    """Start `dlab serve TARGET OPTIONS` on a free loopback port; yield its URL once /health
    answers; stop it on exit. A server that exits or never answers raises DlabError with its output.

    A port found free can be taken before the server binds it: the server then exits with
    "address already in use", and it is started again on another port (three tries).
    """
    for attempt in range(3):
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "dlab.cli", "serve", str(target), "--port", str(port), *options],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            try:
                _wait_for_health(process, f"http://127.0.0.1:{port}", timeout)
            except _PortTaken:
                if attempt == 2:
                    raise DlabError(f"dlab serve found port {port} taken, three times") from None
                continue
            yield f"http://127.0.0.1:{port}"
            return
        finally:
            _stop(process)


def _wait_for_health(process: subprocess.Popen, url: str, timeout: float) -> None:
    """Until `url`/health answers 200 while `process` still runs (not another server's answer)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                if response.status == 200 and process.poll() is None:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if process.poll() is not None:
            output = process.stdout.read()[-2000:] if process.stdout else ""
            if "address already in use" in output.lower():
                raise _PortTaken
            raise DlabError(f"dlab serve exited: {output}")
        if time.monotonic() > deadline:
            raise DlabError(f"dlab serve did not answer /health within {timeout:g} s")
        time.sleep(0.2)


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
