"""The central audit log on PostgreSQL: the same :class:`~trustfabric.audit.log.AuditStore`, beyond one machine.

Selected by a DSN (``TRUSTFABRIC_DATABASE_URL``, or :func:`open_store`'s ``dsn``): the log's
records, Merkle leaves and signed tree heads live in a PostgreSQL schema (``search_path``,
``trustfabric`` by default), reached through a psycopg 3 connection pool. ``audit verify``,
``prove`` and ``consistency`` read it exactly as they read SQLite.

**Migrations** are numbered SQL files (``migrations/NNNN_*.sql``) applied in order by
:func:`migrate` (``trustfabric db migrate``), each in its own transaction, recorded in
``schema_migrations``. A database whose schema is *newer* than the code knows is refused
(``db.schema_newer``), never written; one that is older than the code is refused until
migrated (``db.schema_outdated``).

**One sequencer at a time**, as Trillian's log signer: the first write transaction of a
store takes a session-level advisory lock on a dedicated connection and keeps it while the
store lives. Another writer (another control-plane replica) waits for it up to
``lease_wait_s`` and is refused (``audit.sequencer_busy``) if it is still held; when the
holder's connection dies (the process was killed), PostgreSQL releases the lock and the
next writer takes over. A holder that hangs (SIGSTOP, a stuck process) keeps its session and
with it the lock: a store that may ``preempt`` - the control plane that now holds the floor's
lease, which fenced the hung one by its epoch - ends that session (``pg_terminate_backend``:
its open transaction is rolled back, and it writes nothing more) and takes the lock. Leaves are
appended in index order inside the transaction; ingest uses ``COPY``.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql
from psycopg_pool import ConnectionPool

from trustfabric.audit.errors import AuditStoreError
from trustfabric.audit.log import _COLUMNS, Query, StoredRecord, _row
from trustfabric.audit.treehead import TreeHead
from trustfabric.errors import ConfigError

MIGRATIONS = Path(__file__).parent / "migrations"
DEFAULT_SCHEMA = "trustfabric"
PREEMPT_AFTER_S = 0.5  # a preempting store waits this long for a dying holder before it ends the session
_HOLDERS = ("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = %s::bigint::oid "
            "AND objid = %s::bigint::oid AND objsubid = 1 AND pid <> pg_backend_pid()")


def sequencer_lock_key(schema: str) -> int:
    """The advisory lock key of a schema's single log writer (one per schema: deployments share a server)."""
    return int.from_bytes(hashlib.sha256(b"trustfabric.central-log:" + schema.encode()).digest()[:8], "big",
                          signed=True)
_SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class SchemaError(ConfigError):
    reason = "db.schema"


def _migrations() -> list[tuple[int, Path]]:
    out = []
    for path in sorted(MIGRATIONS.glob("*.sql")):
        out.append((int(path.name.split("_", 1)[0]), path))
    return out


def known_version() -> int:
    return max((v for v, _ in _migrations()), default=0)


def _check_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.fullmatch(schema or ""):
        raise SchemaError(f"schema name {schema!r}: lowercase letters, digits, _", reason="db.schema_name")
    return schema


def _connect(dsn: str, **kw) -> psycopg.Connection:
    try:
        return psycopg.connect(dsn, connect_timeout=5, **kw)
    except psycopg.Error as exc:
        raise AuditStoreError(f"PostgreSQL unreachable: {exc}".strip(), reason="db.unreachable") from None


def schema_version(dsn: str, schema: str = DEFAULT_SCHEMA) -> int:
    """The schema's applied migration version (0: none)."""
    _check_schema_name(schema)
    with _connect(dsn, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f"{schema}.schema_migrations",)).fetchone()[0]
        if exists is None:
            return 0
        row = conn.execute(sql.SQL("SELECT COALESCE(MAX(version), 0) FROM {}.schema_migrations")
                           .format(sql.Identifier(schema))).fetchone()
        return int(row[0])


def migrate(dsn: str, schema: str = DEFAULT_SCHEMA) -> list[int]:
    """Apply the pending migrations; returns the versions applied. Refuses a newer schema than the code's."""
    _check_schema_name(schema)
    current = schema_version(dsn, schema)
    if current > known_version():
        raise SchemaError(f"schema {schema} is at version {current}, this trustfabric knows {known_version()}: "
                          "upgrade trustfabric, do not downgrade the database", reason="db.schema_newer")
    applied = []
    with _connect(dsn) as conn:
        ident = sql.Identifier(schema)
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        conn.execute(sql.SQL("CREATE TABLE IF NOT EXISTS {}.schema_migrations (version INT PRIMARY KEY, "
                             "applied_at DOUBLE PRECISION NOT NULL)").format(ident))
        conn.commit()
        for version, path in _migrations():
            if version <= current:
                continue
            with conn.transaction():
                conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
                conn.execute(path.read_text())
                conn.execute(sql.SQL("INSERT INTO {}.schema_migrations VALUES (%s, %s)").format(ident),
                             (version, time.time()))
            applied.append(version)
    return applied


def require_current(dsn: str, schema: str = DEFAULT_SCHEMA) -> None:
    """Refuse a schema newer than this code (``db.schema_newer``) or not migrated to it (``db.schema_outdated``)."""
    _check_schema_name(schema)
    version = schema_version(dsn, schema)
    if version > known_version():
        raise SchemaError(f"schema {schema} is at version {version}, newer than this trustfabric's "
                          f"{known_version()}", reason="db.schema_newer")
    if version < known_version():
        raise SchemaError(f"schema {schema} is at version {version}; run: trustfabric db migrate",
                          reason="db.schema_outdated")


class PostgresAuditStore:
    """:class:`~trustfabric.audit.log.AuditStore` on PostgreSQL (see the module's docstring)."""

    def __init__(self, dsn: str, schema: str = DEFAULT_SCHEMA, *, lease_wait_s: float = 5.0,
                 pool_size: int = 4) -> None:
        self.dsn = dsn
        self.schema = _check_schema_name(schema)
        require_current(dsn, schema)
        self.lease_wait_s = lease_wait_s
        options = f"-c search_path={schema}"
        try:
            self._pool = ConnectionPool(dsn, min_size=1, max_size=pool_size, open=True, timeout=10,
                                        kwargs={"options": options, "autocommit": True})
        except psycopg.Error as exc:
            raise AuditStoreError(f"PostgreSQL unreachable: {exc}", reason="db.unreachable") from None
        self._options = options
        self._lease: psycopg.Connection | None = None  # the sequencer's connection, holding the advisory lock
        # the holder of the floor's lease (a callable, asked each time: a fenced holder says no): a hung sequencer's
        # session is ended
        self.preempt: bool | Callable[[], bool] = False
        self.preempted = 0
        self._local = threading.local()
        self._lock = threading.RLock()

    # -- the sequencer's lease -----------------------------------------------------------
    @property
    def is_sequencer(self) -> bool:
        return self._lease is not None and not self._lease.closed

    def acquire_sequencer(self) -> None:
        """Hold the log's single-writer lock (waits up to ``lease_wait_s``; ``audit.sequencer_busy`` after)."""
        if self.is_sequencer:
            return
        conn = _connect(self.dsn, autocommit=True, options=self._options)
        key = sequencer_lock_key(self.schema)
        started = time.monotonic()
        deadline = started + self.lease_wait_s
        while True:
            if conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                self._lease = conn
                return
            if (self.preempt() if callable(self.preempt) else self.preempt) \
                    and time.monotonic() - started >= PREEMPT_AFTER_S:
                unsigned = key % (1 << 64)
                for (pid,) in conn.execute(_HOLDERS, (unsigned >> 32, unsigned & 0xFFFFFFFF)).fetchall():
                    conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                    self.preempted += 1
            if time.monotonic() >= deadline:
                conn.close()
                raise AuditStoreError("another sequencer holds the central log (one writer at a time)",
                                      reason="audit.sequencer_busy")
            time.sleep(0.05)

    # -- AuditStore ----------------------------------------------------------------------
    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self._lock:
            self.acquire_sequencer()
            conn = self._lease
            assert conn is not None
            try:
                with conn.transaction():
                    self._local.conn = conn
                    yield
            except psycopg.Error as exc:
                raise AuditStoreError(f"PostgreSQL: {exc}", reason=_reason(exc)) from None
            finally:
                self._local.conn = None

    @contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        current = getattr(self._local, "conn", None)
        if current is not None:
            yield current
            return
        try:
            with self._pool.connection() as conn:
                yield conn
        except psycopg.Error as exc:
            raise AuditStoreError(f"PostgreSQL: {exc}", reason=_reason(exc)) from None

    def _fetch(self, query: str, args: Sequence = ()) -> list[tuple]:
        with self._conn() as conn:
            try:
                return conn.execute(query, args).fetchall()
            except psycopg.Error as exc:
                raise AuditStoreError(f"PostgreSQL: {exc}", reason=_reason(exc)) from None

    def size(self) -> int:
        return int(self._fetch("SELECT COUNT(*) FROM records")[0][0])

    def end(self) -> int:
        return int(self._fetch("SELECT COALESCE(MAX(idx) + 1, 0) FROM records")[0][0])

    def max_seqs(self) -> dict[str, int]:
        return {s: int(m) for s, m in self._fetch("SELECT source, MAX(seq) FROM records GROUP BY source")}

    def existing(self, source: str, seqs: Sequence[int]) -> set[int]:
        if not seqs:
            return set()
        rows = self._fetch("SELECT seq FROM records WHERE source = %s AND seq BETWEEN %s AND %s",
                           (source, min(seqs), max(seqs)))
        return {int(r[0]) for r in rows} & set(seqs)

    def insert(self, records: Sequence[StoredRecord]) -> None:
        if not records:
            return
        with self._conn() as conn:
            try:
                with conn.cursor() as cur, cur.copy(f"COPY records ({_COLUMNS}) FROM STDIN") as copy:
                    for r in records:
                        copy.write_row((r.index, r.source, r.seq, r.leaf_hash, r.data, r.time_ns, r.kind,
                                        r.principal, r.action, r.resource, r.decision, r.trace_id))
            except psycopg.errors.UniqueViolation as exc:
                raise AuditStoreError(str(exc).strip(), reason="audit.store.constraint") from None

    def records(self, start: int = 0, end: int | None = None) -> Iterator[StoredRecord]:
        query = f"SELECT {_COLUMNS} FROM records WHERE idx >= %s" + (" AND idx < %s" if end is not None else "")
        args = (start,) if end is None else (start, end)
        for row in self._fetch(query + " ORDER BY idx", args):
            yield _row(row)

    def leaf_hashes(self, start: int = 0, end: int | None = None) -> list[bytes]:
        query = "SELECT leaf_hash FROM records WHERE idx >= %s" + (" AND idx < %s" if end is not None else "")
        args = (start,) if end is None else (start, end)
        return [bytes(r[0]) for r in self._fetch(query + " ORDER BY idx", args)]

    def add_tree_head(self, head: TreeHead) -> None:
        with self._conn() as conn:
            conn.execute("INSERT INTO tree_heads VALUES (%s,%s,%s,%s,%s) ON CONFLICT DO NOTHING",
                         (head.tree_size, head.timestamp_ns, head.root_hash, head.log_id, head.signature))

    def tree_heads(self) -> list[TreeHead]:
        rows = self._fetch("SELECT tree_size, timestamp_ns, root_hash, log_id, signature FROM tree_heads "
                           "ORDER BY tree_size, timestamp_ns")
        return [TreeHead(tree_size=int(r[0]), timestamp_ns=int(r[1]), root_hash=r[2], log_id=r[3],
                         signature=r[4]) for r in rows]

    def query(self, query: Query) -> list[StoredRecord]:
        return [_row(r) for r in self._fetch(*query.sql(_COLUMNS, "%s"))]

    def close(self) -> None:
        if self._lease is not None:
            self._lease.close()
            self._lease = None
        self._pool.close()


def _reason(exc: psycopg.Error) -> str:
    if isinstance(exc, psycopg.errors.UniqueViolation):
        return "audit.store.constraint"
    if isinstance(exc, psycopg.OperationalError):
        return "db.unreachable"
    return "audit.store.error"
