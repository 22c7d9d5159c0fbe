"""A floor service's outgoing hops: :class:`PeerLink` (mTLS, session, pipelined requests), send coalescing,
and the per-link latency ring its reports carry.

A link connects to the expected SPIFFE ID on the current certificate, opens a session with a
token for that audience, and pipelines ``Request`` frames. It moves to a new connection after a
renewal (its own or its peer's) and retires the old one once answered; a refusal by an authority
is fatal (:class:`~trustfabric.trading.errors.LinkDown`), a retryable failure (the exception's
``retryable``) is tried again with backoff until a deadline.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable

import msgspec

from trustfabric.control.server import ZERO_TRUST
from trustfabric.errors import TrustFabricError
from trustfabric.trading.errors import LinkDown
from trustfabric.transport.client import Requester, summarize
from trustfabric.transport.connection import FrameConnection, Limits, connect
from trustfabric.transport.errors import ConnectionClosed
from trustfabric.transport.frames import ErrorFrame, OpenSession, Ping, Pong, RenewSession, Request, Response, SessionReady


if TYPE_CHECKING:
    from trustfabric.trading.services.base import ServiceRuntime

CERT_EXPIRED = "cert.expired"
RETIRE_WAIT_S = 5.0  # a moved link's old connection closes once answered, or after this
LINK_LIMITS = Limits(idle_timeout_s=3600.0)


class LatencyRing:
    """The last N round trips of one link, in nanoseconds (p50/p99 on demand)."""

    def __init__(self, size: int = 4096) -> None:
        self.samples: deque[int] = deque(maxlen=size)
        self.count = 0

    def add(self, ns: int) -> None:
        self.samples.append(ns)
        self.count += 1

    def summary(self) -> list[float]:
        if not self.samples:
            return [0.0, 0.0, 0.0]
        rtt = summarize(list(self.samples))
        return [rtt.p50_us, rtt.p99_us, float(self.count)]


def coalesce_sends(conn: FrameConnection) -> None:
    """Make ``conn.send`` queue the frame and flush once per event-loop turn (one write, one audit fsync)."""
    loop = asyncio.get_running_loop()
    scheduled = [False]

    def flush() -> None:
        scheduled[0] = False
        if not conn.closed:
            conn.flush()

    def send(frame: Any) -> None:
        conn.queue(frame)
        if not scheduled[0]:
            scheduled[0] = True
            loop.call_soon(flush)

    conn.send = send  # type: ignore[method-assign]


class PeerLink:
    """One outgoing hop to a peer service: connect, open a session, pipeline requests.

    Each connection's requests and replies are a :class:`~trustfabric.transport.client.Requester`;
    a move leaves the old one to finish its own requests while new ones go to the new.
    """

    def __init__(self, runtime: "ServiceRuntime", target: str) -> None:
        self.runtime = runtime
        self.target = target
        self.conn: FrameConnection | None = None
        self.requester: Requester | None = None
        self._retiring: set[Requester] = set()
        self._opening: asyncio.Task | None = None
        self._scheduled = False
        self.opened_with = ""  # fingerprint of our certificate the connection was opened with
        self.moves = 0
        self._moving = False
        self.latency = LatencyRing()
        self.failures = 0
        self.refusals = 0
        self.last_error = ""
        self._renew_handle: asyncio.TimerHandle | None = None
        self._window: tuple[int, asyncio.Future] | None = None  # wait_window's (limit, waiter)

    @property
    def up(self) -> bool:
        return self.conn is not None and not self.conn.closed

    async def ensure(self, timeout_s: float = 5.0) -> None:
        """Connected and (zero-trust) in session, or :class:`LinkDown` after ``timeout_s`` of retries.

        A retryable failure (the peer or the control plane unreachable, a reset, a timeout) is
        tried again with backoff; any other refusal is final at once.
        """
        if self.up:
            return
        deadline = time.monotonic() + timeout_s
        delay = 0.02
        while True:
            try:
                if self._opening is None or self._opening.done():
                    self._opening = asyncio.get_running_loop().create_task(self._open())
                await asyncio.shield(self._opening)
                return
            except TrustFabricError as exc:
                self.failures += 1
                self.last_error = exc.reason
                if exc.reason == CERT_EXPIRED:
                    self.runtime.expired_cert_uses += 1
                if not exc.retryable:
                    raise LinkDown(f"{self.target}: {exc.reason}", reason=exc.reason) from None
            except (OSError, asyncio.TimeoutError) as exc:
                self.failures += 1
                self.last_error = type(exc).__name__
            if time.monotonic() + delay > deadline:
                raise LinkDown(f"{self.target} unreachable: {self.last_error}", reason="link.down")
            await asyncio.sleep(delay)
            delay = min(0.5, delay * 2)

    async def _open(self) -> None:
        self._adopt(*await self._connect())

    async def _connect(self) -> tuple[FrameConnection, float, str]:
        """A connection on the current certificate, in session (zero-trust); not yet this link's.

        Returns it with the session's expiry (0 in perimeter mode) and our certificate's fingerprint.
        A session the peer refuses is final (:class:`LinkDown` with its reason); a connection that
        closes before the session is ready is retryable.
        """
        rt = self.runtime
        zero_trust = rt.mode == ZERO_TRUST
        opened_with = ""
        if zero_trust:
            await rt.control_on_current()  # tokens are bound to the certificate the control channel shows
            opened_with = rt.credentials.current().fingerprint_sha256
        conn = await connect(rt.address_of(self.target), rt.ports[self.target], tls=rt.tls if zero_trust else None,
                             limits=LINK_LIMITS, expected_peer=rt.topology.spiffe_id(self.target) if zero_trust else None,
                             source=rt.address_of(rt.name) if rt.addresses else None)
        if not zero_trust:
            return conn, 0.0, opened_with
        ready: asyncio.Future = asyncio.get_running_loop().create_future()

        def early(frame: Any) -> None:
            if type(frame) in (SessionReady, ErrorFrame):
                if not ready.done():
                    ready.set_result(frame)
            elif type(frame) is Ping:
                conn.send(Pong(n=frame.n))

        def closed(reason: str) -> None:
            if not ready.done():
                ready.set_exception(ConnectionClosed(f"{self.target} closed before the session", reason=reason))

        for frame in conn.take_early_frames():
            early(frame)
        conn.on_frame = early
        conn.on_close = closed
        try:
            token, _aud = await rt.issuing.token(self.target)
            conn.send(OpenSession(token=token))
            answer = await asyncio.wait_for(ready, 5.0)
        except BaseException:
            conn.close()
            raise
        if isinstance(answer, ErrorFrame):
            conn.close()
            if answer.reason == CERT_EXPIRED:
                rt.expired_cert_uses += 1
            raise LinkDown(f"{self.target} refused the session", reason=answer.reason)
        return conn, answer.expires_at, opened_with

    def _adopt(self, conn: FrameConnection, expires_at: float, opened_with: str) -> None:
        requester = Requester(conn, on_other=self._on_other, on_reply=self._on_reply, closed_reply=_failed)
        requester.on_closed = lambda reason: self._on_close(reason, requester)
        self.conn, self.requester = conn, requester
        self.opened_with = opened_with
        if expires_at:
            self._schedule_renewal(expires_at)

    async def move(self) -> bool:
        """Re-open the link on the current certificates without dropping a request.

        New requests go to the new connection as soon as its session is ready; the old
        one is closed once the requests sent on it are answered (at most ``RETIRE_WAIT_S``).
        False when the link is down (the next request reconnects) or the new one failed.
        """
        if self._moving or not self.up:
            return False
        self._moving = True
        try:
            fresh = await self._connect()
        except (TrustFabricError, OSError, asyncio.TimeoutError) as exc:
            self.last_error = getattr(exc, "reason", type(exc).__name__)
            return False
        finally:
            self._moving = False
        old = self.requester
        self._adopt(*fresh)
        self.moves += 1
        if old is not None:
            self._retiring.add(old)
            asyncio.get_running_loop().create_task(self._retire(old))
        return True

    async def _retire(self, old: Requester) -> None:
        try:
            await old.drain(RETIRE_WAIT_S)
        finally:
            old.conn.close()
            self._retiring.discard(old)

    def _schedule_renewal(self, expires_at: float) -> None:
        loop = asyncio.get_running_loop()
        delay = max(1.0, (expires_at - self.runtime.clock.now()) / 2)
        if self._renew_handle is not None:
            self._renew_handle.cancel()
        self._renew_handle = loop.call_later(delay, lambda: loop.create_task(self._renew()))

    async def _renew(self) -> None:
        if not self.up:
            return
        rt = self.runtime
        if rt.mode == ZERO_TRUST and self.opened_with != rt.credentials.current().fingerprint_sha256:
            await self.move()  # a token now binds the new certificate: a new connection and session
            return
        try:
            token, _aud = await self.runtime.issuing.token(self.target)
            self.conn.send(RenewSession(token=token))  # type: ignore[union-attr]
        except Exception as exc:  # noqa: BLE001 - the session simply expires; the next request reopens
            self.last_error = getattr(exc, "reason", type(exc).__name__)

    def _on_close(self, reason: str, requester: Requester) -> None:
        """A connection closed (its requester already failed its own pending requests)."""
        if reason == CERT_EXPIRED:
            self.runtime.expired_cert_uses += 1
        if requester is self.requester:
            self.last_error = reason
        self._wake_window()

    def _on_reply(self, frame: Any, rtt_ns: int) -> None:
        self.latency.add(rtt_ns)
        if not frame.ok:
            self.refusals += 1
        window = self._window
        if window is not None and self.outstanding < window[0]:
            self._wake_window()

    def _on_other(self, frame: Any) -> None:
        kind = type(frame)
        if kind is SessionReady:
            self._schedule_renewal(frame.expires_at)
        elif kind is ErrorFrame:
            self.last_error = frame.reason
        elif kind is Ping:
            self.conn.send(Pong(n=frame.n))  # type: ignore[union-attr]

    def _flush(self) -> None:
        self._scheduled = False
        conn = self.conn
        if conn is not None and not conn.closed:
            conn.flush()

    def request(self, action: str, resource: str, body: bytes, *, symbol: str = "", notional: float = 0.0,
                callback: Callable[[Response], None] | asyncio.Future | None = None, trace_id: str = "") -> bool:
        """Queue one request (flushed at the end of this loop turn); False when the link is down."""
        requester = self.requester
        if requester is None or not self.up:
            return False
        requester.queue(Request(rid=requester.next_rid(), action=action, resource=resource, body=msgspec.Raw(body),
                                symbol=symbol, notional=notional, trace_id=trace_id), callback)
        if not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)
        return True

    async def call(self, action: str, resource: str, body: bytes, **kw: Any) -> Response:
        """One request and its reply (connecting first when needed)."""
        await self.ensure()
        fut = asyncio.get_running_loop().create_future()
        if not self.request(action, resource, body, callback=fut, **kw):
            raise LinkDown(f"{self.target} is down", reason="link.down")
        return await fut

    @property
    def outstanding(self) -> int:
        """Requests sent and not yet answered, on the current connection and on any being retired."""
        n = self.requester.outstanding if self.requester is not None else 0
        for old in self._retiring:
            n += old.outstanding
        return n

    async def wait_window(self, limit: int) -> None:
        """Return once fewer than ``limit`` requests are unanswered (or the link closed): no polling."""
        while self.outstanding >= limit and self.up:
            waiter = asyncio.get_running_loop().create_future()
            self._window = (limit, waiter)
            await waiter

    def _wake_window(self) -> None:
        window, self._window = self._window, None
        if window is not None and not window[1].done():
            window[1].set_result(None)

    def close(self) -> None:
        if self._renew_handle is not None:
            self._renew_handle.cancel()
        if self.conn is not None:
            self.conn.close()


def _failed(reason: str) -> Response:
    """What a request still pending on a closed connection gets: a refused reply with the close's reason."""
    return Response(rid=0, ok=False, reason=reason or "link.closed")
