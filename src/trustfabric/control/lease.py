"""The control plane's lease: exactly one active control plane per floor, and a standby that takes over.

The active control plane holds the lease while it lives and answers; the single-active duties (the
audit sequencer's collection, the response engine's containment, key rotation, the posture agents)
run only where it is held. A standby (:mod:`trustfabric.trading.standby`) waits for it and takes
the floor over when the holder is gone - killed or hung.

The lease is a row ``(holder, expires_at, epoch)``: the holder renews it every ``BEAT_S``
(:meth:`ControlLease.beat`) for ``TTL_S`` more; another process may claim it once it has expired,
and each claim bumps ``epoch`` (a fencing token). A holder whose renewal finds another holder has
lost the lease and must stop acting at once (the launcher fences itself: it closes its control
server and leaves the services to the new holder). A dead holder is noticed before its row
expires: the holder also keeps an exclusive lock that its process (or its database session)
holds and the operating system (or the server) releases when it dies, and a claimant that can
take that lock claims the row at once. So ``kill -9`` is taken over in milliseconds and a hang
(SIGSTOP, a stuck event loop) within ``TTL_S``.

Two implementations, chosen like the stores:

* embedded (one machine): the row in ``<home>/floor/lease.db`` (SQLite, ``BEGIN IMMEDIATE``)
  and an exclusive ``flock`` on ``<home>/floor/control.lease``; times from this host's clock;
* beyond one machine (``$TRUSTFABRIC_DATABASE_URL``): the row in the ``control_lease`` table
  (migration 0003) with times from the database's clock (hosts' clocks may differ), and a
  session-level advisory lock on a connection of its own.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import socket
import sqlite3
import threading
import time
import uuid
from pathlib import Path

from trustfabric.control.errors import ControlRefused

LEASE_FILE = "control.lease"
LEASE_DB = "lease.db"
TTL_S = 2.0  # a holder that has not renewed for this long has lost the lease
BEAT_S = 0.5  # how often the holder renews
POLL_S = 0.05  # how often a standby looks


def lease_key(schema: str) -> int:
    return int.from_bytes(hashlib.sha256(b"trustfabric.control-lease:" + schema.encode()).digest()[:8], "big",
                          signed=True)


class ControlLease:
    def __init__(self, home: Path | str, environ: dict[str, str] | None = None, *, ttl_s: float = TTL_S) -> None:
        env = os.environ if environ is None else environ
        self.dsn = env.get("TRUSTFABRIC_DATABASE_URL", "")
        self.schema = env.get("TRUSTFABRIC_DATABASE_SCHEMA", "") or "trustfabric"
        self.home = Path(home)
        self.ttl_s = ttl_s
        self.holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.epoch = 0
        self.held = False
        self._fd: int | None = None  # the embedded death detector (flock)
        self._conn = None  # the database session: the row's updates and the advisory lock
        self._locked = False  # the death detector is ours
        self._mutex = threading.Lock()
        self._renewed_at = 0.0  # monotonic time of the last claim or renewal that reached the store
        self.contested = False  # standbys wait for this lease (set by the launcher)

    # -- the death detector ------------------------------------------------------------------
    def _try_lock(self) -> bool:
        """Take the holder's exclusive lock (free: nobody holds the lease, or its holder died)."""
        if self._locked:
            return True
        if self.dsn:
            got = self._pg().execute("SELECT pg_try_advisory_lock(%s)", (lease_key(self.schema),)).fetchone()[0]
            self._locked = bool(got)
            return self._locked
        path = self.home / "floor" / LEASE_FILE
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd, self._locked = fd, True
        return True

    # -- the row -----------------------------------------------------------------------------
    def _pg(self):  # noqa: ANN202 - a psycopg connection
        import psycopg  # beyond one machine only: the embedded default never pays psycopg's import

        if self._conn is None or self._conn.closed:
            self._locked = False  # a new session holds no advisory lock
            self._conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=2,
                                         options=f"-c search_path={self.schema}")
        return self._conn

    def _claim(self, *, force: bool, renew_only: bool) -> bool:
        """Set the row to us for ``ttl_s`` when it is ours, expired, or ``force`` (its holder is dead)."""
        if self.dsn:
            conn = self._pg()
            now = "extract(epoch from clock_timestamp())"
            with conn.transaction():
                conn.execute("INSERT INTO control_lease (id, holder, expires_at, epoch) VALUES (1, '', 0, 0) "
                             "ON CONFLICT (id) DO NOTHING")
                row = conn.execute(
                    f"UPDATE control_lease SET epoch = CASE WHEN holder = %(me)s THEN epoch ELSE epoch + 1 END, "
                    f"holder = %(me)s, expires_at = {now} + %(ttl)s WHERE id = 1 AND (holder = %(me)s "
                    f"OR (NOT %(renew)s AND (%(force)s OR expires_at < {now}))) RETURNING epoch",
                    {"me": self.holder, "ttl": self.ttl_s, "renew": renew_only, "force": force}).fetchone()
            return self._took(row)
        db = sqlite3.connect(self.home / "floor" / LEASE_DB, timeout=5, isolation_level=None)
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute("CREATE TABLE IF NOT EXISTS control_lease (id INTEGER PRIMARY KEY, holder TEXT NOT NULL, "
                       "expires_at REAL NOT NULL, epoch INTEGER NOT NULL)")
            db.execute("INSERT OR IGNORE INTO control_lease VALUES (1, '', 0, 0)")
            now = time.time()
            holder, expires_at, epoch = db.execute("SELECT holder, expires_at, epoch FROM control_lease").fetchone()
            ours = holder == self.holder
            if ours or (not renew_only and (force or expires_at < now)):
                epoch = epoch if ours else epoch + 1
                db.execute("UPDATE control_lease SET holder = ?, expires_at = ?, epoch = ? WHERE id = 1",
                           (self.holder, now + self.ttl_s, epoch))
                row: tuple | None = (epoch,)
            else:
                row = None
            db.execute("COMMIT")
        finally:
            db.close()
        return self._took(row)

    def _took(self, row: tuple | None) -> bool:
        self.held = row is not None
        if self.held:
            self.epoch = int(row[0])  # type: ignore[index]
            self._renewed_at = time.monotonic()
        return self.held

    # -- the operations ----------------------------------------------------------------------
    def try_acquire(self) -> bool:
        """Take the lease if it is free, expired, or its holder died; True when this process holds it now."""
        with self._mutex:
            try:
                (self.home / "floor").mkdir(parents=True, exist_ok=True, mode=0o700)
                dead_holder = self._try_lock()
                return self._claim(force=dead_holder, renew_only=False)
            except Exception as exc:  # noqa: BLE001 - a lease that cannot be read is never granted
                self._drop()
                raise ControlRefused(f"the lease cannot be read: {type(exc).__name__}: {exc}".strip(),
                                     reason="control.lease_unreachable", retryable=True) from None

    def beat(self) -> bool:
        """Renew the lease (the holder, every ``BEAT_S``); False when it is lost: another holder has it, or -
        when ``contested`` (standbys wait for it) - the store could not be reached for ``ttl_s``: a standby that
        reaches it may have claimed it meanwhile, so this holder stops acting rather than run beside the next.
        A floor with no standby keeps its only control plane through a store outage (nobody else can act)."""
        with self._mutex:
            try:
                kept = self._claim(force=False, renew_only=True)
            except Exception:  # noqa: BLE001 - cannot renew now: tried again next beat, until the row's lifetime ends
                self._drop()
                return not self.contested or time.monotonic() - self._renewed_at < self.ttl_s
            if kept:
                self._renewed_at = time.monotonic()
                if not self._locked:
                    self._try_lock()  # a hung predecessor that came back released it
            return kept

    def acquire(self, stop: threading.Event) -> bool:
        """Wait for the lease (every ``POLL_S``) until held (True) or ``stop`` is set (False)."""
        while not stop.is_set():
            try:
                if self.try_acquire():
                    return True
            except ControlRefused:
                pass
            stop.wait(POLL_S)
        return False

    def _drop(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
            self._conn = None
            self._locked = False

    def release(self) -> None:
        with self._mutex:
            if self.held:
                try:
                    if self.dsn:
                        self._pg().execute("UPDATE control_lease SET expires_at = 0 WHERE id = 1 AND holder = %s",
                                           (self.holder,))
                    else:
                        db = sqlite3.connect(self.home / "floor" / LEASE_DB, timeout=5)
                        with db:
                            db.execute("UPDATE control_lease SET expires_at = 0 WHERE id = 1 AND holder = ?",
                                       (self.holder,))
                        db.close()
                except Exception:  # noqa: BLE001 - the row expires on its own
                    pass
            if self._fd is not None:
                try:
                    fcntl.flock(self._fd, fcntl.LOCK_UN)
                finally:
                    os.close(self._fd)
                    self._fd = None
            self._drop()  # the server releases the advisory lock with the session
            self._locked = False
            self.held = False
