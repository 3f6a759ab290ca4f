"""A file server on 127.0.0.1 for download tests: Range requests, 404s, truncation on demand."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    """Serves `files` (name -> bytes); `truncate` names send only half their bytes once."""

    def __init__(self, files: dict[str, bytes], truncate: set[str] | None = None):
        self.files = dict(files)
        self.truncate = set(truncate or ())
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_GET(self):
                name = self.path.rsplit("/", 1)[-1]
                header = self.headers.get("Range")
                server.requests.append((self.path, header))
                body = server.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                start = int(header.split("=")[1].split("-")[0]) if header else 0
                if start >= len(body) and header:
                    self.send_response(416)
                    self.end_headers()
                    return
                chunk = body[start:]
                self.send_response(206 if header else 200)
                self.send_header("Content-Length", str(len(chunk)))
                self.end_headers()
                if name in server.truncate:
                    server.truncate.discard(name)
                    self.wfile.write(chunk[: len(chunk) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(chunk)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}/files"

    def __enter__(self) -> FileServer:
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@contextmanager
def serve(files: dict[str, bytes], truncate: set[str] | None = None) -> Iterator[FileServer]:
    """Start a FileServer for the duration of a with-block."""
    with FileServer(files, truncate) as server:
        yield server
