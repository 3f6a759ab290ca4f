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


@contextlib.contextmanager
def serving(target: str | Path, *options: str, timeout: float = 60.0) -> Iterator[str]:
    """Start `dlab serve TARGET OPTIONS` on a free loopback port; yield its URL once /health
    answers; stop it on exit. A server that exits or never answers raises DlabError with its output."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "dlab.cli", "serve", str(target), "--port", str(port), *options],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if process.poll() is not None:
                    raise DlabError(f"dlab serve exited: {process.stdout.read()[-2000:]}") from None
                if time.monotonic() > deadline:
                    raise DlabError(
                        f"dlab serve did not answer /health within {timeout:g} s"
                    ) from None
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
