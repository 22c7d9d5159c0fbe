"""Decision tables over loopback: a table server process and the client an enforcement point uses.

The policy engine may live in another process. :class:`LoopbackTableSource` asks
it for a principal's table over TCP on 127.0.0.1 with a hard timeout (blocking;
:class:`AsyncLoopbackTableSource` awaits it on the caller's event loop); anything
that goes wrong (refused, reset, killed with ``kill -9``, hung, garbage answer)
raises :class:`EngineUnreachable`, which the enforcement point turns into a
refusal (fail closed). :func:`serve` is the other end, wrapping any table source;
``python -m trustfabric.enforcement.remote --rules FILE | --policies DIR`` runs it and prints
``PORT <n>`` once listening.

Wire format: 4-byte big-endian length + MessagePack, one request
``{"principal", "now"}`` and one reply ``{"table": DecisionTable}`` or
``{"error": reason}`` per exchange; a connection may carry many exchanges.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import socketserver
import struct
import sys
import threading

import msgspec

from trustfabric.enforcement.errors import EngineUnreachable
from trustfabric.errors import PolicyError
from trustfabric.nesting import msgpack_nesting_exceeds
from trustfabric.policy.decision import DecisionTable
from trustfabric.enforcement.tables import StaticTableSource
from trustfabric.policy.engine import PolicyEngine

MAX_REPLY = 8 * 1024 * 1024
_LEN = struct.Struct(">I")


class _Request(msgspec.Struct, frozen=True):
    principal: str
    now: float


class _Reply(msgspec.Struct, frozen=True, omit_defaults=True):
    table: DecisionTable | None = None
    error: str = ""


_req_dec = msgspec.msgpack.Decoder(_Request)
_rep_dec = msgspec.msgpack.Decoder(_Reply)
_enc = msgspec.msgpack.Encoder()


def _request(principal: str, now: float) -> bytes:
    """One request as it goes on the wire (length prefix + MessagePack)."""
    body = _enc.encode(_Request(principal, now))
    return _LEN.pack(len(body)) + body


def _reply_size(header: bytes) -> int:
    """The reply's length from its 4-byte prefix; ValueError beyond :data:`MAX_REPLY`."""
    (size,) = _LEN.unpack(header)
    if size > MAX_REPLY:
        raise ValueError(f"reply of {size} bytes")
    return size


def _decode_reply(body: bytes) -> _Reply:
    """A reply's body decoded, its nesting bounded first (ValueError beyond it)."""
    if msgpack_nesting_exceeds(body):
        raise ValueError("reply nested too deep")
    return _rep_dec.decode(body)


def _table(reply: _Reply, principal: str) -> DecisionTable:
    """The table the engine answered, or :class:`PolicyError` with its reason when it refused."""
    if reply.table is None:
        raise PolicyError(f"engine refused {principal}", reason=reply.error or "policy.error")
    return reply.table


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < n:
        chunk = sock.recv(n - len(chunks))
        if not chunk:
            raise ConnectionError("peer closed")
        chunks += chunk
    return bytes(chunks)


class LoopbackTableSource:
    """A :class:`~trustfabric.enforcement.ports.TableSource` reached over TCP, with a hard timeout."""

    def __init__(self, host: str, port: int, timeout_s: float = 0.25) -> None:
        self.address = (host, port)
        self.timeout_s = timeout_s
        self._sock: socket.socket | None = None
        self._lock = threading.Lock()

    def decision_table(self, principal: str, now: float) -> DecisionTable:
        with self._lock:
            try:
                sock = self._sock
                if sock is None:
                    sock = socket.create_connection(self.address, timeout=self.timeout_s)
                    sock.settimeout(self.timeout_s)
                    self._sock = sock
                sock.sendall(_request(principal, now))
                reply = _decode_reply(_recv_exact(sock, _reply_size(_recv_exact(sock, 4))))
            except Exception as exc:  # noqa: BLE001 - any failure: unreachable (fail closed)
                self.close()
                raise EngineUnreachable(f"{self.address}: {exc!r}") from None
        return _table(reply, principal)

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None


class AsyncLoopbackTableSource(LoopbackTableSource):
    """The same engine, awaited on the caller's event loop (``fetch_table``): an enforcement point
    given this source never blocks its loop on the engine, and its hot path never calls it."""

    def __init__(self, host: str, port: int, timeout_s: float = 0.25) -> None:
        super().__init__(host, port, timeout_s)
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._alock: asyncio.Lock | None = None

    async def fetch_table(self, principal: str, now: float) -> DecisionTable:
        """:meth:`decision_table` awaited on the caller's event loop (its own connection, same deadline)."""
        if self._alock is None:
            self._alock = asyncio.Lock()
        async with self._alock:
            try:
                async with asyncio.timeout(self.timeout_s):
                    if self._stream is None:
                        self._stream = await asyncio.open_connection(*self.address)
                    reader, writer = self._stream
                    writer.write(_request(principal, now))
                    size = _reply_size(await reader.readexactly(4))
                    reply = _decode_reply(await reader.readexactly(size))
            except Exception as exc:  # noqa: BLE001 - any failure: unreachable (fail closed)
                self._close_stream()
                raise EngineUnreachable(f"{self.address}: {exc!r}") from None
        return _table(reply, principal)

    def _close_stream(self) -> None:
        if self._stream is not None:
            self._stream[1].close()
            self._stream = None

    def close(self) -> None:
        self._close_stream()
        super().close()


def serve(source, host: str = "127.0.0.1", port: int = 0) -> socketserver.ThreadingTCPServer:
    """A threaded table server for ``source``; call ``serve_forever()`` on the result."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock: socket.socket = self.request
            while True:
                try:
                    (size,) = _LEN.unpack(_recv_exact(sock, 4))
                    body = _recv_exact(sock, min(size, 65536))
                    if msgpack_nesting_exceeds(body):
                        return
                    req = _req_dec.decode(body)
                except Exception:  # noqa: BLE001 - a closed, garbled or undecodable request ends its connection
                    return
                try:
                    reply = _Reply(table=source.decision_table(req.principal, req.now))
                except Exception as exc:  # noqa: BLE001 - the client fails closed on an error reply
                    reply = _Reply(error=getattr(exc, "reason", "policy.error"))
                body = _enc.encode(reply)
                sock.sendall(_LEN.pack(len(body)) + body)

    socketserver.ThreadingTCPServer.allow_reuse_address = True
    server = socketserver.ThreadingTCPServer((host, port), Handler)
    server.daemon_threads = True
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve decision tables on loopback.")
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--rules", help="a rules file (JSON)")
    group.add_argument("--policies", help="a Cedar policy directory for the policy engine")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--assume-healthy", action="store_true",
                        help="with --policies: read fixed, healthy signals (tests only); without it every decision "
                             "denies, since this process has no signal feed")
    args = parser.parse_args(argv)
    if args.policies:
        source = PolicyEngine.from_dir(args.policies, assume_healthy=args.assume_healthy)
    else:
        source = StaticTableSource.from_file(args.rules)
    server = serve(source, "127.0.0.1", args.port)
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
