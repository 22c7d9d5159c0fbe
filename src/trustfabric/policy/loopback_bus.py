"""The invalidation bus between processes on one machine: newline-delimited JSON over TCP on loopback.

:class:`LoopbackBusServer` runs in the policy administrator's process: it listens
on ``127.0.0.1`` (an ephemeral port by default), keeps every connected subscriber,
and :meth:`~LoopbackBusServer.publish` writes each
:class:`~trustfabric.policy.decision.Invalidation` to all of them (and to local
callbacks). :class:`LoopbackBusClient` runs in an enforcement point's process: it
connects, and a reader thread hands each invalidation to its callbacks. Both
satisfy :class:`~trustfabric.policy.bus.InvalidationBus`; a client's ``publish``
goes through the server to everyone.

Frames are one JSON object per line, at most :data:`MAX_LINE` bytes; a malformed
line is counted and dropped, an oversized one closes that connection. When the
connection drops, the client's ``connected`` turns false and ``on_disconnect``
callbacks fire, so its enforcement point can stop trusting cached tables (fail
closed) until it reconnects.
"""

from __future__ import annotations

import socket
import threading
from typing import Callable

import msgspec

from trustfabric.policy.bus import InProcessBus, Subscriber
from trustfabric.policy.decision import Invalidation

MAX_LINE = 64 * 1024
_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Invalidation)


def _read_lines(sock: socket.socket, on_line: Callable[[bytes], None]) -> None:
    buffer = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return
        buffer += chunk
        while b"\n" in buffer:
            line, buffer = buffer.split(b"\n", 1)
            if line:
                on_line(line)
        if len(buffer) > MAX_LINE:
            raise ValueError("oversized bus frame")


class LoopbackBusServer:
    """Fan-out of invalidations to subscriber processes over 127.0.0.1."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("the loopback bus listens on loopback only")
        self._local = InProcessBus()
        self._listener = socket.create_server((host, port))
        self.address: tuple[str, int] = self._listener.getsockname()[:2]
        self._clients: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        self.malformed = 0
        self.published = 0
        self._accept_thread = threading.Thread(target=self._accept, name="bus-accept", daemon=True)
        self._accept_thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self._clients.append(conn)
            threading.Thread(target=self._serve, args=(conn,), name="bus-client", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        def on_line(line: bytes) -> None:
            try:
                inv = _decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.malformed += 1
                return
            self.publish(inv)

        try:
            _read_lines(conn, on_line)
        except (OSError, ValueError):
            pass
        finally:
            self._drop(conn)

    def _drop(self, conn: socket.socket) -> None:
        with self._lock:
            if conn in self._clients:
                self._clients.remove(conn)
        try:
            conn.close()
        except OSError:
            pass

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._clients)

    def publish(self, invalidation: Invalidation) -> None:
        frame = _encoder.encode(invalidation) + b"\n"
        self.published += 1
        self._local.publish(invalidation)
        with self._lock:
            clients = list(self._clients)
        for conn in clients:
            try:
                conn.sendall(frame)
            except OSError:
                self._drop(conn)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        return self._local.subscribe(callback)

    def close(self) -> None:
        self._closed = True
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            clients, self._clients = self._clients, []
        for conn in clients:
            try:
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            except OSError:
                pass

    def __enter__(self) -> "LoopbackBusServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LoopbackBusClient:
    """A subscriber process's end of the loopback bus."""

    def __init__(self, address: tuple[str, int], *, timeout_s: float = 2.0) -> None:
        self._local = InProcessBus()
        self._sock = socket.create_connection(address, timeout=timeout_s)
        self._sock.settimeout(None)
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._send_lock = threading.Lock()
        self._disconnect_callbacks: list[Callable[[], None]] = []
        self.connected = True
        self.received = 0
        self.malformed = 0
        self._thread = threading.Thread(target=self._run, name="bus-reader", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        def on_line(line: bytes) -> None:
            try:
                inv = _decoder.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.malformed += 1
                return
            self.received += 1
            self._local.publish(inv)

        try:
            _read_lines(self._sock, on_line)
        except (OSError, ValueError):
            pass
        finally:
            self.connected = False
            for callback in list(self._disconnect_callbacks):
                try:
                    callback()
                except Exception:  # noqa: BLE001 - a failing callback must not hide the disconnect from others
                    pass

    def on_disconnect(self, callback: Callable[[], None]) -> None:
        self._disconnect_callbacks.append(callback)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        return self._local.subscribe(callback)

    def publish(self, invalidation: Invalidation) -> None:
        with self._send_lock:
            self._sock.sendall(_encoder.encode(invalidation) + b"\n")

    def close(self) -> None:
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        self._thread.join(timeout=2.0)

    def __enter__(self) -> "LoopbackBusClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
