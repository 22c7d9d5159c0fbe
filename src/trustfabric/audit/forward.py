"""Live forwarding of the central audit log to a SIEM: RFC 5424 syslog over TLS, resumable, never silent.

The forwarder is its own process (``trustfabric audit forward``): it reads the
central log (SQLite, read while the collector writes) from its checkpoint and sends
each record, rendered as OCSF, CEF or JSON lines (:mod:`trustfabric.audit.siem`),
as one octet-counted RFC 5424 message over TLS (RFC 5425). The floor never waits
on it: its only contact with the floor is the log on disk.

Nothing is dropped silently. The checkpoint file (``<state>/forward.json``) holds two
marks: ``sent`` (the index after the last record written to the socket) and
``acked`` (the index after the last record known delivered). Syslog over TCP has no
application acknowledgement, so a record counts as delivered once the receiver's TCP
acknowledged every byte written (the socket's send queue, ``TIOCOUTQ``, is empty).
When the
SIEM goes away (refused, reset, timeout), the forwarder backs off, reconnects and
resends from ``acked``: delivery is at least once, in log order, and every message
carries its record's event id as MSGID (and ``metadata.uid`` in OCSF) for the SIEM
to de-duplicate. ``lag`` (records in the log not yet acknowledged) is reported by
:meth:`SyslogForwarder.status` and as a Prometheus gauge by the command.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import ssl
import struct
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from trustfabric.audit.log import AuditLog
from trustfabric.audit.siem import FORMATS, render, syslog_frame
from trustfabric.errors import AuditError

CHECKPOINT = "forward.json"
BATCH = 500


class ForwardError(AuditError):
    reason = "audit.forward.failed"


@dataclass
class Marks:
    acked: int = 0
    sent: int = 0


def read_marks(path: Path) -> Marks:
    try:
        raw = json.loads(path.read_text())
        return Marks(int(raw["acked"]), int(raw["sent"]))
    except FileNotFoundError:
        return Marks()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ForwardError(f"{path}: unreadable checkpoint ({exc})", reason="audit.forward.checkpoint") from None


def write_marks(path: Path, marks: Marks) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, json.dumps({"acked": marks.acked, "sent": marks.sent}).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class SyslogForwarder:
    """Sends the log's records from the checkpoint to ``host:port`` over TLS; resumes after failures."""

    def __init__(self, log: AuditLog, host: str, port: int, context: ssl.SSLContext, state_dir: Path, *,
                 fmt: str = "ocsf", server_name: str | None = None, batch: int = BATCH,
                 timeout_s: float = 5.0, hostname: str = "trustfabric") -> None:
        if fmt not in FORMATS:
            raise ForwardError(f"format must be one of {FORMATS}", reason="audit.forward.format")
        self.log = log
        self.host, self.port = host, int(port)
        self.context = context
        self.server_name = server_name
        self.fmt = fmt
        self.batch = batch
        self.timeout_s = timeout_s
        self.hostname = hostname
        state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.checkpoint = state_dir / CHECKPOINT
        self.marks = read_marks(self.checkpoint)
        self.marks.sent = self.marks.acked  # a restart resends what was not known delivered
        self._sock: ssl.SSLSocket | None = None
        self.connects = 0
        self.failures = 0
        self.sent_total = 0
        self.last_error = ""

    def _end(self) -> int:
        end = getattr(self.log.store, "end", None)  # a B-tree lookup where the store has one, not a count
        return end() if end is not None else self.log.store.size()

    # -- connection ----------------------------------------------------------------------
    def _connect(self) -> ssl.SSLSocket:
        raw = socket.create_connection((self.host, self.port), timeout=self.timeout_s)
        try:
            sock = self.context.wrap_socket(raw, server_hostname=self.server_name or self.host)
        except BaseException:
            raw.close()
            raise
        sock.settimeout(self.timeout_s)
        self.connects += 1
        return sock

    def _drop(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        self.marks.sent = self.marks.acked  # what followed the last delivered batch goes again

    def _confirm(self) -> bool:
        """``acked`` moves to ``sent`` once the receiver's TCP acknowledged every byte written."""
        if self._sock is None or self.marks.acked == self.marks.sent:
            return False
        try:
            unacked = struct.unpack("i", fcntl.ioctl(self._sock.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
        except OSError:
            return False
        if unacked:
            return False
        self.marks.acked = self.marks.sent
        return True

    def drain(self, timeout_s: float = 5.0) -> bool:
        """Wait (bounded) until the receiver's TCP acknowledged everything written; True when it did."""
        deadline = time.monotonic() + timeout_s
        while self.marks.acked < self.marks.sent and time.monotonic() < deadline:
            if not self._confirm():
                time.sleep(0.01)
        write_marks(self.checkpoint, self.marks)
        return self.marks.acked == self.marks.sent

    def close(self) -> None:
        """Stop: what the receiver acknowledged is kept; the rest goes again next time."""
        if self._sock is not None:
            self.drain(self.timeout_s)
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None
        self.marks.sent = self.marks.acked
        write_marks(self.checkpoint, self.marks)

    # -- shipping ------------------------------------------------------------------------
    def step(self) -> int:
        """Send the next batch (at most ``batch`` records); returns how many; raises on a failure."""
        size = self._end()
        start = self.marks.sent
        if start >= size:
            return 0
        end = min(size, start + self.batch)
        frames = [syslog_frame(render(r, self.fmt), time_ns=r.time_ns, msgid=r.event().event_id,
                               hostname=self.hostname, severity=_severity(r))
                  for r in self.log.store.records(start, end)]
        if self._sock is None:
            self._sock = self._connect()
        self._sock.sendall(b"".join(frames))
        self.marks.sent = end
        self._confirm()
        write_marks(self.checkpoint, self.marks)
        self.sent_total += len(frames)
        return len(frames)

    def run(self, stop: threading.Event, *, idle_s: float = 0.2, max_backoff_s: float = 5.0) -> None:
        """Until ``stop``: ship batches, wait when caught up, back off and resume when the SIEM is away."""
        backoff = 0.2
        while not stop.is_set():
            try:
                shipped = self.step()
                backoff = 0.2
                if not shipped:
                    if self._confirm():
                        write_marks(self.checkpoint, self.marks)
                    stop.wait(idle_s)
            except (OSError, ssl.SSLError, AuditError) as exc:  # the SIEM away, or the log busy: resume
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"[:200]
                self._drop()
                write_marks(self.checkpoint, self.marks)
                stop.wait(backoff)
                backoff = min(max_backoff_s, backoff * 2)
        self.close()

    def status(self) -> dict[str, object]:
        size = self._end()
        return {"log_size": size, "acked": self.marks.acked, "sent": self.marks.sent,
                "lag": max(0, size - self.marks.acked), "connects": self.connects, "failures": self.failures,
                "sent_total": self.sent_total, "last_error": self.last_error}


def _severity(record) -> int:
    if record.kind == "alert":
        return 2  # critical
    return 4 if record.decision == "deny" else 6  # warning / informational

