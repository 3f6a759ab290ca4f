"""Where data sets live on disk, and how files get there: downloads with checksums, imports.

Files are looked up in `$DLAB_DATA_DIR/<dataset>/` (default `~/.cache/dlab/<dataset>/`).
`dlab data fetch NAME` downloads them from the data set's mirrors, resuming partial downloads,
checking each file's md5 and moving it into place only when complete; `dlab data import NAME DIR`
copies and verifies files a user already has.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dlab._io import atomic_write
from dlab.errors import DataError

DATA_DIR_ENV = "DLAB_DATA_DIR"
CHUNK = 1 << 16


def data_dir() -> Path:
    """The root folder of downloaded data sets: $DLAB_DATA_DIR or ~/.cache/dlab."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "dlab"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a published data set and its published checksum."""

    name: str
    md5: str
    size: int | None = None
    sha256: str | None = None  # checked instead of md5 where the publisher gives one

    def check(self, path: Path) -> None:
        """Raise a DataError if `path` is not this file (SHA-256 when known, else md5)."""
        if self.sha256 is not None:
            actual = file_digest(path, "sha256")
            if actual != self.sha256:
                raise DataError(
                    f"{path}: checksum mismatch (sha256 {actual}, published {self.sha256}); the "
                    "file is corrupt or not the original: delete it and fetch or import it again"
                )
            return
        verify_md5(path, self.md5)


@dataclass(frozen=True)
class RemoteDataset:
    """A data set published as files on one or more mirrors."""

    name: str
    files: tuple[RemoteFile, ...]
    mirrors: tuple[str, ...]
    folder: str = ""  # sub-folder of the data dir; defaults to the name

    def directory(self, root: Path | None = None) -> Path:
        """Where this data set's files are expected."""
        return (root or data_dir()) / (self.folder or self.name)

    def missing(self, root: Path | None = None) -> list[str]:
        """Names of files not present locally."""
        folder = self.directory(root)
        return [f.name for f in self.files if not (folder / f.name).is_file()]

    def present(self, root: Path | None = None) -> bool:
        """Whether every file is present locally (not verified)."""
        return not self.missing(root)

    def require(self, root: Path | None = None) -> Path:
        """The local folder, or a one-line DataError that says how to get the files."""
        folder = self.directory(root)
        missing = self.missing(root)
        if missing:
            raise DataError(
                f"{self.name} is not in {folder} (missing {', '.join(missing)}): run "
                f"`dlab data fetch {self.name}` to download it, or `dlab data import {self.name} DIR` "
                f"to copy files you already have (set {DATA_DIR_ENV} to use another folder)"
            )
        return folder

    def verify(self, root: Path | None = None) -> None:
        """Check every local file against its published md5."""
        folder = self.require(root)
        for remote in self.files:
            remote.check(folder / remote.name)


def file_digest(path: Path, algorithm: str = "md5") -> str:
    """The hex digest of a file (md5 or sha256)."""
    digest = hashlib.new(algorithm, usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def md5sum(path: Path) -> str:
    """The md5 hex digest of a file."""
    return file_digest(path, "md5")


def verify_md5(path: Path, expected: str) -> None:
    """Raise a DataError if `path` does not have the published md5."""
    actual = md5sum(path)
    if actual != expected:
        raise DataError(
            f"{path}: checksum mismatch (md5 {actual}, published {expected}); the file is corrupt or "
            f"not the original: delete it and fetch or import it again"
        )


ProgressFactory = Callable[[str, int | None], Callable[[int], None]]


def _no_progress(_name: str, _total: int | None) -> Callable[[int], None]:
    return lambda _n: None


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def check_url(url: str) -> None:
    """Downloads go over HTTPS; plain HTTP only to this machine (local mirrors, tests)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme == "https" or (parts.scheme == "http" and parts.hostname in LOOPBACK):
        return
    raise DataError(f"{url}: dlab downloads over https only (plain http: loopback mirrors only)")


class _NoDowngrade(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to an address `check_url` accepts, never from https to http."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        old, new = urllib.parse.urlsplit(req.full_url).scheme, urllib.parse.urlsplit(newurl).scheme
        if old == "https" and new != "https":
            raise DataError(f"{req.full_url}: redirected to {newurl}, a downgrade to plain http")
        check_url(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_NoDowngrade)


def download(
    url: str,
    dest: Path,
    file: RemoteFile,
    progress: ProgressFactory = _no_progress,
    timeout: float = 30,
    size: int | None = None,
) -> None:
    """Download `url` to `dest`, resuming a `.part` file, verifying its checksum (SHA-256 where
    published, else md5), then renaming into place.

    With the published `size`, a server that announces or sends more is cut off at once (a
    hostile mirror cannot fill the disk)."""
    check_url(url)
    part = dest.with_name(dest.name + ".part")
    offset = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"User-Agent": "dlab"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            if offset and response.status != 206:
                offset = 0  # the server ignored the range: start again
            _receive(response, part, offset, dest.name, url, progress, size)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # the part file is already complete (or longer)
            pass
        else:
            raise
    try:
        file.check(part)
    except DataError as exc:
        part.unlink()
        if not (file.sha256 or file.md5):  # checked by its contents: say what was wrong
            raise DataError(f"{url}: {str(exc).replace(str(part), 'the download')}") from None
        which = f"sha256 {file.sha256}" if file.sha256 else f"md5 {file.md5}"
        raise DataError(f"{url}: downloaded file does not have the published {which}") from None
    with open(part, "rb+") as f:  # on disk before it takes the final name
        os.fsync(f.fileno())
    os.replace(part, dest)


def _receive(
    response: Any,
    part: Path,
    offset: int,
    name: str,
    url: str,
    progress: ProgressFactory,
    size: int | None,
) -> None:
    """Append the response body to `part`, within the published size."""
    length = response.headers.get("Content-Length")
    total = offset + int(length) if length and length.isdigit() else None
    if size is not None and total is not None and total > size:
        raise DataError(f"{url}: the server announces {total:,} bytes; the file has {size:,}")
    advance = progress(name, total)
    advance(offset)
    received = offset
    with open(part, "ab" if offset else "wb") as out:
        for block in iter(lambda: response.read(CHUNK), b""):
            received += len(block)
            if size is not None and received > size:
                out.close()
                part.unlink()
                raise DataError(f"{url}: the server sent more than the file's {size:,} bytes")
            out.write(block)
            advance(len(block))
    if total is not None and received < total:  # keep the part file: the next attempt resumes it
        raise ConnectionError(f"connection closed after {received:,} of {total:,} bytes")


def fetch(
    remote: RemoteDataset,
    root: Path | None = None,
    mirrors: Sequence[str] | None = None,
    progress: ProgressFactory = _no_progress,
    timeout: float = 30,
) -> Path:
    """Download every missing file of `remote`, trying each mirror in turn; verify all of them."""
    folder = remote.directory(root)
    folder.mkdir(parents=True, exist_ok=True)
    bases = list(mirrors or remote.mirrors)
    for file in remote.files:
        target = folder / file.name
        if target.is_file():
            try:
                file.check(target)
                continue
            except DataError:
                target.unlink()  # a corrupt copy: fetch it again
        failures: list[str] = []
        for base in bases:
            url = base.rstrip("/") + "/" + file.name
            try:
                download(url, target, file, progress, timeout, file.size)
                break
            except urllib.error.HTTPError as exc:
                failures.append(f"{url}: HTTP {exc.code}")
            except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                failures.append(f"{url}: {reason}")
            except DataError as exc:
                failures.append(str(exc))
        else:
            raise DataError(
                f"could not download {file.name} for {remote.name} from any mirror ({'; '.join(failures)}); "
                f"if you are offline, copy the files here with `dlab data import {remote.name} DIR`"
            )
    return folder


def import_files(remote: RemoteDataset, source: Path, root: Path | None = None) -> Path:
    """Copy a data set's files from `source` into the data dir, verifying each md5 first."""
    source = Path(source)
    if not source.is_dir():
        raise DataError(f"{source}: not a directory")
    missing = [f.name for f in remote.files if not (source / f.name).is_file()]
    if missing:
        raise DataError(
            f"{source}: missing {', '.join(missing)} (the files {remote.name} is published as)"
        )
    for file in remote.files:
        file.check(source / file.name)
    folder = remote.directory(root)
    folder.mkdir(parents=True, exist_ok=True)
    for file in remote.files:
        atomic_write(
            folder / file.name, lambda tmp, src=source / file.name: shutil.copyfile(src, tmp)
        )
    return folder
