"""Posture agents on Unix sockets: a host's processes ask their host's agent for a fresh signed report.

Theory of operation
-------------------
A workload's certificate is issued, and every renewal re-issued, only on a signed
posture report of its host that is younger than the posture window
(:mod:`trustfabric.signals.posture`). The report is signed by the *host's* posture
agent, whose key the workload never holds: a workload can carry a report, never
make one, and a report outlives its use by the posture window at most.

The launcher runs one :class:`~trustfabric.signals.host_agent.HostPostureAgent`
per topology host and serves each on its own Unix socket,
``<directory>/<host>.sock`` (the floor's run directory; where that path would not
fit a socket address, a directory of this user under the system's temporary
directory). The directory is 0700 and each socket 0600, and the
connecting process's uid (``SO_PEERCRED``) must be the agent's own: only the
processes of the floor's user on that host reach the agent. A workload is told its
host's socket path at boot and asks before its join and before every renewal
(:func:`fetch_report`); the agent inspects the host at that moment (off the event
loop) and signs. So the report the CA checks is seconds old, whatever the
certificate lifetime or the posture window.

At most :data:`MAX_IN_FLIGHT` requests are served at a time per agent socket; a
connection beyond that is closed at once and counted (``refused_busy``), so a
runaway local process cannot hold the agent's memory or its worker threads.

Protocol: the client sends ``REPORT\\n``; the agent answers a 4-byte big-endian
length and the signed report (:func:`~trustfabric.signals.posture.encode_signed`),
then closes. Anything else is answered with nothing and closed. A client that
gets no report in time, or garbage, raises :class:`PostureError`
(``posture.agent_unreachable``, ``posture.malformed``): no report, no renewal.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import socket
import stat
import struct
import tempfile
import time
from pathlib import Path
from typing import Iterable, Mapping

from trustfabric.signals.host_agent import HostPostureAgent
from trustfabric.signals.errors import PostureError
from trustfabric.signals.posture import decode_signed, encode_signed

REQUEST = b"REPORT\n"
MAX_REPORT_BYTES = 64 * 1024
FETCH_TIMEOUT_S = 3.0
MAX_IN_FLIGHT = 64  # requests served at once per agent socket (admission)
MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes on Linux
_LENGTH = struct.Struct(">I")
_PEERCRED = struct.Struct("3i")  # pid, uid, gid


def socket_directory(preferred: Path | str, hosts: Iterable[str]) -> Path:
    """``preferred`` when every host's socket path fits ``sun_path``; else a private directory of this
    user under the system's temporary directory, named by a digest of ``preferred`` (0700, ours, no link).
    """
    preferred = Path(preferred)
    longest = max((len(h) for h in hosts), default=0)
    if len(str(preferred)) + longest + len("/.sock") < MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(preferred.resolve()).encode()).hexdigest()[:16]
    base = Path(tempfile.gettempdir()) / f"trustfabric-{os.getuid()}"
    for directory in (base, base / digest):
        directory.mkdir(mode=0o700, exist_ok=True)
        info = os.lstat(directory)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
            raise PostureError(f"{directory} is not a directory of ours", reason="posture.agent_unreachable")
        os.chmod(directory, 0o700)
    return base / digest


def socket_path(directory: Path | str, host: str) -> Path:
    """Where ``host``'s agent listens under ``directory`` (host names are topology names: no slashes)."""
    if not host or "/" in host or host in (".", ".."):
        raise PostureError(f"no socket for host {host!r}", reason="posture.agent_unreachable")
    return Path(directory) / f"{host}.sock"


def peer_uid(sock: socket.socket) -> int | None:
    """The connecting process's uid, or None where the platform cannot tell (refused then)."""
    try:
        _pid, uid, _gid = _PEERCRED.unpack(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    except (OSError, AttributeError, struct.error):
        return None
    return uid


class PostureAgentServer:
    """One Unix socket per host agent, all on the caller's event loop."""

    def __init__(self, agents: Mapping[str, HostPostureAgent], directory: Path | str) -> None:
        self.agents = dict(agents)
        self.directory = socket_directory(directory, self.agents)
        self.paths: dict[str, Path] = {}
        self.served = 0
        self.refused = 0
        self.refused_busy = 0
        self._in_flight = 0
        self._servers: list[asyncio.base_events.Server] = []

    @property
    def in_flight(self) -> int:
        """Requests being served now (at most :data:`MAX_IN_FLIGHT`)."""
        return self._in_flight

    async def start(self) -> "PostureAgentServer":
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        for host, agent in sorted(self.agents.items()):
            path = socket_path(self.directory, host)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            old_umask = os.umask(0o177)  # the socket is created 0600, never briefly wider
            try:
                server = await asyncio.start_unix_server(lambda r, w, a=agent: self._serve(a, r, w), path=str(path))
            finally:
                os.umask(old_umask)
            os.chmod(path, 0o600)
            self._servers.append(server)
            self.paths[host] = path
        return self

    async def _serve(self, agent: HostPostureAgent, reader: asyncio.StreamReader,
                     writer: asyncio.StreamWriter) -> None:
        if self._in_flight >= MAX_IN_FLIGHT:
            self.refused_busy += 1
            writer.transport.abort()
            return
        self._in_flight += 1
        try:
            sock = writer.get_extra_info("socket")
            if sock is None or peer_uid(sock) != os.getuid():
                self.refused += 1
                return
            request = await asyncio.wait_for(reader.readline(), FETCH_TIMEOUT_S)
            if request != REQUEST:
                self.refused += 1
                return
            loop = asyncio.get_running_loop()
            signed = await loop.run_in_executor(None, agent.report, time.time())
            body = encode_signed(signed)
            writer.write(_LENGTH.pack(len(body)) + body)
            await asyncio.wait_for(writer.drain(), FETCH_TIMEOUT_S)
            self.served += 1
        except Exception:  # noqa: BLE001 - a bad client gets nothing; the agent keeps serving
            self.refused += 1
        finally:
            self._in_flight -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def close(self) -> None:
        for server in self._servers:
            server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(server.wait_closed(), 1.0)
        self._servers.clear()
        for path in self.paths.values():
            with contextlib.suppress(OSError):
                path.unlink()
        with contextlib.suppress(OSError):
            self.directory.rmdir()  # only when empty


async def fetch_report(path: Path | str, timeout_s: float = FETCH_TIMEOUT_S) -> bytes:
    """A fresh signed report from the agent at ``path`` (encoded); :class:`PostureError` when none comes."""
    try:
        async with asyncio.timeout(timeout_s):
            reader, writer = await asyncio.open_unix_connection(str(path))
            try:
                writer.write(REQUEST)
                await writer.drain()
                (size,) = _LENGTH.unpack(await reader.readexactly(_LENGTH.size))
                if not 0 < size <= MAX_REPORT_BYTES:
                    raise PostureError(f"posture agent sent {size} bytes", reason="posture.malformed")
                body = await reader.readexactly(size)
            finally:
                writer.close()
    except PostureError:
        raise
    except (OSError, TimeoutError, asyncio.IncompleteReadError, struct.error) as exc:
        raise PostureError(f"no report from the posture agent at {path}: {type(exc).__name__}: {exc}",
                           reason="posture.agent_unreachable") from None
    decode_signed(body)  # garbage is refused here (posture.malformed), not at the CA
    return body
