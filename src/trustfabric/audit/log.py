"""The central audit log: records as canonical bytes at Merkle leaf indices, signed tree heads.

Storage sits behind the :class:`AuditStore` protocol: :class:`SQLiteAuditStore` (WAL mode,
``$TRUSTFABRIC_HOME/audit/audit.db``) by default, :class:`MemoryAuditStore` for tests; a
PostgreSQL store implements the same protocol later.

:class:`AuditLog` is the store-independent logic: it deduplicates on ``(source, seq)``
(also a UNIQUE constraint in the store), keeps each source's sequence numbers strictly
increasing (a record below its source's highest sequence that is not a duplicate is
refused loudly: it stays in its spool, it is never dropped), keeps the Merkle root
incrementally with a :class:`~trustfabric.audit.merkle.CompactRange`, and writes a signed
tree head every ``checkpoint_every`` records or ``checkpoint_interval_s`` seconds (and on
demand) in the same transaction as the records it covers.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import msgspec

from trustfabric.audit import merkle
from trustfabric.audit.errors import AuditStoreError, ProofError, SpoolError
from trustfabric.audit.events import AuditEventV1, decode_event, encode_event
from trustfabric.audit.treehead import TreeHead, TreeHeadSigner, load_or_create_signer
from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.errors import AuditError
from trustfabric.home import sub_dir
from trustfabric.sqlitefile import connect as connect_sqlite

DB_FILE = "audit.db"


class StoredRecord(msgspec.Struct, frozen=True, kw_only=True):
    index: int
    source: str
    seq: int
    leaf_hash: bytes
    data: bytes  # canonical bytes of the AuditEventV1
    time_ns: int = 0
    kind: str = ""
    principal: str = ""
    action: str = ""
    resource: str = ""
    decision: str = ""
    trace_id: str = ""

    def event(self) -> AuditEventV1:
        return decode_event(self.data)


class Query(msgspec.Struct, frozen=True, kw_only=True):
    principal: str | None = None
    since_ns: int | None = None
    until_ns: int | None = None
    decision: str | None = None
    action: str | None = None
    trace_id: str | None = None
    kind: str | None = None
    limit: int | None = None

    def sql(self, columns: str, placeholder: str = "?") -> tuple[str, list]:
        """The SELECT over ``records`` for this query, in index order, with ``placeholder`` for its arguments."""
        where, args = [], []
        for column, value in (("principal", self.principal), ("decision", self.decision),
                              ("action", self.action), ("trace_id", self.trace_id), ("kind", self.kind)):
            if value is not None:
                where.append(f"{column} = {placeholder}")
                args.append(value)
        if self.since_ns is not None:
            where.append(f"time_ns >= {placeholder}")
            args.append(self.since_ns)
        if self.until_ns is not None:
            where.append(f"time_ns < {placeholder}")
            args.append(self.until_ns)
        text = f"SELECT {columns} FROM records" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY idx"
        if self.limit is not None:
            text += f" LIMIT {int(self.limit)}"
        return text, args

    def matches(self, r: StoredRecord) -> bool:
        return ((self.principal is None or r.principal == self.principal)
                and (self.since_ns is None or r.time_ns >= self.since_ns)
                and (self.until_ns is None or r.time_ns < self.until_ns)
                and (self.decision is None or r.decision == self.decision)
                and (self.action is None or r.action == self.action)
                and (self.trace_id is None or r.trace_id == self.trace_id)
                and (self.kind is None or r.kind == self.kind))


class AuditStore(Protocol):
    """What the central log needs from a database."""

    def transaction(self) -> AbstractContextManager[None]: ...  # exclusive, atomic
    def size(self) -> int: ...
    def max_seqs(self) -> dict[str, int]: ...
    def existing(self, source: str, seqs: Sequence[int]) -> set[int]: ...
    def insert(self, records: Sequence[StoredRecord]) -> None: ...
    def records(self, start: int = 0, end: int | None = None) -> Iterator[StoredRecord]: ...
    def leaf_hashes(self, start: int = 0, end: int | None = None) -> list[bytes]: ...
    def add_tree_head(self, head: TreeHead) -> None: ...
    def tree_heads(self) -> list[TreeHead]: ...
    def query(self, query: Query) -> list[StoredRecord]: ...
    def close(self) -> None: ...


class MemoryAuditStore:
    """An in-memory store for tests (same semantics as SQLite, minus durability)."""

    def __init__(self) -> None:
        self.rows: list[StoredRecord] = []
        self.heads: list[TreeHead] = []
        self._keys: set[tuple[str, int]] = set()
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            rows, heads, keys = list(self.rows), list(self.heads), set(self._keys)
            try:
                yield
            except BaseException:
                self.rows, self.heads, self._keys = rows, heads, keys
                raise

    def size(self) -> int:
        return len(self.rows)

    def max_seqs(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.rows:
            out[r.source] = max(out.get(r.source, 0), r.seq)
        return out

    def existing(self, source: str, seqs: Sequence[int]) -> set[int]:
        return {s for s in seqs if (source, s) in self._keys}

    def insert(self, records: Sequence[StoredRecord]) -> None:
        for r in records:
            if (r.source, r.seq) in self._keys or r.index != len(self.rows):
                raise AuditStoreError(f"({r.source}, {r.seq}) at {r.index}", reason="audit.store.constraint")
            self._keys.add((r.source, r.seq))
            self.rows.append(r)

    def records(self, start: int = 0, end: int | None = None) -> Iterator[StoredRecord]:
        return iter(self.rows[start:end])

    def leaf_hashes(self, start: int = 0, end: int | None = None) -> list[bytes]:
        return [r.leaf_hash for r in self.rows[start:end]]

    def add_tree_head(self, head: TreeHead) -> None:
        self.heads.append(head)

    def tree_heads(self) -> list[TreeHead]:
        return sorted(self.heads, key=lambda h: (h.tree_size, h.timestamp_ns))

    def query(self, query: Query) -> list[StoredRecord]:
        hits = [r for r in self.rows if query.matches(r)]
        return hits[: query.limit] if query.limit is not None else hits

    def close(self) -> None:
        return None


_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    idx INTEGER PRIMARY KEY,
    source TEXT NOT NULL,
    seq INTEGER NOT NULL,
    leaf_hash BLOB NOT NULL,
    data BLOB NOT NULL,
    time_ns INTEGER NOT NULL,
    kind TEXT NOT NULL,
    principal TEXT NOT NULL,
    action TEXT NOT NULL,
    resource TEXT NOT NULL,
    decision TEXT NOT NULL,
    trace_id TEXT NOT NULL,
    UNIQUE (source, seq)
);
CREATE INDEX IF NOT EXISTS records_principal ON records (principal, time_ns);
CREATE INDEX IF NOT EXISTS records_trace ON records (trace_id);
CREATE INDEX IF NOT EXISTS records_time ON records (time_ns);
CREATE TABLE IF NOT EXISTS tree_heads (
    tree_size INTEGER NOT NULL,
    timestamp_ns INTEGER NOT NULL,
    root_hash TEXT NOT NULL,
    log_id TEXT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (tree_size, timestamp_ns)
);
"""
_COLUMNS = "idx, source, seq, leaf_hash, data, time_ns, kind, principal, action, resource, decision, trace_id"


def _blob(value: object) -> bytes:
    """A BLOB column as bytes, whatever type a hand edit left in it."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    return str(value).encode()


def _row(row: tuple) -> StoredRecord:
    return StoredRecord(index=row[0], source=str(row[1]), seq=row[2], leaf_hash=_blob(row[3]), data=_blob(row[4]),
                        time_ns=row[5], kind=row[6], principal=row[7], action=row[8], resource=row[9],
                        decision=row[10], trace_id=row[11])


class SQLiteAuditStore:
    """The default store: one SQLite file in WAL mode; sqlite3 errors become AuditStoreError."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._db = connect_sqlite(self.path, _SCHEMA, pragmas=("synchronous=FULL",))
        except (sqlite3.Error, OSError) as exc:
            raise AuditStoreError(f"{self.path}: {exc}") from None
        self._lock = threading.RLock()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise AuditStoreError(f"{self.path}: {exc}") from None
            try:
                yield
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise AuditStoreError(f"{self.path}: commit: {exc}") from None

    def _fetch(self, sql: str, args: Sequence = ()) -> list[tuple]:
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.Error as exc:
            raise AuditStoreError(f"{self.path}: {exc}") from None

    def size(self) -> int:
        return self._fetch("SELECT COUNT(*) FROM records")[0][0]

    def end(self) -> int:
        """One past the highest index (a B-tree lookup, not a count): what a reader tailing the log polls.
        Equal to :meth:`size` on an intact log; ``audit verify`` uses :meth:`size`."""
        return self._fetch("SELECT COALESCE(MAX(idx) + 1, 0) FROM records")[0][0]

    def max_seqs(self) -> dict[str, int]:
        return dict(self._fetch("SELECT source, MAX(seq) FROM records GROUP BY source"))

    def existing(self, source: str, seqs: Sequence[int]) -> set[int]:
        if not seqs:
            return set()
        rows = self._fetch("SELECT seq FROM records WHERE source = ? AND seq BETWEEN ? AND ?",
                           (source, min(seqs), max(seqs)))
        return {r[0] for r in rows} & set(seqs)

    def insert(self, records: Sequence[StoredRecord]) -> None:
        try:
            self._db.executemany(
                f"INSERT INTO records ({_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                [(r.index, r.source, r.seq, r.leaf_hash, r.data, r.time_ns, r.kind, r.principal, r.action,
                  r.resource, r.decision, r.trace_id) for r in records])
        except sqlite3.IntegrityError as exc:
            raise AuditStoreError(str(exc), reason="audit.store.constraint") from None
        except sqlite3.Error as exc:
            raise AuditStoreError(f"{self.path}: {exc}") from None

    def records(self, start: int = 0, end: int | None = None) -> Iterator[StoredRecord]:
        # Ordered by the stored index, not by rowid: verify must see the log as it claims to be.
        sql = f"SELECT {_COLUMNS} FROM records WHERE idx >= ?" + (" AND idx < ?" if end is not None else "")
        args = (start,) if end is None else (start, end)
        try:
            cursor = self._db.execute(sql + " ORDER BY idx", args)
            while batch := cursor.fetchmany(4096):
                for row in batch:
                    yield _row(row)
        except sqlite3.Error as exc:
            raise AuditStoreError(f"{self.path}: {exc}") from None

    def payloads(self, kinds: Sequence[str]) -> Iterator[bytes]:
        """The stored event bytes of the given kinds, in index order, streamed (replays read millions)."""
        marks = ",".join("?" * len(kinds))
        try:
            cursor = self._db.execute(f"SELECT data FROM records WHERE kind IN ({marks}) ORDER BY idx", tuple(kinds))
            while batch := cursor.fetchmany(8192):
                for (data,) in batch:
                    yield _blob(data)
        except sqlite3.Error as exc:
            raise AuditStoreError(f"{self.path}: {exc}") from None

    def leaf_hashes(self, start: int = 0, end: int | None = None) -> list[bytes]:
        sql = "SELECT leaf_hash FROM records WHERE idx >= ?" + (" AND idx < ?" if end is not None else "")
        args = (start,) if end is None else (start, end)
        return [_blob(r[0]) for r in self._fetch(sql + " ORDER BY idx", args)]

    def add_tree_head(self, head: TreeHead) -> None:
        try:
            self._db.execute("INSERT OR IGNORE INTO tree_heads VALUES (?,?,?,?,?)",
                             (head.tree_size, head.timestamp_ns, head.root_hash, head.log_id, head.signature))
        except sqlite3.Error as exc:
            raise AuditStoreError(f"{self.path}: {exc}") from None

    def tree_heads(self) -> list[TreeHead]:
        rows = self._fetch("SELECT tree_size, timestamp_ns, root_hash, log_id, signature FROM tree_heads "
                           "ORDER BY tree_size, timestamp_ns")
        return [TreeHead(tree_size=r[0], timestamp_ns=r[1], root_hash=r[2], log_id=r[3], signature=r[4])
                for r in rows]

    def query(self, query: Query) -> list[StoredRecord]:
        return [_row(r) for r in self._fetch(*query.sql(_COLUMNS))]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class AuditLog:
    """The central, append-only Merkle log over an :class:`AuditStore` (also an EventSink)."""

    def __init__(self, store: AuditStore, signer: TreeHeadSigner, clock: Clock = SYSTEM_CLOCK, *,
                 checkpoint_every: int = 10_000, checkpoint_interval_s: float = 60.0) -> None:
        self.store = store
        self.signer = signer
        self.clock = clock
        self.checkpoint_every = checkpoint_every
        self.checkpoint_interval_s = checkpoint_interval_s
        self._lock = threading.RLock()
        self._reload()

    def _reload(self) -> None:
        self._compact = merkle.CompactRange()
        self._compact.extend(self.store.leaf_hashes())
        self._max_seq = self.store.max_seqs()
        heads = self.store.tree_heads()
        self._last_head = heads[-1] if heads else None

    @property
    def size(self) -> int:
        return self._compact.size

    def _store_end(self) -> int:
        """Where the store's log ends, to tell whether another writer appended: an index lookup where the store has
        one (a count is a scan of the whole table on every batch); ``audit verify`` still counts."""
        end = getattr(self.store, "end", None)
        return end() if end is not None else self.store.size()

    def root(self) -> bytes:
        return self._compact.root()

    def latest_tree_head(self) -> TreeHead | None:
        return self._last_head

    def append(self, event: AuditEventV1) -> None:
        """EventSink: record one event directly (sources without a spool)."""
        self.ingest([encode_event(event)])

    def ingest(self, payloads: Sequence[bytes]) -> int:
        """Append canonical event bytes atomically; duplicates of (source, seq) are skipped.

        Returns how many records were new. Raises :class:`SpoolError` (``audit.log.out_of_order``)
        for a record below its source's highest sequence that is not already stored.
        """
        events = []
        for payload in payloads:
            try:
                events.append((payload, decode_event(payload)))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                raise AuditError(f"undecodable record: {exc}", reason="audit.log.malformed") from None
        with self._lock, self.store.transaction():
            if self._store_end() != self._compact.size:  # another writer got in: catch up
                self._reload()
            candidates: dict[str, list[int]] = {}
            for _, e in events:
                if e.seq <= self._max_seq.get(e.source, 0):
                    candidates.setdefault(e.source, []).append(e.seq)
            known = {s: self.store.existing(s, seqs) for s, seqs in candidates.items()}
            compact = self._compact.copy()
            max_seq = dict(self._max_seq)
            rows: list[StoredRecord] = []
            for payload, e in events:
                if e.seq <= max_seq.get(e.source, 0):
                    if e.seq in known.get(e.source, ()) or any(r.source == e.source and r.seq == e.seq for r in rows):
                        continue  # already in the log: a re-shipped record
                    raise SpoolError(f"{e.source} seq {e.seq} arrives after {max_seq[e.source]}",
                                     reason="audit.log.out_of_order")
                lh = merkle.leaf_hash(payload)
                rows.append(StoredRecord(index=compact.size, source=e.source, seq=e.seq, leaf_hash=lh, data=payload,
                                         time_ns=e.time_ns, kind=e.kind, principal=e.principal, action=e.action,
                                         resource=e.resource, decision=e.decision, trace_id=e.trace_id))
                compact.append(lh)
                max_seq[e.source] = e.seq
            if rows:
                self.store.insert(rows)
            head = self._due_head(compact)
            if head is not None:
                self.store.add_tree_head(head)
        self._compact, self._max_seq = compact, max_seq
        if head is not None:
            self._last_head = head
        return len(rows)

    def _due_head(self, compact: merkle.CompactRange) -> TreeHead | None:
        last = self._last_head
        if last is not None and compact.size == last.tree_size:
            return None
        now_ns = int(self.clock.now() * 1e9)
        grown = compact.size - (last.tree_size if last else 0)
        stale = last is None or (now_ns - last.timestamp_ns) >= self.checkpoint_interval_s * 1e9
        if grown >= self.checkpoint_every or (grown > 0 and stale):
            return self.signer.sign(compact.size, now_ns, compact.root())
        return None

    def checkpoint_if_due(self) -> TreeHead | None:
        """Sign a head if ``checkpoint_every`` records or ``checkpoint_interval_s`` have passed."""
        with self._lock, self.store.transaction():
            if self._store_end() != self._compact.size:
                self._reload()
            head = self._due_head(self._compact)
            if head is not None:
                self.store.add_tree_head(head)
        if head is not None:
            self._last_head = head
        return head

    def checkpoint(self) -> TreeHead:
        """Sign a tree head for the current size now (or return the latest if nothing changed)."""
        with self._lock, self.store.transaction():
            if self._store_end() != self._compact.size:
                self._reload()
            if self._last_head is not None and self._last_head.tree_size == self._compact.size:
                return self._last_head
            head = self.signer.sign(self._compact.size, int(self.clock.now() * 1e9), self._compact.root())
            self.store.add_tree_head(head)
        self._last_head = head
        return head

    def _head_for(self, tree_size: int | None) -> TreeHead:
        heads = self.store.tree_heads()
        if not heads:
            raise ProofError("no signed tree head yet: run a checkpoint", reason="audit.proof.no_tree_head")
        if tree_size is None:
            return heads[-1]
        for h in heads:
            if h.tree_size == tree_size:
                return h
        raise ProofError(f"no signed tree head of size {tree_size}", reason="audit.proof.no_tree_head")

    def prove_inclusion(self, index: int, tree_size: int | None = None) -> dict:
        """Leaf, audit path and the signed head it leads to, as JSON-ready values."""
        head = self._head_for(tree_size)
        hashes = self.store.leaf_hashes(0, head.tree_size)
        proof = merkle.inclusion_proof(index, hashes)
        record = next(self.store.records(index, index + 1))
        return {"index": index, "tree_size": head.tree_size, "leaf_data": record.data.decode(),
                "leaf_hash": hashes[index].hex(), "proof": [p.hex() for p in proof],
                "root_hash": head.root_hash, "tree_head": msgspec.to_builtins(head)}

    def prove_consistency(self, old_size: int, new_size: int | None = None) -> dict:
        new = self._head_for(new_size)
        old = self._head_for(old_size)
        hashes = self.store.leaf_hashes(0, new.tree_size)
        proof = merkle.consistency_proof(old.tree_size, hashes)
        return {"old_size": old.tree_size, "new_size": new.tree_size, "old_root": old.root_hash,
                "new_root": new.root_hash, "proof": [p.hex() for p in proof],
                "old_tree_head": msgspec.to_builtins(old), "new_tree_head": msgspec.to_builtins(new)}

    def query(self, query: Query) -> list[StoredRecord]:
        return self.store.query(query)

    def close(self) -> None:
        self.store.close()


def audit_dir(home: Path | None = None) -> Path:
    if home is not None:
        path = Path(home) / "audit"
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path
    return sub_dir("audit")


DATABASE_URL_ENV = "TRUSTFABRIC_DATABASE_URL"
DATABASE_SCHEMA_ENV = "TRUSTFABRIC_DATABASE_SCHEMA"


def database_url() -> str:
    """The PostgreSQL DSN the fabric's stores use beyond one machine ("" for the embedded SQLite default)."""
    return os.environ.get(DATABASE_URL_ENV, "")


def database_schema() -> str:
    """The PostgreSQL schema the fabric's tables live in (``$TRUSTFABRIC_DATABASE_SCHEMA``, default ``trustfabric``)."""
    return os.environ.get(DATABASE_SCHEMA_ENV) or "trustfabric"


def open_store(directory: Path) -> AuditStore:
    """The central log's store: PostgreSQL when ``$TRUSTFABRIC_DATABASE_URL`` names one, else SQLite in
    ``directory``."""
    dsn = database_url()
    if dsn:
        # imported here: audit.postgres builds on this module (and psycopg loads only beyond one machine)
        from trustfabric.audit.postgres import DEFAULT_SCHEMA, PostgresAuditStore

        return PostgresAuditStore(dsn, os.environ.get(DATABASE_SCHEMA_ENV, DEFAULT_SCHEMA))
    return SQLiteAuditStore(directory / DB_FILE)


def open_log(directory: Path | None = None, clock: Clock = SYSTEM_CLOCK, **options: float) -> AuditLog:
    """The central log: its store (:func:`open_store`) + the signing key under ``directory``
    ($TRUSTFABRIC_HOME/audit)."""
    directory = directory if directory is not None else audit_dir()
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = open_store(directory)
    return AuditLog(store, load_or_create_signer(directory), clock, **options)  # type: ignore[arg-type]
