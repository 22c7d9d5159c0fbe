"""Admission control for every listener: bounded handshakes, bounded connections, per source.

A listener that accepts every TCP connection and keeps each until its handshake
times out hands a flood its memory: each half-open TLS connection holds an
OpenSSL object and its buffers, and glibc keeps the heap it grew. So every
listener of the fabric (floor services, the control plane's ports, the FIX
gateway, the sidecar) asks an :class:`Admission` before it starts a handshake:

* at most ``max_handshaking`` connections of the listener in their handshake, and
  ``max_handshaking_per_source`` of one source address;
* at most ``max_connections`` connections in all (handshaking or established),
  and ``max_connections_per_source`` of one source address.

A connection over a cap is refused at once, before any TLS work: the socket is
closed with a reset (``SO_LINGER`` 0, so the kernel frees it now, not after a
FIN_WAIT), the refusal is counted by reason in :attr:`Admission.refusals`, and
reported through ``on_refuse`` at most once per reason per ``report_every_s``
with the number refused since the last report, so that a flood of refusals is a
few audit records, not a flood of them. The handshake deadline itself is the
listener's (``Limits.handshake_timeout_s``): a slot is held at most that long.

When a surge ends (no handshake in flight after at least ``trim_after``
admissions), :meth:`Admission.settle` returns the C heap's free pages to the
system (glibc's ``malloc_trim``), so the process's resident memory settles back
near its baseline instead of keeping its peak.

A :class:`Ticket` is one admitted connection: :meth:`Ticket.established` when its
handshake completed, :meth:`Ticket.release` when it closed (both idempotent).
Single-threaded: one event loop per listener.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import socket
import struct
import time
from dataclasses import dataclass
from typing import Any, Callable

from trustfabric.transport.errors import AdmissionRefused

HANDSHAKES_FULL = "admission.handshakes_full"
SOURCE_HANDSHAKES_FULL = "admission.source_handshakes_full"
CONNECTIONS_FULL = "admission.connections_full"
SOURCE_CONNECTIONS_FULL = "admission.source_connections_full"
REASONS = (HANDSHAKES_FULL, SOURCE_HANDSHAKES_FULL, CONNECTIONS_FULL, SOURCE_CONNECTIONS_FULL)


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """Caps of one listener. On one host every peer is 127.0.0.1: per-source caps leave room for the floor."""

    max_handshaking: int = 256
    max_handshaking_per_source: int = 128
    max_connections: int = 4096
    max_connections_per_source: int = 2048
    report_every_s: float = 1.0
    trim_after: int = 64  # admissions in a surge before its end returns the heap's free pages


DEFAULT_ADMISSION = AdmissionLimits()

RefusalReport = Callable[[str, int, str], None]  # (reason, refused since the last report, last source)


def _libc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


_MALLOC_TRIM = _libc_trim()


def source_of(address: object) -> str:
    """The source host of a peer address (``(host, port, ...)``); the whole value otherwise."""
    if isinstance(address, tuple) and address:
        return str(address[0])
    return str(address)


def reset(sock: socket.socket) -> None:
    """Close a socket with a TCP reset: the kernel frees it at once (nothing lingers in FIN_WAIT)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


class Ticket:
    """One admitted connection; release it exactly once when the connection ends."""

    __slots__ = ("_admission", "source", "handshaking", "released")

    def __init__(self, admission: Admission, source: str) -> None:
        self._admission = admission
        self.source = source
        self.handshaking = True
        self.released = False

    def established(self) -> None:
        if self.handshaking and not self.released:
            self.handshaking = False
            self._admission._end_handshake(self.source)

    def release(self) -> None:
        if self.released:
            return
        if self.handshaking:
            self.handshaking = False
            self._admission._end_handshake(self.source)
        self.released = True
        self._admission._end_connection(self.source)


class Admission:
    """The caps of one listener, its counts, and its refusals by reason."""

    def __init__(self, limits: AdmissionLimits = DEFAULT_ADMISSION, *, on_refuse: RefusalReport | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.on_refuse = on_refuse
        self._monotonic = monotonic
        self.handshaking = 0
        self.connections = 0
        self.peak_handshaking = 0
        self.peak_connections = 0
        self.admitted = 0
        self.trims = 0
        self.refusals: collections.Counter[str] = collections.Counter()
        self._handshaking_by: collections.Counter[str] = collections.Counter()
        self._connections_by: collections.Counter[str] = collections.Counter()
        self._unreported: collections.Counter[str] = collections.Counter()
        self._reported_at: dict[str, float] = {}
        self._surge = 0

    def admit(self, source: str) -> Ticket:
        """A ticket for a new connection from ``source``, or :class:`AdmissionRefused` naming the cap."""
        limits = self.limits
        reason = ""
        if self.connections >= limits.max_connections:
            reason = CONNECTIONS_FULL
        elif self._connections_by[source] >= limits.max_connections_per_source:
            reason = SOURCE_CONNECTIONS_FULL
        elif self.handshaking >= limits.max_handshaking:
            reason = HANDSHAKES_FULL
        elif self._handshaking_by[source] >= limits.max_handshaking_per_source:
            reason = SOURCE_HANDSHAKES_FULL
        if reason:
            self._refused(reason, source)
            raise AdmissionRefused(f"{source}: {reason.split('.', 1)[1].replace('_', ' ')}", reason=reason)
        self.handshaking += 1
        self.connections += 1
        self._handshaking_by[source] += 1
        self._connections_by[source] += 1
        self.admitted += 1
        self._surge += 1
        self.peak_handshaking = max(self.peak_handshaking, self.handshaking)
        self.peak_connections = max(self.peak_connections, self.connections)
        return Ticket(self, source)

    async def accept(self, loop: asyncio.AbstractEventLoop, listener: socket.socket,
                     refused: Callable[[str], None]) -> tuple[socket.socket, Any, Ticket]:
        """The next connection on ``listener`` these caps let in: (socket, address, ticket).

        One over a cap is reset before any TLS work and its reason passed to ``refused``; an
        accept that fails (out of file descriptors) is retried after a pause, never raised.
        """
        while True:
            try:
                sock, address = await loop.sock_accept(listener)
            except asyncio.CancelledError:
                raise
            except OSError:  # e.g. out of file descriptors: keep serving
                await asyncio.sleep(0.05)
                continue
            try:
                return sock, address, self.admit(source_of(address))
            except AdmissionRefused as exc:
                refused(exc.reason)
                reset(sock)

    def _refused(self, reason: str, source: str) -> None:
        self.refusals[reason] += 1
        self._unreported[reason] += 1
        now = self._monotonic()
        if self.on_refuse is not None and now - self._reported_at.get(reason, -1e18) >= self.limits.report_every_s:
            count, self._unreported[reason] = self._unreported[reason], 0
            self._reported_at[reason] = now
            with contextlib.suppress(Exception):  # a report never stops the listener
                self.on_refuse(reason, count, source)

    def _end_handshake(self, source: str) -> None:
        self.handshaking -= 1
        _decrement(self._handshaking_by, source)
        if self.handshaking == 0:
            self.settle()

    def _end_connection(self, source: str) -> None:
        self.connections -= 1
        _decrement(self._connections_by, source)

    def settle(self) -> bool:
        """After a surge of handshakes, hand the C heap's free pages back; True when it did."""
        if self._surge < self.limits.trim_after or self.handshaking:
            return False
        self._surge = 0
        if _MALLOC_TRIM is None:
            return False
        _MALLOC_TRIM(0)
        self.trims += 1
        return True

    def flush_reports(self) -> None:
        """Report refusals not reported yet (at close, so the last burst is counted too)."""
        if self.on_refuse is None:
            return
        for reason, count in list(self._unreported.items()):
            if count:
                self._unreported[reason] = 0
                with contextlib.suppress(Exception):
                    self.on_refuse(reason, count, "")

    def stats(self) -> dict[str, object]:
        return {"handshaking": self.handshaking, "connections": self.connections,
                "peak_handshaking": self.peak_handshaking, "peak_connections": self.peak_connections,
                "admitted": self.admitted, "refused": dict(self.refusals), "heap_trims": self.trims}


def _decrement(counter: collections.Counter[str], key: str) -> None:
    left = counter[key] - 1
    if left > 0:
        counter[key] = left
    else:
        del counter[key]
