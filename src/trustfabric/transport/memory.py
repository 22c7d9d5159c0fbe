"""An in-memory transport with the interface of :class:`~trustfabric.transport.connection.FrameConnection`.

For fast, exact tests of services: :func:`memory_pair` returns two connected
ends, each with a fixed :class:`~trustfabric.transport.tls.PeerIdentity` (what
mTLS would have verified). Frames still go through the codec as bytes (encode,
then the streaming decoder), so schemas, size limits and error frames behave as
on a socket; delivery is asynchronous (``loop.call_soon``), like a network.
:func:`serve_memory` runs a server handler on one end, as ``FrameServer`` would.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

from trustfabric.transport import errors as E
from trustfabric.transport.endpoint import FrameEndpoint
from trustfabric.transport.errors import ConnectionClosed, FrameError
from trustfabric.transport.frames import DEFAULT_CODEC, ErrorFrame, Frame, FrameCodec, FrameDecoder
from trustfabric.transport.tls import PeerIdentity


class MemoryConnection(FrameEndpoint):
    """One end of an in-memory framed link (same methods and attributes as FrameConnection)."""

    def __init__(self, *, codec: FrameCodec = DEFAULT_CODEC, peer: PeerIdentity | None = None, name: str = "") -> None:
        self._loop = asyncio.get_running_loop()
        self.codec = codec
        self.peer = peer
        self.name = name
        self._decoder = FrameDecoder(codec)
        self._batch = bytearray()
        self._init_endpoint()
        self._closed_future: asyncio.Future = self._loop.create_future()
        self._other: MemoryConnection | None = None
        self.on_before_flush: Callable[[], Any] | None = None
        self.on_close: Callable[[str], Any] | None = None
        self.closed = False
        self.close_reason = ""
        self.unsent = 0

    # -- receiving ---------------------------------------------------------------------
    def _received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            frames = self._decoder.feed(data)
        except FrameError as exc:
            self._deliver(exc.decoded)
            self.fail(exc.reason, exc.detail)
            return
        self._deliver(frames)

    def flush(self) -> None:
        if not self._batch or self.closed:
            return
        if self.on_before_flush is not None:
            try:
                self.on_before_flush()
            except Exception as exc:  # noqa: BLE001 - no audit flush, no effects: fail closed
                self._batch.clear()
                self.fail(E.FLUSH_REFUSED, repr(exc)[:200])
                return
        data, self._batch = bytes(self._batch), bytearray()
        self.write_raw(data)

    def send(self, frame: Frame) -> None:
        self.queue(frame)
        self.flush()

    def write_raw(self, data: bytes) -> None:
        """Put bytes on the link as they are (tests use it to send garbage)."""
        other = self._other
        if other is not None and not self.closed:
            self._loop.call_soon(other._received, data)

    async def drain(self) -> None:
        if self.closed:
            raise ConnectionClosed(self.name, reason=self.close_reason or E.CLOSED)

    # -- closing -----------------------------------------------------------------------
    def fail(self, reason: str, detail: str = "") -> None:
        if self.closed:
            return
        self._batch.clear()
        self.write_raw(self.codec.encode(ErrorFrame(reason=reason, detail=detail[:200])))
        self.close(reason)

    def close(self, reason: str = E.CLOSED) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._wake_receiver()
        if not self._closed_future.done():
            self._closed_future.set_result(reason)
        if self.on_close is not None:
            try:
                self.on_close(reason)
            except Exception:  # noqa: BLE001 - closing must not fail
                pass
        other = self._other
        if other is not None and not other.closed:
            self._loop.call_soon(other._peer_closed)

    def _peer_closed(self) -> None:
        try:
            self._decoder.eof()
        except FrameError as exc:
            self.close(exc.reason)
            return
        self.close(E.CLOSED)

    async def wait_closed(self) -> str:
        return await asyncio.shield(self._closed_future)


def memory_pair(
    *, client_peer: PeerIdentity | None, server_peer: PeerIdentity | None, codec: FrameCodec = DEFAULT_CODEC
) -> tuple[MemoryConnection, MemoryConnection]:
    """``(client_end, server_end)``: ``client_end.peer`` is the server's identity and vice versa."""
    client = MemoryConnection(codec=codec, peer=server_peer, name="memory-client")
    server = MemoryConnection(codec=codec, peer=client_peer, name="memory-server")
    client._other, server._other = server, client
    return client, server


def serve_memory(
    handler: Callable[[Any], Awaitable[None]],
    *,
    client_peer: PeerIdentity | None,
    server_peer: PeerIdentity | None,
    codec: FrameCodec = DEFAULT_CODEC,
) -> tuple[MemoryConnection, asyncio.Task]:
    """Run ``handler`` on the server end (closed when it returns); return the client end and the task."""
    client, server = memory_pair(client_peer=client_peer, server_peer=server_peer, codec=codec)

    async def run() -> None:
        try:
            await handler(server)
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001 - as FrameServer: a handler fault closes its link only
            server.fail("transport.handler_error", repr(exc)[:200])
        finally:
            server.close(E.CLOSED)

    return client, asyncio.get_running_loop().create_task(run())
