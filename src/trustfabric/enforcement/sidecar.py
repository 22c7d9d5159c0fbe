"""The sidecar: mTLS termination and connection-level enforcement for a service that is not Python.

A non-Python service (a C++ matching engine, a vendor gateway) listens on plain
TCP on loopback; the sidecar stands in front of it:

1. accepts through the transport's :class:`~trustfabric.transport.listener.StreamListener`:
   admission control (caps on connections in handshake and in total, per source),
   then the TLS 1.3 handshake on the socket itself with a context that requires a
   client certificate chained to this trust domain, so that a refused handshake is
   a TLS alert to the client (``certificate_required``, ``unknown_ca``...) and an
   event (``handshake.refused``), not a silent drop;
2. takes the caller's identity from its certificate (the transport's
   ``peer_identity``), opens a certificate-only session at the enforcement point
   (revocation and quarantine are refused there), and checks the policy decision
   for ``("connect", <service resource>)`` on the hot path - logged like every
   decision, flushed to the audit sink before the first byte goes upstream;
3. proxies bytes both ways with a splice driven by the event loop's readiness
   callbacks (:class:`_Splice`): a readable socket is read into the other side's
   socket in the same callback, with no task, stream buffer or future per chunk;
   a peer that does not read stops the reading of the other side (back-pressure).
   Before each chunk it checks the session is still open and current: a
   quarantine or revocation push closes the connection at once, and an
   invalidation gets the connection re-decided (and closed if the new decision
   denies or the engine is unreachable);
4. after each forwarded chunk, keeps polling the sockets for ``busy_poll_us``
   (:class:`BusyPoll`, 100 us by default) instead of sleeping, so the service's
   reply and the client's next request are read without a process wake-up. It
   spends CPU only while traffic flows; ``busy_poll_us=0`` turns it off.

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
import contextlib
import socket
import ssl
import time
from typing import Any, Callable, Iterable

from trustfabric.audit.events import Kind
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.enforcement.errors import SessionRefused
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.ports import PeerLike
from trustfabric.errors import IdentityError, TrustFabricError
from trustfabric.transport.admission import DEFAULT_ADMISSION, AdmissionLimits
from trustfabric.transport.listener import SocketStream, StreamListener

CONNECT = "connect"
CHUNK = 64 * 1024
STORE_POLL_S = 0.25  # how often the identity store's revocations are read
REVOCATIONS_MAX_AGE_S = 5.0  # a mirror not refreshed for this long refuses every handshake
REVOCATION_KINDS = ("serial", "spiffe_id", "release_spiffe_id")
DEFAULT_BUSY_POLL_US = 100.0  # polling window after each forwarded chunk (BusyPoll); 0 turns polling off


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


class BusyPoll:
    """Keep the event loop polling for ready sockets, without sleeping, for a window after each forwarded chunk.

    While a ``call_soon`` callback is pending the loop polls epoll with a zero timeout, so the
    reply a service sends a few microseconds after a request is read at once, with no sleep
    and wake-up of the process in between (haproxy's ``busy-polling``, bounded by a window).
    On a virtual machine a wake-up on another CPU costs tens of microseconds, most of what a
    proxy adds to a round trip; polling removes the sidecar's two per round trip.

    The cost is CPU, and only while traffic flows: at most ``window_us`` of polling per
    forwarded chunk, a core while chunks come faster than one per window, nothing on an
    idle sidecar. ``polled_s`` counts the time spent polling (a metric), ``window_us=0``
    turns it off.
    """

    def __init__(self, window_us: float) -> None:
        self.window_s = max(0.0, window_us) / 1e6
        self.polled_s = 0.0  # seconds spent polling, in all
        self._until = 0.0
        self._since = 0.0
        self._spinning = False
        self._loop: asyncio.AbstractEventLoop | None = None

    def touch(self) -> None:
        if not self.window_s:
            return
        now = time.monotonic()
        self._until = now + self.window_s
        if not self._spinning:
            self._spinning = True
            self._since = now
            if self._loop is None:
                self._loop = asyncio.get_running_loop()
            self._loop.call_soon(self._spin)

    def _spin(self) -> None:
        now = time.monotonic()
        if now < self._until:
            self._loop.call_soon(self._spin)  # type: ignore[union-attr]
        else:
            self._spinning = False
            self.polled_s += now - self._since


_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Sidecar:
    """Terminates mTLS on ``listen`` and forwards authorized connections to ``upstream``.

    ``ssl_context`` is a server context, or a callable returning the current one
    (certificates rotate); ``peer_identity(ssl_socket)`` is the identity step
    (the transport's ``TLSConfig.verify_peer``).
    """

    def __init__(self, pep: EnforcementPoint, resource: str, upstream: tuple[str, int],
                 ssl_context: ssl.SSLContext | Callable[[], ssl.SSLContext],
                 peer_identity: Callable[[Any], PeerLike], *,
                 action: str = CONNECT, handshake_timeout_s: float = 5.0,
                 upstream_timeout_s: float = 5.0, admission: AdmissionLimits = DEFAULT_ADMISSION,
                 busy_poll_us: float = DEFAULT_BUSY_POLL_US) -> None:
        self.pep = pep
        self.resource = resource
        self.action = action
        self.upstream = upstream
        self._context = ssl_context if callable(ssl_context) else (lambda: ssl_context)
        self.peer_identity = peer_identity
        self.upstream_timeout_s = upstream_timeout_s
        self.listener = StreamListener(self._serve, context=self._context, on_refuse=self._refuse_handshake,
                                       admission=admission, handshake_timeout_s=handshake_timeout_s,
                                       name="sidecar")
        self.busy_poll = BusyPoll(busy_poll_us)
        self.accepted = 0
        self.refused = 0
        self._closed_bytes = 0  # bytes moved by connections that ended (open ones count their own)
        self._splices: set[_Splice] = set()

    async def start(self, host: str, port: int) -> tuple[str, int]:
        await self.listener.start(host, port)
        return self.listener.address

    async def close(self) -> None:
        await self.listener.close()
        for splice in list(self._splices):
            splice.abort("sidecar.stopped")

    @property
    def proxied_bytes(self) -> int:
        return self._closed_bytes + sum(splice.bytes for splice in self._splices)

    def stats(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "refused": self.refused, "proxied_bytes": self.proxied_bytes,
                "open": len(self._splices), "handshake_refusals": dict(self.listener.refusals),
                "busy_poll_s": self.busy_poll.polled_s,
                "admission": self.listener.admission.stats()}

    def _refuse_handshake(self, reason: str, detail: str, addr: Any, presented: str = "") -> None:
        self.refused += 1
        self.pep.events.emit(Kind.HANDSHAKE_REFUSED, principal=presented, decision="deny", reason=reason,
                             detail={"detail": detail[:300], "remote": str(addr)})

    async def _serve(self, stream: SocketStream) -> None:
        addr = stream.get_extra_info("peername")
        sock = stream.sock
        try:
            peer = self.peer_identity(sock)
        except TrustFabricError as exc:
            self._refuse_handshake(exc.reason, exc.detail, addr, getattr(exc, "presented", ""))
            return
        except Exception as exc:  # noqa: BLE001 - an unreadable identity is a refusal
            self._refuse_handshake("handshake.no_identity", repr(exc), addr)
            return
        try:
            session = self.pep.open_connection(peer, trace_id=f"sidecar:{addr}")
        except SessionRefused:
            self.refused += 1
            self.pep.flush_decisions()
            return
        allowed, reason = self.pep.check(session, self.action, self.resource)
        self.pep.flush_decisions()  # the decision is durable before any byte leaves
        if not allowed:
            self.refused += 1
            self.pep.close(session, reason)
            return
        loop = asyncio.get_running_loop()
        upstream = socket.socket(socket.AF_INET6 if ":" in self.upstream[0] else socket.AF_INET, socket.SOCK_STREAM)
        upstream.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(upstream, self.upstream), self.upstream_timeout_s)
            upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except (OSError, asyncio.TimeoutError) as exc:
            upstream.close()
            self.pep.close(session, "sidecar.upstream_unreachable")
            self.pep.events.emit(Kind.SESSION_CLOSE, principal=session.principal,
                                 reason="sidecar.upstream_unreachable", detail={"detail": repr(exc)})
            return
        self.accepted += 1
        splice = _Splice(self, sock, upstream, session)
        self._splices.add(splice)
        stream.sock = None  # the splice owns the socket now  # type: ignore[assignment]
        stream.closed = True

        def drop(_reason: str) -> None:  # a push from any thread closes both legs now
            loop.call_soon_threadsafe(splice.abort, "session.closed")

        session.on_close = drop
        try:
            splice.start()
            if not session.open:  # closed between check and here
                splice.abort("session.closed")
            await splice.done
        finally:
            self._splices.discard(splice)
            self._closed_bytes += splice.bytes
            self.pep.close(session, "session.closed_by_peer")

    def still_allowed(self, session) -> bool:
        """The session is open and its decision current (re-decided, and flushed, when the epoch moved)."""
        if not session.open:
            return False
        if not self.pep.is_current(session):
            allowed, reason = self.pep.check(session, self.action, self.resource)
            self.pep.flush_decisions()
            if not allowed:
                self.pep.close(session, reason)
                return False
        return True


class _Splice:
    """One proxied connection: the client's TLS socket and the service's plain socket, moved by callbacks.

    Each readable side is read until it would block and written straight into the
    other side's socket; what the other side's kernel does not take waits in a
    buffer, and the reading stops until it drained (back-pressure). The client's
    end of stream half-closes the service's side (``shutdown(SHUT_WR)``); the
    service's end closes both.
    """

    def __init__(self, sidecar: Sidecar, client: ssl.SSLSocket, upstream: socket.socket, session) -> None:
        self.sidecar = sidecar
        self.session = session
        self.bytes = 0
        self._touch = sidecar.busy_poll.touch
        self._current = sidecar.pep.is_current  # the per-chunk check; the re-decision is sidecar.still_allowed
        self._loop = asyncio.get_running_loop()
        self.done: asyncio.Future = self._loop.create_future()
        self._client = client
        self._upstream = upstream
        self._cfd = client.fileno()
        self._ufd = upstream.fileno()
        sslobj = getattr(client, "_sslobj", None)  # the C-level TLS object: no wrapper checks per call
        if sslobj is not None and all(hasattr(sslobj, n) for n in ("read", "write", "pending")):
            self._c_read, self._c_write, self._c_pending = sslobj.read, sslobj.write, sslobj.pending
        else:  # pragma: no cover - another ssl implementation
            self._c_read, self._c_write, self._c_pending = client.recv, client.send, client.pending
        self._to_up = bytearray()
        self._to_client = bytearray()
        # one receive buffer per direction, reused: no allocation per chunk on the forwarding path
        self._in_client = bytearray(CHUNK)
        self._in_client_view = memoryview(self._in_client)
        self._in_upstream = bytearray(CHUNK)
        self._in_upstream_view = memoryview(self._in_upstream)
        self._client_eof = False
        self._closed = False
        self._reading_client = False
        self._reading_upstream = False
        self._writing_up = False
        self._writing_client = False

    def start(self) -> None:
        self._resume_client()
        self._resume_upstream()
        self._client_readable()  # bytes that came with the handshake are already inside OpenSSL

    # -- client -> service -------------------------------------------------------------------
    def _resume_client(self) -> None:
        if not self._reading_client and not self._client_eof and not self._closed:
            self._reading_client = True
            self._loop.add_reader(self._cfd, self._client_readable)

    def _pause_client(self) -> None:
        if self._reading_client:
            self._reading_client = False
            self._loop.remove_reader(self._cfd)

    def _client_readable(self) -> None:
        view = self._in_client_view
        while not self._closed:
            try:
                n = self._c_read(CHUNK, self._in_client)
            except _WOULD_BLOCK:
                return
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                n = 0
            except (ssl.SSLError, OSError):
                self.abort("sidecar.client_reset")
                return
            if not n:
                self._client_eof = True
                self._pause_client()
                if not self._to_up:
                    self._half_close_upstream()
                return
            if not self._current(self.session) and not self.sidecar.still_allowed(self.session):
                self.abort("session.closed")
                return
            self.bytes += n
            self._send_up(view[:n])
            self._touch()
            if self._to_up:  # the service is not taking it: stop reading until it did
                self._pause_client()
                return
            if not self._c_pending():
                return

    def _send_up(self, data: memoryview) -> None:
        try:
            sent = self._upstream.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.abort("sidecar.upstream_reset")
            return
        if sent < len(data):
            self._to_up += data[sent:]  # copied: the receive buffer is reused
            if not self._writing_up:
                self._writing_up = True
                self._loop.add_writer(self._ufd, self._upstream_writable)

    def _upstream_writable(self) -> None:
        try:
            sent = self._upstream.send(self._to_up)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort("sidecar.upstream_reset")
            return
        del self._to_up[:sent]
        if not self._to_up:
            self._writing_up = False
            self._loop.remove_writer(self._ufd)
            if self._client_eof:
                self._half_close_upstream()
            else:
                self._resume_client()
                self._client_readable()

    def _half_close_upstream(self) -> None:
        with contextlib.suppress(OSError):
            self._upstream.shutdown(socket.SHUT_WR)

    # -- service -> client -------------------------------------------------------------------
    def _resume_upstream(self) -> None:
        if not self._reading_upstream and not self._closed:
            self._reading_upstream = True
            self._loop.add_reader(self._ufd, self._upstream_readable)

    def _pause_upstream(self) -> None:
        if self._reading_upstream:
            self._reading_upstream = False
            self._loop.remove_reader(self._ufd)

    def _upstream_readable(self) -> None:
        try:
            n = self._upstream.recv_into(self._in_upstream)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self.abort("sidecar.upstream_reset")
            return
        if not n:
            self._pause_upstream()
            if not self._to_client:
                self.abort("session.closed_by_service")
            return
        if not self._current(self.session) and not self.sidecar.still_allowed(self.session):
            self.abort("session.closed")
            return
        self.bytes += n
        self._touch()
        data = self._in_upstream_view[:n]
        if not self._to_client:  # nothing waiting: straight into the TLS connection
            try:
                self._c_write(data)
                return
            except _WOULD_BLOCK:
                pass
            except (ssl.SSLError, OSError):
                self.abort("sidecar.client_reset")
                return
        self._to_client += data  # copied: the receive buffer is reused
        self._flush_client()
        if self._to_client:
            self._pause_upstream()

    def _flush_client(self) -> None:
        try:
            # a TLS write that would block is retried with the same (possibly longer) buffer
            sent = self._c_write(self._to_client)
        except _WOULD_BLOCK:
            sent = 0
        except (ssl.SSLError, OSError):
            self.abort("sidecar.client_reset")
            return
        del self._to_client[:sent]
        if self._to_client:
            if not self._writing_client:
                self._writing_client = True
                self._loop.add_writer(self._cfd, self._client_writable)
        elif self._writing_client:
            self._writing_client = False
            self._loop.remove_writer(self._cfd)

    def _client_writable(self) -> None:
        self._flush_client()
        if not self._to_client and not self._closed:
            self._resume_upstream()

    # -- end -----------------------------------------------------------------------------------
    def abort(self, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        for fd, reading, writing in ((self._cfd, self._reading_client, self._writing_client),
                                     (self._ufd, self._reading_upstream, self._writing_up)):
            if reading:
                with contextlib.suppress(Exception):
                    self._loop.remove_reader(fd)
            if writing:
                with contextlib.suppress(Exception):
                    self._loop.remove_writer(fd)
        self._reading_client = self._reading_upstream = self._writing_client = self._writing_up = False
        for sock in (self._client, self._upstream):
            with contextlib.suppress(OSError):
                sock.close()
        if not self.done.done():
            self.done.set_result(reason)
