"""The control plane's lease: exactly one active control plane per floor, and a standby that takes over.

The active control plane holds the lease for as long as its process lives; the single-active
duties (the audit sequencer's collection, the response engine's containment, key rotation, the
posture agents) run only where it is held. A standby (:mod:`trustfabric.trading.standby`) waits
for it and takes the floor over when the holder dies - ``kill -9`` included, since the operating
system or the database releases the lease with the holder's process or connection.

Two implementations, chosen like the stores:

* embedded (one machine): an exclusive ``flock`` on ``<home>/floor/control.lease``;
* beyond one machine (``$TRUSTFABRIC_DATABASE_URL``): a PostgreSQL session-level advisory lock
  held on a connection of its own (the key is derived from the schema), released by the server
  when that connection closes.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from pathlib import Path

from trustfabric.control.errors import ControlRefused

LEASE_FILE = "control.lease"
POLL_S = 0.05


def lease_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(b"trustfabric.control-lease:" + schema.encode()).digest()[:8], "big",
                          signed=True)


class ControlLease:
    def __init__(self, home: Path | str, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.dsn = env.get("TRUSTFABRIC_DATABASE_URL", "")
        self.schema = env.get("TRUSTFABRIC_DATABASE_SCHEMA", "") or "trustfabric"
        self.path = Path(home) / "floor" / LEASE_FILE
        self._fd: int | None = None
        self._conn = None
        self.held = False

    def try_acquire(self) -> bool:
        """Take the lease if it is free; True when this process holds it now."""
        if self.held:
            return True
        if self.dsn:
            return self._try_postgres()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd, self.held = fd, True
        return True

    def _try_postgres(self) -> bool:
        import psycopg  # beyond one machine only: psycopg's import is not paid by the embedded default

        try:
            if self._conn is None or self._conn.closed:
                self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2)
            got = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (lease_key(self.schema),)).fetchone()[0]
        except psycopg.Error as exc:
            self._drop_connection()
            raise ControlRefused(f"the lease's database is unreachable: {exc}".strip(), reason="control.lease_unreachable",
                                 retryable=True) from None
        self.held = bool(got)
        return self.held

    def acquire(self, stop: threading.Event) -> bool:
        """Wait for the lease (polling every ``POLL_S``) until it is held (True) or ``stop`` is set (False).
        A database that cannot be reached while waiting is tried again; it never grants the lease."""
        while not stop.is_set():
            try:
                if self.try_acquire():
                    return True
            except ControlRefused:
                pass
            stop.wait(POLL_S)
        return False

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
            self._conn = None

    def release(self) -> None:
        if self._fd is not None:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            finally:
                os.close(self._fd)
                self._fd = None
        self._drop_connection()  # the server releases the advisory lock with the session
        self.held = False
