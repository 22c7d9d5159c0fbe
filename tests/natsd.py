"""A nats-server of a test's own (loopback, its own port and store): started, waited for, bounded."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

NATS = shutil.which("nats-server") or "/usr/sbin/nats-server"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nats(conf: Path, port: int, log: Path | None = None, timeout_s: float = 10.0) -> subprocess.Popen:
    """``nats-server -c conf`` once it accepts connections on ``port`` (killed and an error if it never does)."""
    args = [NATS, "-c", str(conf)] + (["-l", str(log)] if log is not None else [])
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    proc.wait(10)
    raise AssertionError(f"nats-server did not listen on {port} within {timeout_s} s")
