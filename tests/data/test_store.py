"""Downloads (mirrors, resume, checksums, atomic placement) and imports, against a loopback server."""

from __future__ import annotations

import hashlib
import socket

import numpy as np
import pytest
from httpfixture import serve

from dlab.data.store import RemoteDataset, RemoteFile, fetch, import_files
from dlab.data.store import data_dir as default_data_dir
from dlab.errors import DataError

BLOBS = {
    "a.bin": np.random.default_rng(0).bytes(300_000),
    "b.bin": np.random.default_rng(1).bytes(1_000),
}


def remote(mirrors=("http://127.0.0.1:9/none",)) -> RemoteDataset:
    files = tuple(
        RemoteFile(name, hashlib.md5(data).hexdigest(), len(data)) for name, data in BLOBS.items()
    )
    return RemoteDataset("toy", files, tuple(mirrors))


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/gone"


def test_data_dir_follows_the_environment(data_dir):
    assert default_data_dir() == data_dir


def test_fetch_downloads_and_verifies(data_dir):
    seen = []

    def progress(name, total):
        seen.append((name, total))
        return lambda n: None

    with serve(BLOBS) as server:
        folder = fetch(remote([server.url]), progress=progress)
    assert folder == data_dir / "toy"
    for name, data in BLOBS.items():
        assert (folder / name).read_bytes() == data
    assert seen == [("a.bin", 300_000), ("b.bin", 1_000)]
    assert not list(folder.glob("*.part"))


def test_a_404_falls_back_to_the_next_mirror(data_dir):
    with serve({}) as empty, serve(BLOBS) as good:
        fetch(remote([empty.url, good.url]))
        assert [path for path, _ in empty.requests] == ["/files/a.bin", "/files/b.bin"]
    assert (data_dir / "toy" / "a.bin").read_bytes() == BLOBS["a.bin"]


def test_a_corrupt_mirror_falls_back_and_leaves_nothing_behind(data_dir):
    corrupt = {name: data[:-1] + b"X" for name, data in BLOBS.items()}
    with serve(corrupt) as bad, serve(BLOBS) as good:
        fetch(remote([bad.url, good.url]))
    assert (data_dir / "toy" / "b.bin").read_bytes() == BLOBS["b.bin"]
    with serve(corrupt) as bad, pytest.raises(DataError, match="does not have the published md5"):
        fetch(remote([bad.url]), root=data_dir / "other")
    assert not list((data_dir / "other" / "toy").iterdir())


def test_a_cut_download_resumes_where_it_stopped(data_dir):
    with serve(BLOBS, truncate={"a.bin"}) as server:
        with pytest.raises(DataError, match="could not download a.bin"):
            fetch(remote([server.url]))
        part = data_dir / "toy" / "a.bin.part"
        assert part.stat().st_size == 150_000
        assert not (data_dir / "toy" / "a.bin").exists()
        fetch(remote([server.url]))
        assert server.requests[-2] == ("/files/a.bin", "bytes=150000-")
    assert (data_dir / "toy" / "a.bin").read_bytes() == BLOBS["a.bin"]


def test_offline_error_says_how_to_import(data_dir):
    with pytest.raises(DataError) as info:
        fetch(remote([closed_port_url()]), timeout=2)
    message = str(info.value)
    assert "could not download a.bin for toy from any mirror" in message
    assert "dlab data import toy DIR" in message
    assert "\n" not in message


def test_existing_good_files_are_kept_and_bad_ones_refetched(data_dir):
    folder = data_dir / "toy"
    folder.mkdir()
    (folder / "a.bin").write_bytes(BLOBS["a.bin"])
    (folder / "b.bin").write_bytes(b"corrupt")
    with serve(BLOBS) as server:
        fetch(remote([server.url]))
        assert [path for path, _ in server.requests] == ["/files/b.bin"]
    assert (folder / "b.bin").read_bytes() == BLOBS["b.bin"]


def test_require_says_both_ways(data_dir):
    with pytest.raises(DataError) as info:
        remote().require()
    message = str(info.value)
    assert "missing a.bin, b.bin" in message
    assert "dlab data fetch toy" in message and "dlab data import toy DIR" in message


def test_import_verifies_then_copies(tmp_path, data_dir):
    source = tmp_path / "downloads"
    source.mkdir()
    for name, data in BLOBS.items():
        (source / name).write_bytes(data)
    folder = import_files(remote(), source)
    assert (folder / "a.bin").read_bytes() == BLOBS["a.bin"]
    (source / "b.bin").write_bytes(b"tampered")
    with pytest.raises(DataError, match=r"b.bin: checksum mismatch \(md5 [0-9a-f]{32}, published"):
        import_files(remote(), source, root=tmp_path / "elsewhere")
    (source / "b.bin").unlink()
    with pytest.raises(DataError, match="missing b.bin"):
        import_files(remote(), source)
    with pytest.raises(DataError, match="not a directory"):
        import_files(remote(), source / "a.bin")


def test_plain_http_is_refused_except_on_loopback(data_dir):
    from dlab.data.store import check_url

    check_url("https://example.org/a.bin")
    check_url("http://127.0.0.1:8000/a.bin")
    with pytest.raises(DataError, match="over https only"):
        check_url("http://example.org/a.bin")
    with pytest.raises(DataError, match="could not download a.bin.*over https only"):
        fetch(remote(mirrors=("http://example.org/files",)))


def test_a_redirect_from_https_to_http_is_refused():
    import urllib.request

    from dlab.data.store import _NoDowngrade

    request = urllib.request.Request("https://example.org/a.bin")
    with pytest.raises(DataError, match="a downgrade to plain http"):
        _NoDowngrade().redirect_request(request, None, 302, "Found", {}, "http://example.org/a")


def test_a_mirror_sending_more_than_the_published_size_is_cut_off(data_dir):
    big = {"a.bin": BLOBS["a.bin"] + b"x" * 500_000, "b.bin": BLOBS["b.bin"]}
    with serve(big) as server, pytest.raises(DataError, match="announces 800,000 bytes"):
        fetch(remote(mirrors=(server.url,)))
    assert not list((data_dir / "toy").glob("*.part"))  # nothing of it kept


def test_a_published_sha256_is_checked_instead_of_md5(data_dir):
    good = {name: hashlib.sha256(data).hexdigest() for name, data in BLOBS.items()}
    with serve(BLOBS) as server:
        files = tuple(  # the md5s are wrong on purpose: the sha256 decides
            RemoteFile(name, "0" * 32, len(data), good[name]) for name, data in BLOBS.items()
        )
        folder = fetch(RemoteDataset("toy", files, (server.url,)))
        assert sorted(p.name for p in folder.iterdir()) == ["a.bin", "b.bin"]
        wrong = (RemoteFile("b.bin", hashlib.md5(BLOBS["b.bin"]).hexdigest(), 1_000, "f" * 64),)
        with pytest.raises(DataError, match="does not have the published sha256 ffff"):
            fetch(RemoteDataset("toy2", wrong, (server.url,)))
