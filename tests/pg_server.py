"""A throw-away PostgreSQL server for the tests: its own data folder, loopback only, removed after.

Debian's PostgreSQL binaries (`/usr/lib/postgresql/N/bin`) run it; `.ci/run` installs them where
they are missing. PostgreSQL refuses to run as root, so under root (CI's containers) the server
runs as the `postgres` user that the package creates. Password authentication (scram-sha-256)
is on, over TCP, so that a wrong password is refused the way a real deployment refuses it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from listening import free_port

USER, PASSWORD, DATABASE = "dlab", "pg-test-s3cret", "dlab"


def binaries() -> Path | None:
    """The newest PostgreSQL server binaries on this machine, or None."""
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    folders = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4])
    )
    return Path(folders[-1]).parent if folders else None


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a server; yield its SQLAlchemy URL (user dlab, database dlab); stop and delete it."""
    bin_dir = binaries()
    if bin_dir is None:
        raise FileNotFoundError("PostgreSQL's initdb was not found (apt-get install postgresql)")
    as_user: list[str] = []
    folder = Path(tempfile.mkdtemp(prefix="dlab-pg-"))
    if os.geteuid() == 0:  # postgres will not run as root
        owner = pwd.getpwnam("postgres")
        os.chown(folder, owner.pw_uid, owner.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log, password_file = folder / "data", folder / "server.log", folder / "password"

    def run(*command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [*as_user, *command], capture_output=True, text=True, timeout=120, check=False
        )

    started = False
    try:
        run("sh", "-c", f"umask 077 && printf %s '{PASSWORD}' > {password_file}")
        made = run(
            str(bin_dir / "initdb"),
            "-D",
            str(data),
            "-U",
            USER,
            f"--pwfile={password_file}",
            "--auth=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        if made.returncode:
            raise RuntimeError(f"initdb failed: {made.stderr[-2000:]}")
        for attempt in range(3):  # the port is free when chosen; another process may take it
            port = free_port()
            options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
            start = run(
                str(bin_dir / "pg_ctl"),
                "-D",
                str(data),
                "-o",
                options,
                "-l",
                str(log),
                "-w",
                "start",
            )
            if start.returncode == 0:
                started = True
                break
            if attempt == 2:
                raise RuntimeError(f"pg_ctl start failed: {start.stderr}{_tail(log)}")
        url = f"postgresql+psycopg://{USER}:{PASSWORD}@127.0.0.1:{port}"
        import psycopg

        with psycopg.connect(
            f"host=127.0.0.1 port={port} user={USER} password={PASSWORD} dbname=postgres",
            autocommit=True,
        ) as connection:
            connection.execute(f"CREATE DATABASE {DATABASE}")
        yield f"{url}/{DATABASE}"
    finally:
        if started:
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(folder, ignore_errors=True)


def _tail(log: Path) -> str:
    try:
        return "\n" + log.read_text()[-2000:]
    except OSError:
        return ""
