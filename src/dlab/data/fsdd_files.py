"""FSDD's WAV recordings on disk: `dlab data fetch fsdd_wav` and `dlab data import fsdd_wav DIR`.

FSDD publishes its 3,000 recordings as files in a git repository, with no checksum of its own.
The release v1.0.10 pins them: git names the `recordings/` folder of that release by the SHA-1
of its tree, d04322e3…, which hashes every file's name, mode and content. dlab downloads the
release archive from GitHub, recomputes that tree id from the WAV files inside it (so a changed,
missing or extra recording fails), also checks a SHA-256 over the names and contents (computed
here from the release), and only then unpacks them into `$DLAB_DATA_DIR/fsdd_wav/recordings/`.
An import checks the SHA-256 of the user's folder (a clone's `recordings/`, or the folder
itself): copies lose the executable bit that 1,000 of the recordings carry in git, which the
tree id counts.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dlab.data.store import RemoteDataset, RemoteFile
from dlab.errors import DataError

RELEASE = "v1.0.10"
TREE_SHA1 = "d04322e322a9f937f6f4f7c8546693755184df5b"  # git rev-parse v1.0.10:recordings
# content_sha256 of the same 3,000 files, computed from the release
CONTENT_SHA256 = "99aa5e3a7c822ab55b2a3b47e0b05aeb9f011c54837a12e3831ad24108330829"
RECORDINGS = 3_000
ARCHIVE = f"{RELEASE}.tar.gz"


def blob_sha1(data: bytes) -> bytes:
    """Git's id of a file's content: SHA-1 of 'blob <size>\\0' + content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).digest()


def tree_sha1(files: Iterable[tuple[str, bytes]], executable: set[str] = frozenset()) -> str:
    """Git's id of a flat folder of files from (name, content) pairs; `executable` names the
    files of mode 100755 (the others are 100644)."""
    entries = sorted(
        (name.encode(), b"100755" if name in executable else b"100644", blob_sha1(data))
        for name, data in files
    )
    body = b"".join(mode + b" " + name + b"\0" + sha for name, mode, sha in entries)
    return hashlib.sha1(b"tree %d\0" % len(body) + body, usedforsecurity=False).hexdigest()


def content_sha256(files: Iterable[tuple[str, bytes]]) -> str:
    """SHA-256 over 'name\\0sha256(content)\\n' of every file, in name order."""
    digest = hashlib.sha256()
    for name, data in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).hexdigest().encode() + b"\n")
    return digest.hexdigest()


@dataclass(frozen=True)
class Pinned:
    """What a set of recordings must hash to."""

    tree: str
    sha256: str
    count: int

    def check(
        self, files: list[tuple[str, bytes]], where: str, executable: set[str] | None = None
    ) -> None:
        """Raise a DataError unless `files` are exactly the pinned recordings (and, given the
        files' modes, unless they make the release's git tree)."""
        if len(files) != self.count:
            raise DataError(
                f"{where}: {len(files):,} recordings where FSDD {RELEASE} has {self.count:,}"
            )
        if content_sha256(files) != self.sha256:
            raise DataError(
                f"{where}: the recordings are not FSDD {RELEASE}'s (their SHA-256 differs); "
                "fetch or import them again"
            )
        if executable is not None and (tree := tree_sha1(files, executable)) != self.tree:
            raise DataError(
                f"{where}: git tree {tree[:12]} is not FSDD {RELEASE}'s {self.tree[:12]}"
            )


PINNED = Pinned(TREE_SHA1, CONTENT_SHA256, RECORDINGS)


def archive_recordings(path: Path) -> tuple[list[tuple[str, bytes]], set[str]]:
    """(name, content) of every recordings/*.wav in a release archive, and the executable ones."""
    found, executable = [], set()
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                parts = member.name.split("/")
                if (
                    member.isfile()
                    and parts[-2:-1] == ["recordings"]
                    and parts[-1].endswith(".wav")
                ):
                    found.append((parts[-1], tar.extractfile(member).read()))
                    if member.mode & 0o100:
                        executable.add(parts[-1])
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise DataError(f"{path}: not a readable .tar.gz ({exc})") from None
    return found, executable


class ReleaseArchive(RemoteFile):
    """The release archive, checked by the recordings inside it (GitHub's archive bytes are
    not promised to stay the same; the files are)."""

    def check(self, path: Path) -> None:
        files, executable = archive_recordings(path)
        current().check(files, str(path), executable)


def current() -> Pinned:
    """The pinned recordings (a function, so tests can pin a small archive of their own)."""
    return PINNED


FSDD_WAV = RemoteDataset(
    name="fsdd_wav",
    files=(ReleaseArchive(ARCHIVE, md5="", size=20_000_000),),  # a size cap: about 15 MB
    mirrors=(
        "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags",
        "https://codeload.github.com/Jakobovski/free-spoken-digit-dataset/tar.gz/refs/tags",
    ),
)


def recordings_dir(root: Path | None = None) -> Path:
    """The unpacked recordings: unpacked from the fetched archive on first use (verified)."""
    folder = FSDD_WAV.directory(root)
    recordings = folder / "recordings"
    if recordings.is_dir():
        return recordings
    FSDD_WAV.require(root)
    files, executable = archive_recordings(folder / ARCHIVE)
    current().check(files, str(folder / ARCHIVE), executable)
    _place(files, recordings)
    return recordings


def import_recordings(source: Path, root: Path | None = None) -> Path:
    """Copy FSDD's recordings from a folder (a clone, or its recordings/ folder), verified."""
    source = Path(source)
    folder = source / "recordings" if (source / "recordings").is_dir() else source
    if not folder.is_dir():
        raise DataError(f"{source}: not a directory")
    files = [(p.name, p.read_bytes()) for p in sorted(folder.glob("*.wav"))]
    current().check(files, str(folder))
    target = FSDD_WAV.directory(root) / "recordings"
    if target.is_dir():
        shutil.rmtree(target)
    _place(files, target)
    return target


def _place(files: list[tuple[str, bytes]], target: Path) -> None:
    """Write the files into a temporary sibling folder, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".recordings-", dir=target.parent))
    try:
        for name, data in files:
            (staging / name).write_bytes(data)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging)


def present() -> Path | None:
    """The recordings on this machine (unpacked, or the fetched archive), for `dlab list`."""
    folder = FSDD_WAV.directory()
    for found in (folder / "recordings", folder / ARCHIVE):
        if found.exists():
            return found
    return None
