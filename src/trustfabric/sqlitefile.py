"""Opening an embedded SQLite file the same way everywhere.

Switching a new file to WAL and creating its schema take locks SQLite does not wait for (its
busy handler is skipped there), so two processes or threads opening the same new file at once can
fail with "database is locked". :func:`connect` serializes the opening on an ``flock`` of a lock
file beside the database; once open, SQLite's own busy timeout covers every statement.
"""

from __future__ import annotations

import fcntl
import sqlite3
from pathlib import Path


def connect(path: str | Path, schema: str = "", *, pragmas: tuple[str, ...] = (), timeout_s: float = 30.0,
            wal: bool = True) -> sqlite3.Connection:
    """An autocommit connection usable from any thread, in WAL mode, with ``pragmas`` applied and
    ``schema`` (a script of idempotent statements) run. ``":memory:"`` skips the file lock and WAL.
    Raises ``sqlite3.Error`` or ``OSError``; callers turn them into their own typed error."""
    if str(path) == ":memory:":
        return _open(":memory:", schema, pragmas, timeout_s, wal=False)
    path = Path(path)
    with open(path.with_name(path.name + ".open-lock"), "a") as gate:
        fcntl.flock(gate, fcntl.LOCK_EX)
        return _open(str(path), schema, pragmas, timeout_s, wal=wal)


def _open(path: str, schema: str, pragmas: tuple[str, ...], timeout_s: float, *, wal: bool) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=timeout_s)
    try:
        if wal:
            db.execute("PRAGMA journal_mode=WAL")
        for pragma in pragmas:
            db.execute(f"PRAGMA {pragma}")
        if schema:
            db.executescript(schema)
    except BaseException:
        db.close()
        raise
    return db
