"""A byte-stream listener for the fabric's edges: admission, a socket-driven TLS handshake, refusals told.

The framed floor speaks through :class:`~trustfabric.transport.connection.FrameServer`;
the edges that speak other protocols (the FIX gateway, the control plane's
bootstrap and operator port, the sidecar in front of a non-Python service) accept
through :class:`StreamListener`, which gives them the same three guarantees:

* **admission** before any TLS work (:mod:`trustfabric.transport.admission`: caps on
  connections in handshake and in total, per listener and per source address);
* **the TLS handshake on the socket itself** (``ssl.SSLSocket.do_handshake`` driven by
  the event loop's readiness callbacks), so that OpenSSL writes its alert to the
  wire when it refuses a peer: ``certificate_required`` for a missing certificate,
  ``unknown_ca`` for another CA's chain, ``certificate_expired``, ``bad_certificate``.
  asyncio's own TLS (``start_server(ssl=...)``, ``start_tls``) drops the connection
  on a failed handshake without sending the alert that OpenSSL queued, so a client
  sees only "unexpected eof";
* **a deadline** on the handshake (``handshake_timeout_s``) after which the slot
  is freed.

Each refusal is reported to ``on_refuse(reason, detail, address, presented)``
with a reason code of :mod:`trustfabric.transport.errors` or
:mod:`trustfabric.transport.admission` (admission refusals come in bursts: one
report per reason per second, carrying how many). An admitted connection goes to
``handler(stream)`` as a :class:`SocketStream`, which offers the subset of
asyncio's ``StreamReader`` / ``StreamWriter`` the edges use (``read``,
``readexactly``, ``write``, ``drain``, ``close``, ``wait_closed``,
``get_extra_info``), so a handler written for asyncio streams takes it as both.

The listening socket, the accept loop behind admission and the shutdown (stop
accepting, close, cancel and await the connections' tasks) are :class:`Acceptor`,
which ``StreamListener`` and ``FrameServer`` both build on.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import socket
import ssl
from typing import Any, Awaitable, Callable

from trustfabric.transport import errors as E
from trustfabric.transport.admission import DEFAULT_ADMISSION, Admission, AdmissionLimits, Ticket, reset
from trustfabric.transport.tls import classify_handshake_error

RECV_SIZE = 64 * 1024
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)

RefusalHook = Callable[[str, str, str, str], None]  # (reason, detail, "host:port", presented SPIFFE ID)


async def wait_fd(loop: asyncio.AbstractEventLoop, fd: int, writable: bool) -> None:
    """Wait until ``fd`` is readable (or writable)."""
    future = loop.create_future()
    if writable:
        loop.add_writer(fd, future.set_result, None)
    else:
        loop.add_reader(fd, future.set_result, None)
    try:
        await future
    finally:
        if writable:
            loop.remove_writer(fd)
        else:
            loop.remove_reader(fd)


async def tls_handshake(loop: asyncio.AbstractEventLoop, sock: ssl.SSLSocket) -> None:
    """Drive ``sock``'s handshake on the event loop; OpenSSL sends its own alerts on a refusal."""
    while True:
        try:
            sock.do_handshake()
            return
        except ssl.SSLWantReadError:
            await wait_fd(loop, sock.fileno(), False)
        except ssl.SSLWantWriteError:
            await wait_fd(loop, sock.fileno(), True)


async def close_after_alert(loop: asyncio.AbstractEventLoop, sock: socket.socket, linger_s: float = 0.25) -> None:
    """Close a connection whose handshake was refused so that the client reads the alert.

    In TLS 1.3 a client sends its certificate, its Finished and often its first data
    in one flight; a server that closes with those bytes unread makes the kernel send
    a reset, which can reach the client before it read the alert. So: our side's end
    of stream first (after the alert), then the client's bytes are read and dropped
    until it closes or ``linger_s`` passed, then the socket is closed.
    """
    try:
        sock.shutdown(socket.SHUT_WR)  # an SSLSocket drops its TLS object here: plain reads below
        async with asyncio.timeout(linger_s):
            while True:
                try:
                    if not sock.recv(RECV_SIZE):
                        break
                except (BlockingIOError, InterruptedError):
                    await wait_fd(loop, sock.fileno(), False)
    except (OSError, TimeoutError, ValueError):
        pass
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def close_tls(sock: socket.socket) -> None:
    """Close a socket; a TLS one first says so (``close_notify``, not waiting for the peer's)."""
    if isinstance(sock, ssl.SSLSocket):
        try:
            sock.unwrap().close()
        except (ssl.SSLError, OSError, ValueError):  # the peer's close_notify not here yet, or gone
            pass
    with contextlib.suppress(OSError):
        sock.close()


def address_text(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)


class SocketStream:
    """Bytes over one non-blocking socket (TLS or plain), as asyncio's reader and writer in one."""

    def __init__(self, sock: socket.socket, peername: Any) -> None:
        self.sock = sock
        self._loop = asyncio.get_running_loop()
        self._fd = sock.fileno()
        self._peername = peername
        self._out = bytearray()
        self._buffer = bytearray()
        self._eof = False
        self.closed = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "ssl_object":
            return self.sock if isinstance(self.sock, ssl.SSLSocket) else default
        if name == "peername":
            return self._peername
        if name == "socket":
            return self.sock
        return default

    # -- reading -----------------------------------------------------------------------
    async def _recv(self) -> bytes:
        while True:
            if self.closed:
                return b""
            try:
                return self.sock.recv(RECV_SIZE)
            except ssl.SSLWantWriteError:
                await wait_fd(self._loop, self._fd, True)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
                await wait_fd(self._loop, self._fd, False)
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                return b""
            except ssl.SSLError as exc:
                raise ConnectionResetError(f"TLS: {exc}") from None

    async def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is buffered or the next arrival); ``b""`` at end of stream."""
        if self._buffer:
            size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
            data = bytes(self._buffer[:size])
            del self._buffer[:size]
            return data
        if self._eof:
            return b""
        data = await self._recv()
        if not data:
            self._eof = True
            return b""
        if 0 <= n < len(data):
            self._buffer += data[n:]
            return data[:n]
        return data

    async def readexactly(self, n: int) -> bytes:
        while len(self._buffer) < n:
            if self._eof:
                partial = bytes(self._buffer)
                self._buffer.clear()
                raise asyncio.IncompleteReadError(partial, n)
            data = await self._recv()
            if not data:
                self._eof = True
                continue
            self._buffer += data
        data = bytes(self._buffer[:n])
        del self._buffer[:n]
        return data

    def at_eof(self) -> bool:
        return self._eof and not self._buffer

    # -- writing -----------------------------------------------------------------------
    def write(self, data: bytes) -> None:
        if self.closed:
            return
        self._out += data
        self._try_send()

    def _try_send(self) -> None:
        while self._out and not self.closed:
            try:
                sent = self.sock.send(self._out)
            except _WOULD_BLOCK:
                return
            except (ssl.SSLError, OSError):
                self.close()
                return
            del self._out[:sent]

    async def drain(self) -> None:
        while self._out and not self.closed:
            await wait_fd(self._loop, self._fd, True)
            self._try_send()
        if self.closed and self._out:
            raise ConnectionResetError("connection closed with bytes unsent")

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        if self.closed:
            return
        self._try_send()
        self.closed = True
        close_tls(self.sock)

    async def wait_closed(self) -> None:
        return None


Handler = Callable[[SocketStream], Awaitable[None]]


class Acceptor(abc.ABC):
    """The accepting side every listener of the fabric shares: one listening socket, its accept loop, its tasks.

    A subclass sets ``admission`` and the per-connection coroutine ``_serve(sock,
    address, ticket)`` (which releases the ticket), counts admission refusals in
    ``_count_admission(reason)``, and closes what it holds open in ``_close_open()``;
    :meth:`close` stops accepting, closes the listening socket and every open
    connection, then cancels and awaits the connections' tasks.
    """

    admission: Admission

    def _init_acceptor(self) -> None:
        self.address: tuple[str, int] = ("", 0)
        self._listener: socket.socket | None = None
        self._accept_task: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def port(self) -> int:
        return self.address[1]

    def _listen(self, host: str, port: int, *, family: socket.AddressFamily, backlog: int) -> None:
        """Bind and listen on ``(host, port)``, then start the accept loop."""
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
        listener.listen(backlog)
        listener.setblocking(False)
        self._listener = listener
        self.address = listener.getsockname()[:2]
        self._accept_task = asyncio.get_running_loop().create_task(self._accept_loop())

    @abc.abstractmethod
    def _count_admission(self, reason: str) -> None:
        """Count a connection refused by admission control (``reason``) where this server keeps its refusals."""

    @abc.abstractmethod
    async def _serve(self, sock: socket.socket, address: Any, ticket: Ticket) -> None:
        """Serve one admitted connection; ``ticket`` is released when it ends."""

    def _close_open(self) -> None:
        """Close the connections still open (nothing by default: their tasks are cancelled)."""

    async def _accept_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._listener is not None
        while True:
            sock, address, ticket = await self.admission.accept(loop, self._listener, self._count_admission)
            task = loop.create_task(self._serve(sock, address, ticket))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        self.admission.flush_reports()
        if self._accept_task is not None:
            self._accept_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._accept_task
            self._accept_task = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        self._close_open()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


class StreamListener(Acceptor):
    """Accepts on one port: admission, the TLS handshake (``context()`` given) with its deadline, ``handler``."""

    def __init__(self, handler: Handler, *, context: Callable[[], ssl.SSLContext] | None,
                 on_refuse: RefusalHook | None = None, admission: AdmissionLimits = DEFAULT_ADMISSION,
                 handshake_timeout_s: float = 5.0, name: str = "listener") -> None:
        self.handler = handler
        self.context = context
        self.on_refuse = on_refuse
        self.handshake_timeout_s = handshake_timeout_s
        self.name = name
        self.admission = Admission(admission, on_refuse=self._report_admission)
        self.refusals: dict[str, int] = {}
        self.accepted = 0
        self._init_acceptor()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> StreamListener:
        self._listen(host, port, family=socket.AF_INET6 if ":" in host else socket.AF_INET, backlog=1024)
        return self

    def _count(self, reason: str, n: int = 1) -> None:
        self.refusals[reason] = self.refusals.get(reason, 0) + n

    def _count_admission(self, reason: str) -> None:
        self._count(reason)

    def _refuse(self, reason: str, detail: str, address: Any, presented: str = "") -> None:
        self._count(reason)
        if self.on_refuse is not None:
            with contextlib.suppress(Exception):
                self.on_refuse(reason, detail[:300], address_text(address), presented)

    def _report_admission(self, reason: str, count: int, source: str) -> None:
        if self.on_refuse is not None:
            with contextlib.suppress(Exception):
                self.on_refuse(reason, f"{count} connection(s) refused by admission control "
                                       f"({self.admission.stats()})", source, "")

    async def _serve(self, raw: socket.socket, address: Any, ticket: Ticket) -> None:
        loop = asyncio.get_running_loop()
        sock: socket.socket = raw
        try:
            raw.setblocking(False)
            with contextlib.suppress(OSError):
                raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                async with asyncio.timeout(self.handshake_timeout_s):
                    if self.context is not None:
                        sock = self.context().wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
                        await tls_handshake(loop, sock)  # type: ignore[arg-type]
            except TimeoutError:
                self._refuse(E.HANDSHAKE_TIMEOUT, "handshake not complete in time", address)
                reset(sock)
                return
            except asyncio.CancelledError:
                sock.close()
                raise
            except Exception as exc:  # noqa: BLE001 - ssl/OS errors are translated into a refusal
                self._refuse(classify_handshake_error(exc), f"{type(exc).__name__}: {exc}", address,
                             getattr(exc, "presented", ""))
                await close_after_alert(loop, sock)
                return
            ticket.established()
            self.accepted += 1
            stream = SocketStream(sock, address)
            try:
                await self.handler(stream)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one handler's fault never stops the listener
                pass
            finally:
                stream.close()
        finally:
            ticket.release()
