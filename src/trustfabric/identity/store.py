"""The identity store: CAs, promoted releases, users, revocations, token keys, host keys.

A small :class:`IdentityStore` protocol with one implementation on SQLite
(:class:`SqliteIdentityStore`, the embedded default at
``$TRUSTFABRIC_HOME/identity.db``; PostgreSQL can implement the same protocol).
Rows are plain values; the logic that interprets them lives in the modules that
use the store. A token signing key that leaves the key ring is *removed*: its row,
private half included, is deleted (``secure_delete`` zeroes the freed pages, and
the write-ahead log is truncated) and only its public half is kept, in
``removed_signing_keys``, for audit; nothing loads that table into a key ring.
CA private keys are not in the database: they are 0600 files under
``$TRUSTFABRIC_HOME/ca/<trust-domain>/`` and the store records where. Beyond one machine
the same protocol is served by PostgreSQL (:mod:`trustfabric.identity.postgres`, chosen by
:func:`open_identity_store`), which holds the CAs itself, every private key sealed under the
operator's key-encryption key.
``sqlite3`` errors are translated to :class:`StoreError` here.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

from trustfabric.audit.log import DATABASE_SCHEMA_ENV, DATABASE_URL_ENV
from trustfabric.home import home_dir
from trustfabric.identity.errors import StoreError
from trustfabric.sqlitefile import connect as connect_sqlite

__all__ = [
    "IdentityStore",
    "SqliteIdentityStore",
    "RevocationRow",
    "UserRow",
    "SigningKeyRow",
    "RemovedSigningKeyRow",
    "ReleaseRow",
    "open_default_store",
    "open_identity_store",
]


@dataclass(frozen=True)
class RevocationRow:
    kind: str  # "serial" | "spiffe_id"
    value: str  # serial as decimal string, or the SPIFFE ID
    revoked_at: float
    reason: str


@dataclass(frozen=True)
class CertificateRow:
    serial: str  # hex
    spiffe_id: str
    not_after: float
    fingerprint: str
    issued_at: float
    attested: bool


@dataclass(frozen=True)
class ReleaseRow:
    trust_domain: str
    digest: str  # hex SHA-256
    name: str
    promoted_at: float


@dataclass(frozen=True)
class UserRow:
    name: str
    role: str
    password_hash: str
    totp_secret: str
    failed_attempts: int = 0
    locked_until: float = 0.0
    totp_last_step: int = -1
    last_mfa_at: float = 0.0


@dataclass(frozen=True)
class SigningKeyRow:
    kid: str
    private_pem: bytes
    created_at: float
    retired_at: float | None = None  # no longer signs; still verifies until retired_at + retain_s
    retain_s: float = 0.0  # the window after retirement in which tokens it signed still verify


@dataclass(frozen=True)
class RemovedSigningKeyRow:
    """The public half of a signing key that left the ring (audit only; never trusted again)."""

    kid: str
    public_pem: bytes
    created_at: float
    retired_at: float | None
    removed_at: float
    reason: str  # "key.window_passed" | "key.revoked"


class IdentityStore(Protocol):
    holds_ca_keys: bool  # True: put_ca_material / ca_material; False: put_ca / ca_directory (files)
    remote: bool  # True: a server that can be away while this process runs (PostgreSQL)

    def ping(self) -> None: ...  # reach the store once; StoreError when it cannot

    def put_ca(self, trust_domain: str, directory: str) -> None: ...
    def ca_directory(self, trust_domain: str) -> str | None: ...
    def list_cas(self) -> list[tuple[str, str]]: ...

    def add_release(self, row: ReleaseRow) -> None: ...
    def is_promoted(self, trust_domain: str, digest: str) -> bool: ...
    def list_releases(self, trust_domain: str | None = None) -> list[ReleaseRow]: ...

    def put_user(self, row: UserRow) -> None: ...
    def get_user(self, name: str) -> UserRow | None: ...
    def list_users(self) -> list[UserRow]: ...

    def add_revocation(self, row: RevocationRow) -> int: ...
    def put_join_token(self, token_sha256: str, spiffe_id: str, expires_at: float) -> None: ...
    def add_certificate(self, row: "CertificateRow") -> None: ...
    def list_certificates(self, spiffe_id: str | None = None, limit: int = 1000) -> list["CertificateRow"]: ...
    def use_join_token(self, token_sha256: str, spiffe_id: str, now: float) -> tuple[str, float, float | None] | None: ...
    def list_revocations(self) -> tuple[int, list[RevocationRow]]: ...

    def put_signing_key(self, row: SigningKeyRow) -> None: ...
    def list_signing_keys(self) -> list[SigningKeyRow]: ...
    def remove_signing_key(self, kid: str, public_pem: bytes, removed_at: float, reason: str) -> bool: ...
    def list_removed_signing_keys(self) -> list[RemovedSigningKeyRow]: ...

    def put_host_key(self, host: str, public_raw: bytes) -> None: ...
    def list_host_keys(self) -> list[tuple[str, bytes]]: ...

    def set_meta(self, key: str, value: Any) -> None: ...
    def get_meta(self, key: str, default: Any = None) -> Any: ...
    def put_secret(self, name: str, data: bytes) -> None: ...
    def get_secret(self, name: str) -> bytes | None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS cas (trust_domain TEXT PRIMARY KEY, directory TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS releases (
    trust_domain TEXT NOT NULL, digest TEXT NOT NULL, name TEXT NOT NULL, promoted_at REAL NOT NULL,
    PRIMARY KEY (trust_domain, digest));
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY, role TEXT NOT NULL, password_hash TEXT NOT NULL, totp_secret TEXT NOT NULL,
    failed_attempts INTEGER NOT NULL DEFAULT 0, locked_until REAL NOT NULL DEFAULT 0,
    totp_last_step INTEGER NOT NULL DEFAULT -1, last_mfa_at REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL, not_after REAL NOT NULL, fingerprint TEXT NOT NULL,
    issued_at REAL NOT NULL, attested INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS certificates_id ON certificates (spiffe_id, issued_at);
CREATE TABLE IF NOT EXISTS join_tokens (
    token_sha256 TEXT PRIMARY KEY, spiffe_id TEXT NOT NULL, expires_at REAL NOT NULL, used_at REAL);
CREATE TABLE IF NOT EXISTS revocations (
    version INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, value TEXT NOT NULL,
    revoked_at REAL NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS signing_keys (
    kid TEXT PRIMARY KEY, private_pem BLOB NOT NULL, created_at REAL NOT NULL, retired_at REAL,
    retain_s REAL NOT NULL DEFAULT 630);
CREATE TABLE IF NOT EXISTS removed_signing_keys (
    kid TEXT PRIMARY KEY, public_pem BLOB NOT NULL, created_at REAL NOT NULL, retired_at REAL,
    removed_at REAL NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS host_keys (host TEXT PRIMARY KEY, public_raw BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


class SqliteIdentityStore:
    """:class:`IdentityStore` on one SQLite file (or ``":memory:"``)."""

    holds_ca_keys = False  # CA keys are 0600 files; the store records their directory
    remote = False  # a local file: reachable while this process runs

    def __init__(self, path: Path | str = ":memory:") -> None:
        self.path = str(path)
        self._lock = threading.RLock()
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            # secure_delete: a removed signing key's bytes do not linger
            self._db = connect_sqlite(self.path, _SCHEMA, pragmas=("secure_delete=ON",), timeout_s=5.0)
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open identity store {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        """Columns added since a store was created: a retired key without a stored window gets the
        window the key ring used before windows were stored (630 s: twice the token lifetime + leeway)."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(signing_keys)")}
        if "retain_s" not in columns:
            self._db.execute("ALTER TABLE signing_keys ADD COLUMN retain_s REAL NOT NULL DEFAULT 630")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                yield self._db
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._db.execute("ROLLBACK")
                raise StoreError(f"identity store write failed: {exc}") from exc
            except BaseException:
                self._db.execute("ROLLBACK")
                raise

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            try:
                return self._db.execute(sql, args).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"identity store read failed: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def ping(self) -> None:
        self._query("SELECT 1")

    # CAs
    def put_ca(self, trust_domain: str, directory: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO cas VALUES (?, ?)", (trust_domain, directory))

    def ca_directory(self, trust_domain: str) -> str | None:
        rows = self._query("SELECT directory FROM cas WHERE trust_domain = ?", (trust_domain,))
        return rows[0][0] if rows else None

    def list_cas(self) -> list[tuple[str, str]]:
        return [(r[0], r[1]) for r in self._query("SELECT trust_domain, directory FROM cas ORDER BY trust_domain")]

    # releases
    def add_release(self, row: ReleaseRow) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO releases VALUES (?, ?, ?, ?)",
                       (row.trust_domain, row.digest, row.name, row.promoted_at))

    def is_promoted(self, trust_domain: str, digest: str) -> bool:
        return bool(self._query("SELECT 1 FROM releases WHERE trust_domain = ? AND digest = ?",
                                (trust_domain, digest)))

    def list_releases(self, trust_domain: str | None = None) -> list[ReleaseRow]:
        if trust_domain is None:
            rows = self._query("SELECT * FROM releases ORDER BY promoted_at")
        else:
            rows = self._query("SELECT * FROM releases WHERE trust_domain = ? ORDER BY promoted_at", (trust_domain,))
        return [ReleaseRow(*r) for r in rows]

    # users
    def put_user(self, row: UserRow) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO users VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (row.name, row.role, row.password_hash, row.totp_secret, row.failed_attempts, row.locked_until,
                 row.totp_last_step, row.last_mfa_at),
            )

    def get_user(self, name: str) -> UserRow | None:
        rows = self._query("SELECT * FROM users WHERE name = ?", (name,))
        return UserRow(*rows[0]) if rows else None

    def list_users(self) -> list[UserRow]:
        return [UserRow(*r) for r in self._query("SELECT * FROM users ORDER BY name")]

    # revocations
    def add_revocation(self, row: RevocationRow) -> int:
        with self._tx() as db:
            cur = db.execute("INSERT INTO revocations (kind, value, revoked_at, reason) VALUES (?, ?, ?, ?)",
                             (row.kind, row.value, row.revoked_at, row.reason))
            return int(cur.lastrowid)

    # every workload certificate issued (public facts only)
    def add_certificate(self, row: CertificateRow) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO certificates VALUES (?, ?, ?, ?, ?, ?)",
                       (row.serial, row.spiffe_id, row.not_after, row.fingerprint, row.issued_at, int(row.attested)))

    def list_certificates(self, spiffe_id: str | None = None, limit: int = 1000) -> list[CertificateRow]:
        where, args = ("WHERE spiffe_id = ?", (spiffe_id,)) if spiffe_id else ("", ())
        rows = self._query(f"SELECT serial, spiffe_id, not_after, fingerprint, issued_at, attested FROM certificates "
                           f"{where} ORDER BY issued_at DESC LIMIT ?", (*args, int(limit)))
        return [CertificateRow(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    # one-time join tokens (by their SHA-256): any control plane on this store redeems them
    def put_join_token(self, token_sha256: str, spiffe_id: str, expires_at: float) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM join_tokens WHERE expires_at < ?", (expires_at - 86400.0,))
            db.execute("INSERT INTO join_tokens (token_sha256, spiffe_id, expires_at) VALUES (?, ?, ?)",
                       (token_sha256, spiffe_id, expires_at))

    def use_join_token(self, token_sha256: str, spiffe_id: str, now: float
                       ) -> tuple[str, float, float | None] | None:
        """Mark the token used when it names ``spiffe_id`` and was not used; returns its row as it was before
        (spiffe_id, expires_at, used_at), or None for an unknown token."""
        with self._tx() as db:
            row = db.execute("SELECT spiffe_id, expires_at, used_at FROM join_tokens WHERE token_sha256 = ?",
                             (token_sha256,)).fetchone()
            if row is not None and row[2] is None and row[0] == spiffe_id:
                db.execute("UPDATE join_tokens SET used_at = ? WHERE token_sha256 = ?", (now, token_sha256))
        return (str(row[0]), float(row[1]), row[2]) if row is not None else None

    def list_revocations(self) -> tuple[int, list[RevocationRow]]:
        rows = self._query("SELECT version, kind, value, revoked_at, reason FROM revocations ORDER BY version")
        version = rows[-1][0] if rows else 0
        return version, [RevocationRow(*r[1:]) for r in rows]

    # token signing keys
    def put_signing_key(self, row: SigningKeyRow) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO signing_keys (kid, private_pem, created_at, retired_at, retain_s) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (row.kid, row.private_pem, row.created_at, row.retired_at, row.retain_s))

    def list_signing_keys(self) -> list[SigningKeyRow]:
        return [SigningKeyRow(r[0], bytes(r[1]), r[2], r[3], r[4]) for r in self._query(
            "SELECT kid, private_pem, created_at, retired_at, retain_s FROM signing_keys ORDER BY created_at")]

    def remove_signing_key(self, kid: str, public_pem: bytes, removed_at: float, reason: str) -> bool:
        """Delete a signing key (its private half destroyed), keep its public half for audit.

        Returns False when no such key was stored (already removed). The write-ahead
        log is checkpointed and truncated so the deleted page images do not linger there.
        """
        with self._tx() as db:
            rows = db.execute("SELECT created_at, retired_at FROM signing_keys WHERE kid = ?", (kid,)).fetchall()
            if not rows:
                return False
            db.execute("DELETE FROM signing_keys WHERE kid = ?", (kid,))
            db.execute("INSERT OR REPLACE INTO removed_signing_keys VALUES (?, ?, ?, ?, ?, ?)",
                       (kid, public_pem, rows[0][0], rows[0][1], removed_at, reason))
        if self.path != ":memory:":
            self._query("PRAGMA wal_checkpoint(TRUNCATE)")
        return True

    def list_removed_signing_keys(self) -> list[RemovedSigningKeyRow]:
        return [RemovedSigningKeyRow(r[0], bytes(r[1]), r[2], r[3], r[4], r[5])
                for r in self._query("SELECT * FROM removed_signing_keys ORDER BY removed_at")]

    # posture-agent host keys
    def put_host_key(self, host: str, public_raw: bytes) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO host_keys VALUES (?, ?)", (host, public_raw))

    def list_host_keys(self) -> list[tuple[str, bytes]]:
        return [(r[0], bytes(r[1])) for r in self._query("SELECT host, public_raw FROM host_keys ORDER BY host")]

    # small settings
    def set_meta(self, key: str, value: Any) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._query("SELECT value FROM meta WHERE key = ?", (key,))
        return json.loads(rows[0][0]) if rows else default

    # a small secret of the floor's: the embedded store is a 0600 file in the 0700 home, like the CA keys
    def put_secret(self, name: str, data: bytes) -> None:
        self.set_meta(f"secret:{name}", data.hex())

    def get_secret(self, name: str) -> bytes | None:
        value = self.get_meta(f"secret:{name}")
        return bytes.fromhex(value) if value else None


def open_identity_store(home: Path | str, environ: dict[str, str] | None = None) -> IdentityStore:
    """The identity store of a home: on PostgreSQL when ``$TRUSTFABRIC_DATABASE_URL`` is set (its KEK from the
    environment, see :mod:`~trustfabric.identity.sealing`), else the embedded SQLite file ``<home>/identity.db``."""
    env = os.environ if environ is None else environ
    dsn = env.get(DATABASE_URL_ENV, "")
    if not dsn:
        return SqliteIdentityStore(Path(home) / "identity.db")
    # imported here: psycopg costs about 90 ms to import, which the embedded default never pays
    from trustfabric.audit.postgres import DEFAULT_SCHEMA
    from trustfabric.identity.postgres import PostgresIdentityStore
    from trustfabric.identity.sealing import Sealer

    return PostgresIdentityStore(dsn, env.get(DATABASE_SCHEMA_ENV) or DEFAULT_SCHEMA, sealer=Sealer.from_env(env))


def open_default_store() -> IdentityStore:
    """The store of ``$TRUSTFABRIC_HOME`` (see :func:`open_identity_store`)."""

    return open_identity_store(home_dir())
