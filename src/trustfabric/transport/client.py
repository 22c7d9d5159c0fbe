"""Request/response over a framed connection, rotation-safe clients, and the RTT probe.

* :class:`Requester` correlates replies to requests by ``rid`` (one future per
  outstanding request; the connection's ``on_frame`` callback resolves it).
* :class:`RotatingClient` keeps one live connection and re-establishes it on the
  *current* credentials before the certificate it was opened with (or the
  server's) expires. The switch happens between request/response pairs: new
  requests go to the new connection, the old one finishes the requests it
  carries and is closed - no message is lost and no expired certificate is
  ever presented.
* :func:`measure_rtt` times one small request/response round trip, many times,
  on an open connection (p50/p99 in microseconds); :func:`loopback_rtt` runs it
  against an echo server over plain TCP or mTLS on 127.0.0.1 (the hop benchmark
  reuses :func:`echo_handler`).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Callable

from trustfabric.clock import Clock
from trustfabric.percentiles import percentile
from trustfabric.transport import errors as E
from trustfabric.transport.connection import DEFAULT_LIMITS, FrameConnection, FrameServer, Limits, connect
from trustfabric.transport.errors import ConnectionClosed
from trustfabric.transport.frames import DEFAULT_CODEC, ErrorFrame, Frame, FrameCodec, Request, Response
from trustfabric.transport.tls import TLSConfig


Reply = Callable[[Frame], None] | asyncio.Future | None  # what a request's reply goes to


class Requester:
    """Sends requests on one connection and matches replies (``Response``/``ErrorFrame``) by ``rid``.

    A reply goes to a future (:meth:`request`) or to a callback registered with :meth:`queue`
    (a pipelining caller that flushes once per loop turn). Options for a long-lived link:

    * ``on_other`` receives every frame that answers no pending request (pings, session
      notices, connection-level errors); without it they are counted in ``unmatched``.
    * ``on_reply(frame, rtt_ns)`` sees every matched reply, with its round trip, before
      the reply is delivered.
    * ``closed_reply(reason)``: on close, pending requests get this frame instead of a
      :class:`ConnectionClosed` exception (callbacks always do; they cannot take one).
    * ``on_closed(reason)`` runs after the pending requests are failed.
    """

    def __init__(self, conn: FrameConnection, *, on_other: Callable[[Frame], None] | None = None,
                 on_reply: Callable[[Frame, int], None] | None = None,
                 closed_reply: Callable[[str], Frame] | None = None,
                 on_closed: Callable[[str], None] | None = None) -> None:
        self.conn = conn
        self._pending: dict[int, Reply] = {}
        self._sent_at: dict[int, int] = {}
        self._next_rid = 0
        self._loop = asyncio.get_running_loop()
        self.unmatched = 0
        self.on_other, self.on_reply, self.closed_reply, self.on_closed = on_other, on_reply, closed_reply, on_closed
        for frame in conn.take_early_frames():  # frames that arrived with the handshake
            self._on_frame(frame)
        conn.on_frame = self._on_frame
        conn.on_close = self._on_close

    @property
    def outstanding(self) -> int:
        return len(self._pending)

    def next_rid(self) -> int:
        self._next_rid += 1
        return self._next_rid

    def _on_frame(self, frame: Frame) -> None:
        rid = getattr(frame, "rid", 0)
        if rid not in self._pending:
            if self.on_other is not None:
                self.on_other(frame)
            elif not (isinstance(frame, ErrorFrame) and rid == 0):  # a connection-level error: the close follows
                self.unmatched += 1
            return
        reply = self._pending.pop(rid)
        if self.on_reply is not None:
            self.on_reply(frame, time.perf_counter_ns() - self._sent_at.pop(rid, 0))
        if isinstance(reply, asyncio.Future):
            if not reply.done():
                reply.set_result(frame)
        elif reply is not None:
            reply(frame)

    def _on_close(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        self._sent_at.clear()
        closed = self.closed_reply(reason) if self.closed_reply is not None else None
        for reply in pending.values():
            if isinstance(reply, asyncio.Future):
                if not reply.done():
                    if closed is not None:
                        reply.set_result(closed)
                    else:
                        reply.set_exception(ConnectionClosed(self.conn.name, reason=reason))
            elif reply is not None:
                with contextlib.suppress(Exception):  # one caller's failure does not stop the others being told
                    reply(closed if closed is not None else ErrorFrame(reason=reason or E.CLOSED))
        if self.on_closed is not None:
            self.on_closed(reason)

    def queue(self, frame: Frame, reply: Reply = None) -> None:
        """Queue ``frame`` (which carries its ``rid``) without flushing; its reply goes to ``reply``."""
        rid = frame.rid  # type: ignore[attr-defined]
        self.conn.queue(frame)
        self._pending[rid] = reply
        if self.on_reply is not None:
            self._sent_at[rid] = time.perf_counter_ns()

    async def request(self, frame: Frame) -> Frame:
        """Send ``frame`` (which carries its ``rid``) and wait for the reply with that rid."""
        future = self._loop.create_future()
        rid = frame.rid  # type: ignore[attr-defined]
        self._pending[rid] = future
        if self.on_reply is not None:
            self._sent_at[rid] = time.perf_counter_ns()
        try:
            self.conn.send(frame)
        except BaseException:
            self._pending.pop(rid, None)
            self._sent_at.pop(rid, None)
            raise
        return await future

    async def drain(self, timeout_s: float) -> None:
        """Wait until every request sent is answered, the connection closed, or ``timeout_s`` passed."""
        deadline = time.monotonic() + timeout_s
        while self._pending and not self.conn.closed:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            futures = [r for r in self._pending.values() if isinstance(r, asyncio.Future)]
            if futures:
                await asyncio.wait(futures, timeout=min(left, 1.0))
            else:
                await asyncio.sleep(min(left, 0.05))

    async def aclose(self) -> None:
        """Wait for the outstanding replies (bounded by the connection's own timeouts), then close."""
        while self._pending and not self.conn.closed:
            await self.drain(1.0)
        self.conn.close(E.CLOSED)


class RotatingClient:
    """A client that moves to fresh credentials before its connection's certificates expire.

    ``renew_before_s``: how long before the earlier of (our certificate's,
    the server's certificate's) ``not_after`` the connection is replaced.
    """

    def __init__(
        self,
        host: str,
        port: int,
        tls: TLSConfig,
        *,
        renew_before_s: float,
        codec: FrameCodec = DEFAULT_CODEC,
        limits: Limits = DEFAULT_LIMITS,
        expected_peer: str | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.renew_before_s = renew_before_s
        self.codec, self.limits, self.expected_peer = codec, limits, expected_peer
        self.clock = clock or tls.clock
        self._requester: Requester | None = None
        self._renew_at = 0.0
        self._rid = 0
        self._switching: asyncio.Lock | None = None
        self._retiring: set[asyncio.Task] = set()
        self.connections_opened = 0
        self.presented: list[tuple[float, float]] = []  # (handshake time, our not_after) per connection

    async def _open(self) -> Requester:
        ctx, credentials = self.tls.context(server_side=False)
        conn = await connect(self.host, self.port, tls=self.tls, codec=self.codec, limits=self.limits,
                             expected_peer=self.expected_peer)
        self.connections_opened += 1
        now = self.clock.now()
        self.presented.append((now, credentials.not_after))
        server_not_after = conn.peer.not_after if conn.peer is not None else credentials.not_after
        self._renew_at = min(credentials.not_after, server_not_after) - self.renew_before_s
        return Requester(conn)

    async def _current(self) -> Requester:
        requester = self._requester
        if requester is not None and not requester.conn.closed and self.clock.now() < self._renew_at:
            return requester
        if self._switching is None:
            self._switching = asyncio.Lock()
        async with self._switching:
            requester = self._requester
            if requester is not None and not requester.conn.closed and self.clock.now() < self._renew_at:
                return requester
            fresh = await self._open()
            self._requester = fresh
            if requester is not None:
                task = asyncio.get_running_loop().create_task(requester.aclose())
                self._retiring.add(task)
                task.add_done_callback(self._retiring.discard)
            return fresh

    async def request(self, action: str, resource: str, **fields) -> Frame:
        requester = await self._current()
        self._rid += 1
        return await requester.request(Request(rid=self._rid, action=action, resource=resource, **fields))

    async def aclose(self) -> None:
        if self._requester is not None:
            await self._requester.aclose()
        for task in list(self._retiring):
            with contextlib.suppress(Exception):
                await task


# -- measuring ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RttStats:
    n: int
    p50_us: float
    p99_us: float
    min_us: float
    max_us: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}rtt_us_p50": round(self.p50_us, 2), f"{prefix}rtt_us_p99": round(self.p99_us, 2),
                f"{prefix}rtt_us_min": round(self.min_us, 2), f"{prefix}rtt_us_max": round(self.max_us, 2)}


def summarize(samples_ns: list[int]) -> RttStats:
    if not samples_ns:
        raise ValueError("no samples")
    return RttStats(n=len(samples_ns), p50_us=percentile(samples_ns, 50) / 1000,
                    p99_us=percentile(samples_ns, 99) / 1000, min_us=min(samples_ns) / 1000,
                    max_us=max(samples_ns) / 1000)


async def measure_rtt(conn: FrameConnection, frame: Frame, *, n: int = 20000, warmup: int = 2000,
                      timer: Callable[[], int] = time.perf_counter_ns) -> RttStats:
    """Time ``n`` round trips of ``frame`` (each waits for the next incoming frame) on ``conn``."""
    loop = asyncio.get_running_loop()
    box: list[asyncio.Future | None] = [None]

    def on_frame(_reply: Frame) -> None:
        future = box[0]
        if future is not None and not future.done():
            future.set_result(None)

    previous = conn.on_frame
    conn.on_frame = on_frame
    samples: list[int] = []
    append = samples.append
    send = conn.send
    try:
        for i in range(warmup + n):
            future = loop.create_future()
            box[0] = future
            start = timer()
            send(frame)
            await future
            if i >= warmup:
                append(timer() - start)
    finally:
        conn.on_frame = previous
    return summarize(samples)


def echo_handler(conn: FrameConnection):
    """A server handler that answers every ``Request`` with ``Response(rid, ok=True)`` from the callback."""
    send = conn.send

    def on_frame(frame: Frame) -> None:
        send(Response(rid=getattr(frame, "rid", 0), ok=True))

    conn.on_frame = on_frame
    return conn.wait_closed()


async def loopback_rtt(*, server_tls: TLSConfig | None, client_tls: TLSConfig | None,
                       n: int = 20000, warmup: int = 2000) -> RttStats:
    """RTT of one small request/response through an echo server on 127.0.0.1 (one loop)."""
    async def handler(conn: FrameConnection) -> None:
        await echo_handler(conn)

    server = await FrameServer(handler, tls=server_tls, name="echo").start("127.0.0.1", 0)
    try:
        conn = await connect("127.0.0.1", server.port, tls=client_tls)
        try:
            probe = Request(rid=1, action="md.read", resource="md/quotes/XYZ", symbol="XYZ", notional=100.0)
            return await measure_rtt(conn, probe, n=n, warmup=warmup)
        finally:
            conn.close()
    finally:
        await server.close()
