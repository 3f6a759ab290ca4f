"""FSDD's recordings fetched from a release archive or imported from a folder, checked against the
release's git tree id and a SHA-256 (a small release of our own, served on loopback)."""

from __future__ import annotations

import io
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pytest
from conftest import tone
from httpfixture import serve

from dlab.data import audio, build, fsdd_files
from dlab.data.fsdd_files import Pinned, archive_recordings, content_sha256, tree_sha1
from dlab.errors import DataError
from dlab.recipe import from_dict

RATE = 8000


def recordings() -> list[tuple[str, bytes]]:
    """Thirty short tones named as FSDD names its recordings (three speakers)."""
    files = []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.wav"
        for speaker in ("ana", "ben", "cy"):
            for digit in range(10):
                audio.write_wav(path, tone(200 + 100 * digit, 0.2, seed=digit), RATE)
                files.append((f"{digit}_{speaker}_0.wav", path.read_bytes()))
    return files


def release(files, executable=frozenset(), extra=()) -> bytes:
    """A GitHub-style release archive: free-spoken-digit-dataset-x/recordings/*.wav."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in [*files, *extra]:
            info = tarfile.TarInfo(f"free-spoken-digit-dataset-x/recordings/{name}")
            info.size, info.mode = len(data), 0o755 if name in executable else 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


@pytest.fixture
def pinned(monkeypatch):
    files = recordings()
    executable = {files[0][0], files[5][0]}
    pin = Pinned(tree_sha1(files, executable), content_sha256(files), len(files))
    monkeypatch.setattr(fsdd_files, "current", lambda: pin)
    return files, executable


def test_the_tree_id_is_gits_own(tmp_path, pinned):
    files, executable = pinned
    folder = tmp_path / "repo" / "recordings"
    folder.mkdir(parents=True)
    for name, data in files:
        (folder / name).write_bytes(data)
        (folder / name).chmod(0o755 if name in executable else 0o644)
    git = ["git", "-C", str(tmp_path / "repo"), "-c", "core.fileMode=true"]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "recordings"], check=True)
    tree = subprocess.run([*git, "write-tree"], check=True, capture_output=True, text=True)
    listing = subprocess.run(
        [*git, "rev-parse", f"{tree.stdout.strip()}:recordings"],
        check=True,
        capture_output=True,
        text=True,
    )
    assert listing.stdout.strip() == tree_sha1(files, executable)
    assert tree_sha1(files) != tree_sha1(files, executable)  # modes count, as in git


def test_fetch_verifies_the_release_and_unpacks_it_on_first_use(data_dir, pinned, monkeypatch):
    files, executable = pinned
    from dlab.catalog import fetch_dataset

    good = release(files, executable)
    short = release(files[:-1], executable)
    with (
        serve({"v1.0.10.tar.gz": short}) as server,
        pytest.raises(DataError, match="29 recordings where FSDD v1.0.10 has 30"),
    ):
        fetch_dataset("fsdd_wav", [server.url])
    with serve({"v1.0.10.tar.gz": good}) as server:
        fetch_dataset("fsdd_wav", [server.url])
    folder = data_dir / "fsdd_wav"
    assert not (folder / "recordings").exists()  # unpacked when first read
    bundle = build(
        from_dict({"name": "x", "data": {"name": "fsdd_wav", "frames": 30}, "model": "cnn1d"}).data
    )
    assert bundle.meta.sizes["test"] == 10  # speaker cy held out
    assert sorted(p.name for p in (folder / "recordings").iterdir()) == sorted(n for n, _ in files)


def test_a_changed_recording_or_mode_is_refused(tmp_path, pinned):
    files, executable = pinned
    changed = [(files[0][0], files[0][1][:-2] + b"\x00\x01"), *files[1:]]
    archive = tmp_path / "a.tar.gz"
    archive.write_bytes(release(changed, executable))
    with pytest.raises(DataError, match="SHA-256 differs"):
        fsdd_files.ReleaseArchive("a.tar.gz", md5="").check(archive)
    archive.write_bytes(release(files))  # the same bytes, but the modes of another tree
    with pytest.raises(DataError, match="git tree .* is not FSDD v1.0.10's"):
        fsdd_files.ReleaseArchive("a.tar.gz", md5="").check(archive)
    archive.write_bytes(release(files, executable, extra=[("README.txt", b"x")]))
    assert len(archive_recordings(archive)[0]) == 30  # only recordings/*.wav count


def test_import_checks_a_folder_and_copies_it(tmp_path, data_dir, pinned, capsys):
    from dlab.cli import main

    files, _ = pinned
    clone = tmp_path / "clone" / "recordings"
    clone.mkdir(parents=True)
    for name, data in files:
        (clone / name).write_bytes(data)  # modes lost in a copy: only the SHA-256 is checked
    assert main(["data", "import", "fsdd_wav", str(tmp_path / "clone")]) == 0
    assert len(list((data_dir / "fsdd_wav" / "recordings").glob("*.wav"))) == 30
    (clone / files[3][0]).unlink()
    assert main(["data", "import", "fsdd_wav", str(clone)]) == 2
    assert "29 recordings where FSDD v1.0.10 has 30" in capsys.readouterr().err


def test_fetching_the_packaged_set_points_at_the_recordings():
    from dlab.catalog import fetch_dataset

    with pytest.raises(DataError, match="its files are `fsdd_wav`: dlab data fetch fsdd_wav"):
        fetch_dataset("fsdd", None)
