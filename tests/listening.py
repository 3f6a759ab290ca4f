"""Servers that tests start on loopback: a free port, and a process started on one and watched
until it really listens there (a port taken between choosing and binding makes it start again)."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` (or a child of it) holds the socket listening on `port`: Linux's
    /proc names each listening socket's inode, and each process's descriptors name theirs (a
    connection test would also succeed against whoever took the port first)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(f"socket:[{fields[9]}]")
    pids = [pid]
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            pids += map(int, Path(f"/proc/{pid}/task/{task}/children").read_text().split())
    for owner in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{owner}/fd"):
                with contextlib.suppress(OSError):
                    if os.readlink(f"/proc/{owner}/fd/{fd}") in inodes:
                        return True
    return False


def start_listening(command, env, started: list, cwd) -> int:
    """Start `command(port)` on a free port and wait until it listens there; a port taken
    between `free_port()` and the bind makes the process exit, and it starts again elsewhere."""
    for _ in range(3):
        port = free_port()
        process = subprocess.Popen(
            command(port), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=cwd
        )
        started.append(process)
        deadline = time.time() + 90
        while time.time() < deadline and process.poll() is None:  # a few seconds to listen
            if listens(process.pid, port):
                return port
            time.sleep(0.5)
        if process.poll() is None:
            raise AssertionError(f"{command(port)[0]} did not listen on {port} within 90 s")
    raise AssertionError(f"{command(port)[0]} exited three times (ports taken?)")
