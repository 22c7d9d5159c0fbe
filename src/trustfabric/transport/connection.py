"""Framed connections, server and client over mTLS (or plain TCP for the perimeter baseline).

Theory of operation
-------------------
Sockets are driven directly on the event loop (uvloop in production): after the
handshake a connection registers its file descriptor with ``loop.add_reader``
and reads with ``recv`` on the (``ssl``-wrapped) non-blocking socket, so
OpenSSL reads and decrypts straight from the kernel - no memory-BIO shuffling,
no Streams, no per-message futures on the receive side. Measured on loopback
this adds about half as much over plain TCP as asyncio's SSL protocol does. The
plain-TCP mode runs the very same code without the ``ssl`` wrapper, so the two
are compared like for like.

* **Receive**: a plain ``recv`` takes all the kernel holds; TLS ``read`` returns one record
  at a time, so while records are large (a batching peer) the connection reads on until the
  kernel is empty and decodes them together: batches stay as large as in plain mode.
  Bytes go through a :class:`~trustfabric.transport.frames.FrameDecoder`;
  each frame is handed to ``on_frame`` (a plain callback: the fastest path) or,
  when none is set, queued for ``await recv()``.
* **Send, batched**: ``queue(frame)`` appends to one batch buffer; ``flush()``
  calls ``on_before_flush`` (the audit spool flushes before effects leave) and
  writes the whole batch with one ``send``. If the hook raises nothing leaves and
  the connection closes (``transport.flush_refused``): fail closed. ``send(frame)``
  is ``queue`` + ``flush``. What the kernel does not take is buffered and written
  when the socket is writable; ``await drain()`` waits while the backlog is above
  the high-water mark (backpressure).
* **Bad input**: a malformed, oversized, unknown-type or truncated frame gets an
  :class:`~trustfabric.transport.frames.ErrorFrame` with the reason code, then the
  connection closes. A handler that raises closes its connection only. The
  server's accept loop never dies.
* **Bounded time**: the handshake (TLS + identity + ``Hello``) has a deadline; a
  started frame must complete within ``frame_timeout_s`` (a slow-loris peer
  dribbling bytes is cut off with ``frame.timeout``); a connection without a
  complete frame for ``idle_timeout_s`` is closed; and a server closes a
  connection whose peer certificate has expired by the injected clock. One timer
  per connection ticks; nothing is scheduled per message.

On the server, each accepted connection picks the TLS context of the *current*
credentials, so certificate rotation needs no restart. Refused handshakes are
``HANDSHAKE_REFUSED`` audit events with the reason code, the peer's address
(``detail.peer_address``, ``host:port``) and, when the identity step could read it,
the SPIFFE ID the refused certificate presented (``principal``; see
:mod:`trustfabric.transport.tls` for certificates of a sibling trust domain).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from trustfabric.audit.events import Emitter, Kind
from trustfabric.transport import errors as E
from trustfabric.transport.errors import (
    ConnectionClosed,
    FrameError,
    HandshakeRefused,
    TransportTimeout,
)
from trustfabric.transport.frames import (
    DEFAULT_CODEC,
    ErrorFrame,
    Frame,
    FrameCodec,
    FrameDecoder,
    Hello,
)
from trustfabric.transport.admission import (
    DEFAULT_ADMISSION,
    Admission,
    AdmissionLimits,
    Ticket,
)
from trustfabric.transport.endpoint import FrameEndpoint
from trustfabric.transport.listener import Acceptor, close_after_alert, tls_handshake, wait_fd
from trustfabric.transport.tls import PeerIdentity, TLSConfig, classify_handshake_error

RECV_SIZE = 64 * 1024  # below malloc's mmap threshold: no mmap/munmap per read
COALESCE_RECORD = 2048  # a TLS record at least this big: look for more before decoding (see _readable_tls)
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


@dataclass(frozen=True, slots=True)
class Limits:
    """Bounds of one connection (seconds and bytes)."""

    handshake_timeout_s: float = 5.0
    frame_timeout_s: float = 10.0  # a started frame must be complete within this
    idle_timeout_s: float = 300.0  # no complete frame for this long: closed
    tick_s: float | None = None  # timer period; default: a quarter of the smallest bound
    high_water: int = 1024 * 1024  # drain() waits above this many unsent bytes
    low_water: int = 256 * 1024

    @property
    def tick(self) -> float:
        if self.tick_s is not None:
            return self.tick_s
        return max(0.01, min(self.frame_timeout_s, self.idle_timeout_s) / 4)


DEFAULT_LIMITS = Limits()


class FrameConnection(FrameEndpoint):
    """One framed, established connection (TLS or plain). Not thread-safe: one event loop."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        codec: FrameCodec = DEFAULT_CODEC,
        limits: Limits = DEFAULT_LIMITS,
        peer: PeerIdentity | None = None,
        clock_now: Callable[[], float] | None = None,
        name: str = "",
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._sock = sock
        self._fd = sock.fileno()
        self._tls = isinstance(sock, ssl.SSLSocket)
        self._recv = sock.recv
        self._send = sock.send
        self._pending: Callable[[], int] = int  # decrypted bytes left in OpenSSL (asked of TLS only)
        if self._tls:
            # The C-level TLS object under ssl.SSLSocket: read/write/pending without the
            # Python wrapper's checks (measured: about a microsecond per round trip).
            sslobj = getattr(sock, "_sslobj", None)
            if sslobj is not None and all(hasattr(sslobj, n) for n in ("read", "write", "pending")):
                self._recv = sslobj.read
                self._send = sslobj.write
                self._pending = sslobj.pending
            else:  # pragma: no cover - another ssl implementation
                self._pending = sock.pending
        self.codec = codec
        self.limits = limits
        self.peer = peer
        self.name = name
        self._clock_now = clock_now
        self._decoder = FrameDecoder(codec)
        self._feed = self._decoder.feed
        self._batch = bytearray()
        self._out = bytearray()  # bytes the kernel has not taken yet
        self._writing = False
        self._init_endpoint()
        self._drain_waiter: asyncio.Future | None = None
        self._closed_future: asyncio.Future = self._loop.create_future()
        self.on_before_flush: Callable[[], Any] | None = None
        self.on_close: Callable[[str], Any] | None = None
        self.closed = False
        self.close_reason = ""
        now = self._loop.time()
        self._last_frame_at = now
        self._partial_since: float | None = None
        self._timer = self._loop.call_later(limits.tick, self._tick)
        self._loop.add_reader(self._fd, self._readable)

    # -- receiving ---------------------------------------------------------------------
    def _readable(self) -> None:
        if self._tls:
            self._readable_tls()
            return
        if self.closed:
            return
        try:
            data = self._recv(RECV_SIZE)  # plain TCP: everything the kernel holds, in one call
        except _WOULD_BLOCK:
            return
        except OSError as exc:
            self._abort(E.RESET, f"{type(exc).__name__}: {exc}")
            return
        if data:
            self._received(data)
        else:
            self._at_eof()

    def _readable_tls(self) -> None:
        """Read TLS records until the kernel has no more (or RECV_SIZE bytes), then decode them at once.

        One ``read`` returns at most one record, while one ``recv`` on a plain socket takes
        everything the kernel holds. Under load a peer's batches queue up as several records;
        taking them all in one event-loop turn keeps this side's batches (replies, onward
        requests, audit writes) as large as the plain mode's. A small first record (below
        :data:`COALESCE_RECORD`) means a lightly loaded peer: it is delivered at once, without
        a further ``read`` that would only say "nothing more" and cost a system call. After a
        large record the reading goes on (a large batch ends in a small record, and the
        peer's next batch may already be behind it).
        """
        chunks: list[bytes] = []
        total = 0
        eof = False
        while not self.closed:
            try:
                data = self._recv(RECV_SIZE)
            except _WOULD_BLOCK:
                break
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):  # the peer closed (cleanly or not)
                eof = True
                break
            except (ssl.SSLError, OSError) as exc:
                if chunks:
                    self._received(b"".join(chunks))
                self._abort(E.RESET, f"{type(exc).__name__}: {exc}")
                return
            if not data:
                eof = True
                break
            chunks.append(data)
            total += len(data)
            if self._pending():  # the rest of this record is decrypted and waiting
                continue
            if (len(data) < COALESCE_RECORD and len(chunks) == 1) or total >= RECV_SIZE:
                break  # a lone small record (light load: deliver now), or enough for one turn
        if chunks and not self.closed:
            self._received(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        if eof and not self.closed:
            self._at_eof()

    def _received(self, data: bytes) -> None:
        try:
            frames = self._feed(data)
        except FrameError as exc:
            self._deliver(exc.decoded)
            self.fail(exc.reason, exc.detail)
            return
        if self._decoder.pending:
            if self._partial_since is None:
                self._partial_since = self._loop.time()
        else:
            self._partial_since = None
        if frames:
            self._last_frame_at = self._loop.time()
            self._deliver(frames)

    def _at_eof(self) -> None:
        try:
            self._decoder.eof()
        except FrameError as exc:
            self._abort(exc.reason, exc.detail)
            return
        self._abort(E.CLOSED, "peer closed")

    # -- sending -----------------------------------------------------------------------
    def flush(self) -> None:
        """Run the pre-flush hook, then write the batch at once. If the hook fails, nothing leaves."""
        batch = self._batch
        if not batch or self.closed:
            return
        hook = self.on_before_flush
        if hook is not None:
            try:
                hook()
            except Exception as exc:  # noqa: BLE001 - no audit flush, no effects: fail closed
                batch.clear()
                self.fail(E.FLUSH_REFUSED, repr(exc)[:200])
                return
        self._batch = bytearray()
        self._write(batch)

    def send(self, frame: Frame) -> None:
        """``queue(frame)`` then ``flush()``."""
        if self.closed:
            raise ConnectionClosed(self.name, reason=self.close_reason or E.CLOSED)
        self.codec.encode_into(frame, self._batch)
        self.flush()

    def write_raw(self, data: bytes) -> None:
        """Put bytes on the wire as they are, bypassing codec and hook (tests, fault injection)."""
        if self.closed:
            raise ConnectionClosed(self.name, reason=self.close_reason or E.CLOSED)
        self._write(bytearray(data))

    def _write(self, data: bytearray) -> None:
        if self._out:
            self._out += data
            return
        try:
            sent = self._send(data)
        except _WOULD_BLOCK:
            sent = 0
        except (ssl.SSLError, OSError) as exc:
            self._abort(E.RESET, f"{type(exc).__name__}: {exc}")
            return
        if sent < len(data):
            self._out += memoryview(data)[sent:]
            if not self._writing:
                self._writing = True
                self._loop.add_writer(self._fd, self._writable)

    def _writable(self) -> None:
        out = self._out
        try:
            sent = self._send(out)  # a TLS retry re-sends the same (possibly longer) buffer prefix
        except _WOULD_BLOCK:
            return
        except (ssl.SSLError, OSError) as exc:
            self._abort(E.RESET, f"{type(exc).__name__}: {exc}")
            return
        del out[:sent]
        if not out:
            self._writing = False
            self._loop.remove_writer(self._fd)
        if len(out) <= self.limits.low_water:
            self._wake_drain()

    def _wake_drain(self) -> None:
        waiter = self._drain_waiter
        if waiter is not None:
            self._drain_waiter = None
            if not waiter.done():
                waiter.set_result(None)

    @property
    def unsent(self) -> int:
        return len(self._out)

    async def drain(self) -> None:
        """Wait while more than ``high_water`` bytes are waiting for the kernel."""
        while len(self._out) > self.limits.high_water:
            if self.closed:
                raise ConnectionClosed(self.name, reason=self.close_reason or E.CLOSED)
            waiter = self._loop.create_future()
            self._drain_waiter = waiter
            await waiter
        if self.closed:
            raise ConnectionClosed(self.name, reason=self.close_reason or E.CLOSED)

    # -- time bounds -------------------------------------------------------------------
    def _tick(self) -> None:
        if self.closed:
            return
        now = self._loop.time()
        if self._partial_since is not None and now - self._partial_since > self.limits.frame_timeout_s:
            self.fail(E.FRAME_TIMEOUT, f"frame incomplete after {self.limits.frame_timeout_s}s")
            return
        if now - self._last_frame_at > self.limits.idle_timeout_s:
            self.fail(E.IDLE, f"no frame for {self.limits.idle_timeout_s}s")
            return
        if self.peer is not None and self._clock_now is not None and self._clock_now() > self.peer.not_after:
            self.fail(E.CERT_EXPIRED, "the peer certificate expired during the connection")
            return
        self._timer = self._loop.call_later(self.limits.tick, self._tick)

    # -- closing -----------------------------------------------------------------------
    def fail(self, reason: str, detail: str = "") -> None:
        """Send an error frame with ``reason`` (best effort, bypassing the batch), then close."""
        if self.closed:
            return
        try:
            payload = bytearray()
            self.codec.encode_into(ErrorFrame(reason=reason, detail=detail[:200]), payload)
            self._batch.clear()
            self._write(payload)
            if self._out:  # give the kernel one chance; do not wait on a peer that does not read
                with contextlib.suppress(Exception):
                    self._send(self._out)
        except Exception:  # noqa: BLE001 - closing must not fail
            pass
        self._abort(reason, detail)

    def close(self, reason: str = E.CLOSED) -> None:
        """Close now (unsent bytes are given one last write)."""
        if self.closed:
            return
        if self._out:
            with contextlib.suppress(Exception):
                self._send(self._out)
        self._abort(reason, "")

    def _abort(self, reason: str, detail: str) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.close_detail = detail
        self._timer.cancel()
        with contextlib.suppress(Exception):
            self._loop.remove_reader(self._fd)
        if self._writing:
            with contextlib.suppress(Exception):
                self._loop.remove_writer(self._fd)
        with contextlib.suppress(Exception):
            self._sock.close()
        self._out.clear()
        self._wake_receiver()
        self._wake_drain()
        if not self._closed_future.done():
            self._closed_future.set_result(reason)
        callback = self.on_close
        if callback is not None:
            with contextlib.suppress(Exception):
                callback(reason)

    async def wait_closed(self) -> str:
        """Wait until the connection is closed; returns the close reason."""
        return await asyncio.shield(self._closed_future)


# -- handshakes ------------------------------------------------------------------------
async def _recv_some(loop: asyncio.AbstractEventLoop, sock: socket.socket) -> bytes:
    while True:
        try:
            return sock.recv(RECV_SIZE)
        except _WOULD_BLOCK:
            await wait_fd(loop, sock.fileno(), False)


async def _send_all(loop: asyncio.AbstractEventLoop, sock: socket.socket, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            sent = sock.send(view)
            view = view[sent:]
        except _WOULD_BLOCK:
            await wait_fd(loop, sock.fileno(), True)


def _tune(sock: socket.socket) -> None:
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# -- server ----------------------------------------------------------------------------
def _address(address: Any) -> str:
    """``host:port`` of a socket address (what refusal events name as their source)."""
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


Handler = Callable[[FrameConnection], Awaitable[None]]


class FrameServer(Acceptor):
    """A framed server over mTLS (``tls`` given) or plain TCP (``tls=None``, perimeter baseline).

    ``handler(conn)`` runs once per accepted connection, with ``conn.peer`` the
    verified :class:`PeerIdentity` (``None`` in plain mode); the connection is
    closed when the handler returns. Handshake refusals are emitted as
    ``Kind.HANDSHAKE_REFUSED`` events on ``emitter`` and counted in ``refusals``.
    Every accepted connection first passes the listener's :class:`Admission`
    (caps on handshakes and connections, per source): one over a cap is reset
    before any TLS work, counted under its ``admission.*`` reason, and reported
    at most once a second per reason with the number refused.
    """

    def __init__(
        self,
        handler: Handler,
        *,
        tls: TLSConfig | None,
        codec: FrameCodec = DEFAULT_CODEC,
        limits: Limits = DEFAULT_LIMITS,
        emitter: Emitter | None = None,
        name: str = "transport",
        admission: AdmissionLimits = DEFAULT_ADMISSION,
    ) -> None:
        self.handler = handler
        self.tls = tls
        self.codec = codec
        self.limits = limits
        self.emitter = emitter
        self.name = name
        self.connections: set[FrameConnection] = set()
        self.refusals: collections.Counter[str] = collections.Counter()
        self.accepted = 0
        self.handler_errors = 0
        self.admission = Admission(admission, on_refuse=self._report_admission)
        self._init_acceptor()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> FrameServer:
        self._listen(host, port, family=socket.AF_INET, backlog=512)
        return self

    async def __aenter__(self) -> FrameServer:
        if self._listener is None:
            await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _count_admission(self, reason: str) -> None:
        self.refusals[reason] += 1

    def _refuse(self, reason: str, detail: str, address: Any, presented: str = "") -> None:
        """Count and log a refused handshake: the source address, and the SPIFFE ID presented when read."""
        self.refusals[reason] += 1
        if self.emitter is not None:
            with contextlib.suppress(Exception):
                self.emitter.emit(Kind.HANDSHAKE_REFUSED, principal=presented, decision="deny", reason=reason,
                                  trust_domain=self.tls.trust_domain if self.tls else "",
                                  detail={"detail": detail[:300], "peer_address": _address(address),
                                          "server": self.name})

    def _report_admission(self, reason: str, count: int, source: str) -> None:
        """A burst of admission refusals, as one event carrying how many were refused."""
        if self.emitter is not None:
            with contextlib.suppress(Exception):
                self.emitter.emit(Kind.HANDSHAKE_REFUSED, decision="deny", reason=reason,
                                  trust_domain=self.tls.trust_domain if self.tls else "",
                                  detail={"refused": count, "peer_address": source, "server": self.name,
                                          "admission": self.admission.stats()})

    async def _serve(self, raw: socket.socket, _address: Any, ticket: Ticket) -> None:
        try:
            await self._serve_admitted(raw, ticket)
        finally:
            ticket.release()

    async def _serve_admitted(self, raw: socket.socket, ticket: Ticket) -> None:
        loop = asyncio.get_running_loop()
        try:
            address: Any = raw.getpeername()
            _tune(raw)
        except OSError:  # reset between accept and here: nothing to serve
            self._refuse(E.RESET, "connection reset before the handshake", "")
            raw.close()
            return
        sock: socket.socket = raw
        peer: PeerIdentity | None = None
        try:
            async with asyncio.timeout(self.limits.handshake_timeout_s):
                if self.tls is not None:
                    ctx, _credentials = self.tls.context(server_side=True)
                    sock = ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
                    await tls_handshake(loop, sock)  # type: ignore[arg-type]
                    try:
                        peer = self.tls.verify_peer(sock)  # type: ignore[arg-type]
                    except HandshakeRefused as exc:
                        # The TLS session is up, so the client can be told why, then closed.
                        with contextlib.suppress(Exception):
                            await _send_all(loop, sock, self.codec.encode(ErrorFrame(reason=exc.reason)))
                        raise
                    hello = Hello(spiffe_id=self.tls.spiffe_id)
                else:
                    hello = Hello(spiffe_id="")
                await _send_all(loop, sock, self.codec.encode(hello))
        except TimeoutError:
            self._refuse(E.HANDSHAKE_TIMEOUT, "handshake not complete in time", address)
            sock.close()
            return
        except asyncio.CancelledError:
            sock.close()
            raise
        except Exception as exc:  # noqa: BLE001 - ssl/OS errors are translated into a refusal
            reason = classify_handshake_error(exc)
            self._refuse(reason, f"{type(exc).__name__}: {exc}", address, getattr(exc, "presented", ""))
            await close_after_alert(loop, sock)
            return
        self.accepted += 1
        ticket.established()
        conn = FrameConnection(sock, codec=self.codec, limits=self.limits, peer=peer,
                               clock_now=self.tls.clock.now if self.tls is not None else None,
                               name=f"{self.name}<-{address}")
        self.connections.add(conn)
        try:
            await self.handler(conn)
        except asyncio.CancelledError:
            conn.close(E.CLOSED)
            raise
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001 - one handler's fault never stops the server
            self.handler_errors += 1
            conn.fail("transport.handler_error", repr(exc)[:200])
        finally:
            conn.close(E.CLOSED)
            self.connections.discard(conn)

    def _close_open(self) -> None:
        for conn in list(self.connections):
            conn.close(E.CLOSED)


# -- client ----------------------------------------------------------------------------
async def connect(
    host: str,
    port: int,
    *,
    tls: TLSConfig | None,
    codec: FrameCodec = DEFAULT_CODEC,
    limits: Limits = DEFAULT_LIMITS,
    expected_peer: str | None = None,
    source: str | None = None,
) -> FrameConnection:
    """Open a framed connection; returns once the server has accepted our identity (``Hello``).

    ``source``: the local address to connect from (a service placed on a host of a deployment
    connects from its host's address, so its peers and their admission control see that host).

    The server's certificate is checked like the server checks ours (our trust
    domain's bundle, one SPIFFE ID, validity, revocation) and, when
    ``expected_peer`` is given, must carry exactly that SPIFFE ID. A refusal by
    either side raises :class:`HandshakeRefused` with the reason code; a deadline
    overrun raises :class:`TransportTimeout`. Our own certificate is never
    presented once expired by the injected clock.
    """
    loop = asyncio.get_running_loop()
    if tls is not None:
        ctx, credentials = tls.context(server_side=False)
        if tls.clock.now() >= credentials.not_after:  # decided before any byte leaves
            raise HandshakeRefused("our own certificate has expired; not presenting it", reason=E.CERT_EXPIRED)
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setblocking(False)
    sock: socket.socket = raw
    peer: PeerIdentity | None = None
    try:
        async with asyncio.timeout(limits.handshake_timeout_s):
            try:
                if source is not None:
                    raw.bind((source, 0))
                await loop.sock_connect(raw, (host, port))
            except OSError as exc:
                raise ConnectionClosed(f"connect to {host}:{port}: {exc}", reason=E.RESET) from None
            _tune(raw)
            if tls is not None:
                sock = ctx.wrap_socket(raw, server_side=False, do_handshake_on_connect=False)
                try:
                    await tls_handshake(loop, sock)  # type: ignore[arg-type]
                except (ssl.SSLError, OSError) as exc:
                    raise HandshakeRefused(f"{type(exc).__name__}: {exc}",
                                           reason=classify_handshake_error(exc)) from None
                peer = tls.verify_peer(sock)  # type: ignore[arg-type]
                if expected_peer is not None and str(peer.spiffe_id) != expected_peer:
                    raise HandshakeRefused(f"server is {peer.spiffe_id}, expected {expected_peer}",
                                           reason=E.PEER_UNEXPECTED)
            decoder = FrameDecoder(codec)
            frames: list[Frame] = []
            while not frames:
                try:
                    data = await _recv_some(loop, sock)
                except (ssl.SSLError, OSError) as exc:
                    raise HandshakeRefused(f"{type(exc).__name__}: {exc}",
                                           reason=classify_handshake_error(exc)) from None
                if not data:
                    raise HandshakeRefused("server closed the connection during the handshake",
                                           reason=E.HANDSHAKE_FAILED)
                frames = decoder.feed(data)
            first = frames[0]
            if isinstance(first, ErrorFrame):
                raise HandshakeRefused(f"server refused: {first.detail}", reason=first.reason)
            if not isinstance(first, Hello):
                raise HandshakeRefused(f"expected hello, got {type(first).__name__}", reason=E.HANDSHAKE_FAILED)
    except TimeoutError:
        sock.close()
        raise TransportTimeout(f"handshake with {host}:{port} not complete in time",
                               reason=E.HANDSHAKE_TIMEOUT) from None
    except BaseException:
        sock.close()
        raise
    conn = FrameConnection(sock, codec=codec, limits=limits, peer=peer,
                           clock_now=tls.clock.now if tls is not None else None,
                           name=f"->{host}:{port}")
    if len(frames) > 1:
        conn._deliver(frames[1:])
    pending = decoder.pending
    if pending:  # bytes of the next frame arrived with the hello
        conn._decoder = decoder
        conn._feed = decoder.feed
    return conn
