"""Where a FIX session keeps its sequence numbers (and sent messages, for resends).

Sequence numbers survive reconnects: a session reloads ``next_in``/``next_out``
for its (our CompID, their CompID) key at Logon. :class:`MemorySeqStore` is for
tests and single-process runs; :class:`SqliteSeqStore` persists to a file (its
only I/O), one row per session and one per sent application message.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Protocol

from trustfabric.sqlitefile import connect as connect_sqlite
from trustfabric.trading.errors import FixError

STORE_ERROR = "fix.store_error"


class SeqStore(Protocol):
    def load(self, key: str) -> tuple[int, int]:
        """(next_in, next_out); (1, 1) for a new session."""

    def set_next_in(self, key: str, seq: int) -> None: ...

    def set_next_out(self, key: str, seq: int) -> None: ...

    def save_sent(self, key: str, seq: int, raw: bytes) -> None: ...

    def sent(self, key: str, begin: int, end: int) -> dict[int, bytes]:
        """Stored application messages with begin <= seq <= end."""

    def reset(self, key: str) -> None: ...


class MemorySeqStore:
    def __init__(self) -> None:
        self._seqs: dict[str, list[int]] = {}
        self._sent: dict[str, dict[int, bytes]] = {}

    def load(self, key: str) -> tuple[int, int]:
        seqs = self._seqs.setdefault(key, [1, 1])
        return seqs[0], seqs[1]

    def set_next_in(self, key: str, seq: int) -> None:
        self._seqs.setdefault(key, [1, 1])[0] = seq

    def set_next_out(self, key: str, seq: int) -> None:
        self._seqs.setdefault(key, [1, 1])[1] = seq

    def save_sent(self, key: str, seq: int, raw: bytes) -> None:
        self._sent.setdefault(key, {})[seq] = raw

    def sent(self, key: str, begin: int, end: int) -> dict[int, bytes]:
        return {s: r for s, r in self._sent.get(key, {}).items() if begin <= s <= end}

    def reset(self, key: str) -> None:
        self._seqs[key] = [1, 1]
        self._sent.pop(key, None)


class SqliteSeqStore:
    """Sequence numbers and sent messages in one SQLite file (sqlite3 errors -> FixError)."""

    def __init__(self, path: str) -> None:
        self._lock = threading.Lock()
        try:
            self._db = connect_sqlite(
                path,
                "CREATE TABLE IF NOT EXISTS fix_seq (key TEXT PRIMARY KEY, next_in INTEGER, next_out INTEGER);"
                "CREATE TABLE IF NOT EXISTS fix_sent (key TEXT, seq INTEGER, raw BLOB, PRIMARY KEY (key, seq));",
            )
        except (sqlite3.Error, OSError) as exc:
            raise FixError(f"cannot open {path}: {exc}", reason=STORE_ERROR) from None

    def _run(self, sql: str, args: tuple = ()) -> list:
        try:
            with self._lock:
                return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise FixError(str(exc), reason=STORE_ERROR) from None

    def load(self, key: str) -> tuple[int, int]:
        rows = self._run("SELECT next_in, next_out FROM fix_seq WHERE key = ?", (key,))
        if not rows:
            self._run("INSERT INTO fix_seq VALUES (?, 1, 1)", (key,))
            return 1, 1
        return rows[0][0], rows[0][1]

    def set_next_in(self, key: str, seq: int) -> None:
        self.load(key)
        self._run("UPDATE fix_seq SET next_in = ? WHERE key = ?", (seq, key))

    def set_next_out(self, key: str, seq: int) -> None:
        self.load(key)
        self._run("UPDATE fix_seq SET next_out = ? WHERE key = ?", (seq, key))

    def save_sent(self, key: str, seq: int, raw: bytes) -> None:
        self._run("INSERT OR REPLACE INTO fix_sent VALUES (?, ?, ?)", (key, seq, raw))

    def sent(self, key: str, begin: int, end: int) -> dict[int, bytes]:
        rows = self._run("SELECT seq, raw FROM fix_sent WHERE key = ? AND seq BETWEEN ? AND ?", (key, begin, end))
        return {seq: bytes(raw) for seq, raw in rows}

    def reset(self, key: str) -> None:
        self._run("DELETE FROM fix_sent WHERE key = ?", (key,))
        self._run("INSERT OR REPLACE INTO fix_seq VALUES (?, 1, 1)", (key,))

    def close(self) -> None:
        with self._lock:
            self._db.close()
