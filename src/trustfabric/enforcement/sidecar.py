"""The sidecar: mTLS termination and connection-level enforcement for a service that is not Python.

A non-Python service (a C++ matching engine, a vendor gateway) listens on plain
TCP on loopback; the sidecar stands in front of it:

1. accepts TCP and runs the TLS 1.3 handshake itself (``loop.start_tls``) with a
   context that requires a client certificate chained to this trust domain, so
   that a refused handshake is an event (``handshake.refused``), not a silent drop;
2. takes the caller's identity from its certificate (the transport's
   ``peer_identity``), opens a certificate-only session at the enforcement point
   (revocation and quarantine are refused there), and checks the policy decision
   for ``("connect", <service resource>)`` on the hot path - logged like every
   decision, flushed to the audit sink before the first byte goes upstream;
3. proxies bytes both ways. Before each chunk it checks the session is still
   open and current: a quarantine or revocation push closes the connection at
   once, and an invalidation gets the connection re-decided (and closed if the
   new decision denies or the engine is unreachable).

The policy side is any table source (the policy engine, or a rules file).

Revocations and quarantines reach the sidecar like every enforcement point: a
:class:`RevocationMirror` keeps a copy of the fabric's revocation set, fed by
the identity store (polled off the event loop, :meth:`RevocationMirror.follow_store`)
and by the control plane's push when one runs (:meth:`RevocationMirror.apply`).
The TLS layer and the enforcement point both consult it, so a revoked
certificate or quarantined identity is refused at the handshake, and a change
closes the live connections it covers at once. A mirror that has not heard from
the store for ``max_age_s`` refuses every handshake (fail closed).
"""

from __future__ import annotations

import asyncio
import ssl
from typing import Any, Callable, Iterable

from trustfabric.audit.events import Kind
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.enforcement.errors import SessionRefused
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.ports import PeerLike
from trustfabric.errors import IdentityError, TrustFabricError
from trustfabric.transport.tls import classify_handshake_error

CONNECT = "connect"
CHUNK = 64 * 1024
STORE_POLL_S = 0.25  # how often the identity store's revocations are read
REVOCATIONS_MAX_AGE_S = 5.0  # a mirror not refreshed for this long refuses every handshake
REVOCATION_KINDS = ("serial", "spiffe_id", "release_spiffe_id")


class RevocationsStale(IdentityError):
    """The sidecar's copy of the revocation set is too old to answer: handshakes are refused."""

    reason = "revocation.stale"


class RevocationMirror:
    """The sidecar's copy of the revocation set: ``is_revoked`` for the TLS layer and the PEP, pushed changes.

    ``revocations`` is an in-memory identity ``RevocationSet`` (its ``revoke_serial``,
    ``revoke_spiffe_id``, ``release_spiffe_id``, ``is_revoked`` and ``subscribe``); the mirror
    applies to it the identity store's rows (:meth:`load`, in store order) and the control
    plane's pushes (:meth:`apply`). Both run on the event loop's thread, so the sessions a
    change closes are closed there.
    """

    def __init__(self, revocations: Any, *, clock: Clock = SYSTEM_CLOCK,
                 max_age_s: float = REVOCATIONS_MAX_AGE_S) -> None:
        self.revocations = revocations
        self._clock = clock
        self.max_age_s = max_age_s
        self._loaded = 0  # store rows applied so far (the table is append-only)
        self._fresh_at: float | None = None  # monotonic time of the last successful read of the store
        self.store_failures = 0
        self.last_error = ""

    def load(self, rows: Iterable[Any]) -> int:
        """Apply the store's revocation rows not applied yet (rows in store order); returns how many."""
        rows = list(rows)
        if len(rows) < self._loaded:  # the store was replaced: re-apply all (each change is idempotent)
            self._loaded = 0
        fresh = rows[self._loaded:]
        for row in fresh:
            self.apply(row.kind, row.value, row.reason, row.revoked_at)
        self._loaded = len(rows)
        self._fresh_at = self._clock.monotonic()
        return len(fresh)

    def apply(self, kind: str, value: str, reason: str, at: float | None = None) -> None:
        """One change (a store row or a control-plane push); an unknown kind or bad value changes nothing."""
        if kind not in REVOCATION_KINDS:
            return
        now = self._clock.now() if at is None else at
        try:
            if kind == "serial":
                if not self.revocations.is_revoked(int(value), ""):
                    self.revocations.revoke_serial(int(value), now, reason)
            elif kind == "spiffe_id":
                if not self.revocations.is_quarantined(value):
                    self.revocations.revoke_spiffe_id(value, now, reason)
            elif self.revocations.is_quarantined(value):
                self.revocations.release_spiffe_id(value, now, reason)
        except (TrustFabricError, ValueError) as exc:
            self.last_error = getattr(exc, "reason", "revocation.bad_entry")

    @property
    def stale(self) -> bool:
        return self._fresh_at is None or self._clock.monotonic() - self._fresh_at > self.max_age_s

    def is_revoked(self, serial: int, spiffe_id: str) -> bool:
        """True when the serial is revoked or the identity quarantined; raises when the copy is too old."""
        if self.stale:
            raise RevocationsStale(f"no revocation data for {self.max_age_s} s ({self.last_error or 'never read'})")
        return bool(self.revocations.is_revoked(serial, spiffe_id))

    def is_quarantined(self, spiffe_id: str) -> bool:
        return bool(self.revocations.is_quarantined(spiffe_id))

    def subscribe(self, callback: Callable[[Any], None]) -> Callable[[], None]:
        return self.revocations.subscribe(callback)

    async def follow_store(self, read: Callable[[], Any], stop: asyncio.Event,
                           interval_s: float = STORE_POLL_S) -> None:
        """Poll ``read()`` (the store's ``(version, rows)``) in a worker thread every ``interval_s``
        until ``stop``; the rows are applied on the event loop. A failed read is counted and retried."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            try:
                _version, rows = await loop.run_in_executor(None, read)
                self.load(rows)
            except Exception as exc:  # noqa: BLE001 - counted; the mirror turns stale and refuses
                self.store_failures += 1
                self.last_error = getattr(exc, "reason", type(exc).__name__)
            try:
                await asyncio.wait_for(stop.wait(), interval_s)
            except TimeoutError:
                pass


class _HeldConnection(asyncio.Protocol):
    """Holds a fresh TCP connection unread until the TLS handshake takes it over."""

    def __init__(self, on_connect: Callable[[asyncio.Transport], None]) -> None:
        self._on_connect = on_connect

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport.pause_reading()  # the ClientHello must stay in the kernel for the TLS layer
        self._on_connect(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        return None


class Sidecar:
    """Terminates mTLS on ``listen`` and forwards authorized connections to ``upstream``."""

    def __init__(self, pep: EnforcementPoint, resource: str, upstream: tuple[str, int],
                 ssl_context: ssl.SSLContext, peer_identity: Callable[[Any], PeerLike], *,
                 action: str = CONNECT, handshake_timeout_s: float = 5.0,
                 upstream_timeout_s: float = 5.0) -> None:
        self.pep = pep
        self.resource = resource
        self.action = action
        self.upstream = upstream
        self.ssl_context = ssl_context
        self.peer_identity = peer_identity
        self.handshake_timeout_s = handshake_timeout_s
        self.upstream_timeout_s = upstream_timeout_s
        self.server: asyncio.base_events.Server | None = None
        self.accepted = 0
        self.refused = 0
        self.proxied_bytes = 0
        self._tasks: set[asyncio.Task] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _HeldConnection(self._accept), host, port)
        return self.server.sockets[0].getsockname()[:2]

    def _accept(self, transport: asyncio.Transport) -> None:
        task = asyncio.get_running_loop().create_task(self._handshake(transport))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handshake(self, raw: asyncio.Transport) -> None:
        """Run the TLS handshake ourselves so that a refusal is an event, then hand over to streams."""
        loop = asyncio.get_running_loop()
        addr = raw.get_extra_info("peername")
        reader = asyncio.StreamReader(limit=CHUNK * 4)
        protocol = asyncio.StreamReaderProtocol(reader)
        try:
            tls = await loop.start_tls(raw, protocol, self.ssl_context, server_side=True,
                                       ssl_handshake_timeout=self.handshake_timeout_s)
        except (ssl.SSLError, OSError, asyncio.TimeoutError, ConnectionError) as exc:
            self._refuse_handshake(classify_handshake_error(exc), repr(exc), addr)
            raw.abort()
            return
        if tls is None:
            self._refuse_handshake("handshake.tls_failed", "connection lost during handshake", addr)
            raw.abort()
            return
        protocol.connection_made(tls)
        writer = asyncio.StreamWriter(tls, protocol, reader, loop)
        await self._handle(reader, writer)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    def _refuse_handshake(self, reason: str, detail: str, addr: Any) -> None:
        self.refused += 1
        self.pep.events.emit(Kind.HANDSHAKE_REFUSED, reason=reason,
                             detail={"detail": detail[:300], "remote": str(addr)})

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        addr = writer.get_extra_info("peername")
        try:
            peer = self.peer_identity(writer.get_extra_info("ssl_object"))
        except TrustFabricError as exc:
            self._refuse_handshake(exc.reason, exc.detail, addr)
            writer.transport.abort()
            return
        except Exception as exc:  # noqa: BLE001 - an unreadable identity is a refusal
            self._refuse_handshake("handshake.no_identity", repr(exc), addr)
            writer.transport.abort()
            return
        try:
            session = self.pep.open_connection(peer, trace_id=f"sidecar:{addr}")
        except SessionRefused:
            self.refused += 1
            self.pep.flush_decisions()
            writer.transport.abort()
            return
        allowed, reason = self.pep.check(session, self.action, self.resource)
        self.pep.flush_decisions()  # the decision is durable before any byte leaves
        if not allowed:
            self.refused += 1
            self.pep.close(session, reason)
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(*self.upstream), self.upstream_timeout_s)
        except (OSError, asyncio.TimeoutError) as exc:
            self.pep.close(session, "sidecar.upstream_unreachable")
            self.pep.events.emit(Kind.SESSION_CLOSE, principal=session.principal,
                                 reason="sidecar.upstream_unreachable", detail={"detail": repr(exc)})
            writer.transport.abort()
            return
        self.accepted += 1
        loop = asyncio.get_running_loop()

        def drop(_reason: str) -> None:  # a push from any thread closes both legs now
            loop.call_soon_threadsafe(writer.transport.abort)
            loop.call_soon_threadsafe(up_writer.transport.abort)

        session.on_close = drop
        if not session.open:  # closed between check and here
            drop(session.close_reason)
        await asyncio.gather(self._pump(reader, up_writer, session, check=True),
                             self._pump(up_reader, writer, session, check=False),
                             return_exceptions=True)
        self.pep.close(session, "session.closed_by_peer")

    def _still_allowed(self, session) -> bool:
        if not session.open:
            return False
        if not self.pep.is_current(session):
            allowed, reason = self.pep.check(session, self.action, self.resource)
            self.pep.flush_decisions()
            if not allowed:
                self.pep.close(session, reason)
                return False
        return True

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, session, *, check: bool) -> None:
        try:
            while True:
                data = await src.read(CHUNK)
                if not data:
                    break
                if not self._still_allowed(session):
                    break
                dst.write(data)
                self.proxied_bytes += len(data)
                await dst.drain()
        except (OSError, ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            if not session.open:
                dst.transport.abort()
            elif check:  # client finished sending: half-close towards the service
                try:
                    if dst.can_write_eof() and not dst.is_closing():
                        dst.write_eof()
                except (OSError, RuntimeError):
                    dst.transport.abort()
            else:
                dst.close()
