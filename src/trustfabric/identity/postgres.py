"""The identity store on PostgreSQL: the same :class:`~trustfabric.identity.store.IdentityStore`, shared by replicas.

Selected with the central log's DSN (``$TRUSTFABRIC_DATABASE_URL``, schema
``$TRUSTFABRIC_DATABASE_SCHEMA``; :func:`~trustfabric.identity.store.open_identity_store`), in the tables of migration
``0002_identity.sql`` (``trustfabric db migrate``; a schema older or newer than this code is
refused, as the audit store refuses it). Every control-plane replica opens it: any of them
issues certificates and tokens from the same CAs and key ring, and sees every revocation in
the one order ``identity_revocations.version`` gives it.

What would let someone mint identities never lies in the database in plaintext: the CAs'
key material, the token signing keys' private halves and the people's TOTP seeds are sealed
under the operator's key-encryption key (:mod:`trustfabric.identity.sealing`), each under
its own name (``ca:<trust domain>``, ``signing-key:<kid>``, ``totp:<user>``). The store keeps
the KEK's check value in ``identity_meta``; a store opened with another KEK is refused before
anything is read (``db.kek_wrong``). Unlike the SQLite store, this one holds the CAs
themselves (:attr:`holds_ca_keys`): replicas on other hosts share no files.

``psycopg`` errors are translated into :class:`~trustfabric.identity.errors.StoreError`
(``db.unreachable`` when the server cannot be reached, ``store.error`` otherwise).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from trustfabric.audit import postgres as pg
from trustfabric.audit.errors import AuditStoreError
from trustfabric.identity.errors import StoreError
from trustfabric.identity.sealing import CHECK_NAME, Sealer
from trustfabric.identity.store import (
    CertificateRow,
    ReleaseRow,
    RemovedSigningKeyRow,
    RevocationRow,
    SigningKeyRow,
    UserRow,
)

_CHECK_KEY = "kek.check"
POOL_TIMEOUT_S = 2.0  # a call waits this long for a connection, then is refused (db.unreachable)


class PostgresIdentityStore:
    """:class:`IdentityStore` on a PostgreSQL schema (see the module's docstring)."""

    holds_ca_keys = True
    remote = True

    def __init__(self, dsn: str, schema: str = pg.DEFAULT_SCHEMA, *, sealer: Sealer, pool_size: int = 4) -> None:
        try:
            pg.require_current(dsn, schema)
        except AuditStoreError as exc:  # the server cannot be reached
            raise StoreError(exc.detail, reason=exc.reason) from None
        self.dsn, self.schema, self._sealer = dsn, schema, sealer
        self.path = f"postgresql:{schema}"  # what messages name
        try:
            self._pool = ConnectionPool(dsn, min_size=1, max_size=pool_size, open=True, timeout=POOL_TIMEOUT_S,
                                        kwargs={"options": f"-c search_path={schema}", "autocommit": True,
                                                "connect_timeout": 2})
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL unreachable: {exc}", reason="db.unreachable") from None
        try:
            self._check_kek()
        except BaseException:
            self._pool.close()
            raise

    def _check_kek(self) -> None:
        with self._tx() as cur:
            cur.execute("SELECT value FROM identity_meta WHERE key = %s FOR UPDATE", (_CHECK_KEY,))
            row = cur.fetchone()
            if row is None:  # the store's first use: this KEK becomes its KEK
                cur.execute("INSERT INTO identity_meta VALUES (%s, %s)",
                            (_CHECK_KEY, self._sealer.check_value().hex()))
                return
        self._sealer.verify_check(bytes.fromhex(row[0]))

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Cursor]:
        try:
            with self._pool.connection() as conn, conn.transaction(), conn.cursor() as cur:
                yield cur
        except StoreError:
            raise
        except PoolTimeout as exc:
            raise StoreError(f"PostgreSQL unreachable: {exc}", reason="db.unreachable") from None
        except psycopg.OperationalError as exc:
            raise StoreError(f"PostgreSQL unreachable: {exc}".strip(), reason="db.unreachable") from None
        except psycopg.Error as exc:
            raise StoreError(f"identity store write failed: {exc}") from None

    def _query(self, text: str, args: tuple = ()) -> list[tuple]:
        with self._tx() as cur:
            cur.execute(text, args)
            return cur.fetchall()

    def close(self) -> None:
        self._pool.close()

    def ping(self) -> None:
        """One round trip to the server (a pooled connection, or a new one within the pool's timeout)."""
        self._query("SELECT 1")

    # CAs: the material itself, sealed (replicas share no files)
    def put_ca(self, trust_domain: str, directory: str) -> None:
        raise StoreError("the PostgreSQL identity store holds CA keys itself: use put_ca_material",
                         reason="store.ca_files")

    def put_ca_material(self, trust_domain: str, files: dict[str, bytes]) -> None:
        blob = json.dumps({name: data.hex() for name, data in sorted(files.items())}).encode()
        with self._tx() as cur:
            cur.execute("INSERT INTO identity_cas VALUES (%s, %s) ON CONFLICT (trust_domain) DO UPDATE "
                        "SET material = EXCLUDED.material", (trust_domain, self._sealer.seal(f"ca:{trust_domain}", blob)))

    def ca_material(self, trust_domain: str) -> dict[str, bytes] | None:
        rows = self._query("SELECT material FROM identity_cas WHERE trust_domain = %s", (trust_domain,))
        if not rows:
            return None
        files = json.loads(self._sealer.open(f"ca:{trust_domain}", bytes(rows[0][0])))
        return {name: bytes.fromhex(data) for name, data in files.items()}

    def ca_directory(self, trust_domain: str) -> str | None:
        return f"postgresql:{trust_domain}" if self._query(
            "SELECT 1 FROM identity_cas WHERE trust_domain = %s", (trust_domain,)) else None

    def list_cas(self) -> list[tuple[str, str]]:
        return [(r[0], f"postgresql:{r[0]}") for r in self._query(
            "SELECT trust_domain FROM identity_cas ORDER BY trust_domain")]

    # releases
    def add_release(self, row: ReleaseRow) -> None:
        with self._tx() as cur:
            cur.execute("INSERT INTO identity_releases VALUES (%s, %s, %s, %s) ON CONFLICT (trust_domain, digest) "
                        "DO UPDATE SET name = EXCLUDED.name, promoted_at = EXCLUDED.promoted_at",
                        (row.trust_domain, row.digest, row.name, row.promoted_at))

    def is_promoted(self, trust_domain: str, digest: str) -> bool:
        return bool(self._query("SELECT 1 FROM identity_releases WHERE trust_domain = %s AND digest = %s",
                                (trust_domain, digest)))

    def list_releases(self, trust_domain: str | None = None) -> list[ReleaseRow]:
        if trust_domain is None:
            rows = self._query("SELECT * FROM identity_releases ORDER BY promoted_at")
        else:
            rows = self._query("SELECT * FROM identity_releases WHERE trust_domain = %s ORDER BY promoted_at",
                               (trust_domain,))
        return [ReleaseRow(*r) for r in rows]

    # people: the TOTP seed sealed
    def put_user(self, row: UserRow) -> None:
        with self._tx() as cur:
            cur.execute(
                "INSERT INTO identity_users VALUES (%s, %s, %s, %s, %s, %s, %s, %s) ON CONFLICT (name) DO UPDATE SET "
                "role = EXCLUDED.role, password_hash = EXCLUDED.password_hash, totp_secret = EXCLUDED.totp_secret, "
                "failed_attempts = EXCLUDED.failed_attempts, locked_until = EXCLUDED.locked_until, "
                "totp_last_step = EXCLUDED.totp_last_step, last_mfa_at = EXCLUDED.last_mfa_at",
                (row.name, row.role, row.password_hash, self._sealer.seal(f"totp:{row.name}", row.totp_secret.encode()),
                 row.failed_attempts, row.locked_until, row.totp_last_step, row.last_mfa_at))

    def _user(self, r: tuple) -> UserRow:
        secret = self._sealer.open(f"totp:{r[0]}", bytes(r[3])).decode()
        return UserRow(r[0], r[1], r[2], secret, int(r[4]), float(r[5]), int(r[6]), float(r[7]))

    def get_user(self, name: str) -> UserRow | None:
        rows = self._query("SELECT * FROM identity_users WHERE name = %s", (name,))
        return self._user(rows[0]) if rows else None

    def list_users(self) -> list[UserRow]:
        return [self._user(r) for r in self._query("SELECT * FROM identity_users ORDER BY name")]

    # revocations: one order for every replica
    def add_revocation(self, row: RevocationRow) -> int:
        with self._tx() as cur:
            cur.execute("INSERT INTO identity_revocations (kind, value, revoked_at, reason) VALUES (%s, %s, %s, %s) "
                        "RETURNING version", (row.kind, row.value, row.revoked_at, row.reason))
            return int(cur.fetchone()[0])

    # every workload certificate issued, by whichever replica (public facts only)
    def add_certificate(self, row: CertificateRow) -> None:
        with self._tx() as cur:
            cur.execute("INSERT INTO identity_certificates VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (serial) DO NOTHING",
                        (row.serial, row.spiffe_id, row.not_after, row.fingerprint, row.issued_at, row.attested))

    def list_certificates(self, spiffe_id: str | None = None, limit: int = 1000) -> list[CertificateRow]:
        where, args = ("WHERE spiffe_id = %s", (spiffe_id,)) if spiffe_id else ("", ())
        rows = self._query(f"SELECT serial, spiffe_id, not_after, fingerprint, issued_at, attested FROM "
                           f"identity_certificates {where} ORDER BY issued_at DESC LIMIT %s", (*args, int(limit)))
        return [CertificateRow(r[0], r[1], r[2], r[3], r[4], bool(r[5])) for r in rows]

    # one-time join tokens (by their SHA-256): any replica redeems what another issued, once
    def put_join_token(self, token_sha256: str, spiffe_id: str, expires_at: float) -> None:
        with self._tx() as cur:
            cur.execute("DELETE FROM identity_join_tokens WHERE expires_at < %s", (expires_at - 86400.0,))
            cur.execute("INSERT INTO identity_join_tokens (token_sha256, spiffe_id, expires_at) VALUES (%s, %s, %s)",
                        (token_sha256, spiffe_id, expires_at))

    def use_join_token(self, token_sha256: str, spiffe_id: str, now: float
                       ) -> tuple[str, float, float | None] | None:
        with self._tx() as cur:
            cur.execute("SELECT spiffe_id, expires_at, used_at FROM identity_join_tokens WHERE token_sha256 = %s "
                        "FOR UPDATE", (token_sha256,))
            row = cur.fetchone()
            if row is not None and row[2] is None and row[0] == spiffe_id:
                cur.execute("UPDATE identity_join_tokens SET used_at = %s WHERE token_sha256 = %s", (now, token_sha256))
        return (str(row[0]), float(row[1]), row[2]) if row is not None else None

    def list_revocations(self) -> tuple[int, list[RevocationRow]]:
        rows = self._query("SELECT version, kind, value, revoked_at, reason FROM identity_revocations ORDER BY version")
        version = int(rows[-1][0]) if rows else 0
        return version, [RevocationRow(*r[1:]) for r in rows]

    # token signing keys: private halves sealed
    def put_signing_key(self, row: SigningKeyRow) -> None:
        with self._tx() as cur:
            cur.execute("INSERT INTO identity_signing_keys VALUES (%s, %s, %s, %s, %s) ON CONFLICT (kid) DO UPDATE SET "
                        "private_sealed = EXCLUDED.private_sealed, created_at = EXCLUDED.created_at, "
                        "retired_at = EXCLUDED.retired_at, retain_s = EXCLUDED.retain_s",
                        (row.kid, self._sealer.seal(f"signing-key:{row.kid}", row.private_pem), row.created_at,
                         row.retired_at, row.retain_s))

    def list_signing_keys(self) -> list[SigningKeyRow]:
        return [SigningKeyRow(r[0], self._sealer.open(f"signing-key:{r[0]}", bytes(r[1])), r[2], r[3], r[4])
                for r in self._query("SELECT kid, private_sealed, created_at, retired_at, retain_s "
                                     "FROM identity_signing_keys ORDER BY created_at")]

    def remove_signing_key(self, kid: str, public_pem: bytes, removed_at: float, reason: str) -> bool:
        """Delete a signing key (its sealed private half), keep its public half for audit."""
        with self._tx() as cur:
            cur.execute("DELETE FROM identity_signing_keys WHERE kid = %s RETURNING created_at, retired_at", (kid,))
            row = cur.fetchone()
            if row is None:
                return False
            cur.execute("INSERT INTO identity_removed_signing_keys VALUES (%s, %s, %s, %s, %s, %s) "
                        "ON CONFLICT (kid) DO NOTHING", (kid, public_pem, row[0], row[1], removed_at, reason))
        return True

    def list_removed_signing_keys(self) -> list[RemovedSigningKeyRow]:
        return [RemovedSigningKeyRow(r[0], bytes(r[1]), r[2], r[3], r[4], r[5])
                for r in self._query("SELECT * FROM identity_removed_signing_keys ORDER BY removed_at")]

    # posture-agent host keys
    def put_host_key(self, host: str, public_raw: bytes) -> None:
        with self._tx() as cur:
            cur.execute("INSERT INTO identity_host_keys VALUES (%s, %s) ON CONFLICT (host) DO UPDATE "
                        "SET public_raw = EXCLUDED.public_raw", (host, public_raw))

    def list_host_keys(self) -> list[tuple[str, bytes]]:
        return [(r[0], bytes(r[1])) for r in self._query("SELECT host, public_raw FROM identity_host_keys ORDER BY host")]

    # small settings
    def set_meta(self, key: str, value: Any) -> None:
        if key == _CHECK_KEY or key == CHECK_NAME:
            raise StoreError(f"{key} is the store's own", reason="store.reserved_key")
        with self._tx() as cur:
            cur.execute("INSERT INTO identity_meta VALUES (%s, %s) ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                        (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        rows = self._query("SELECT value FROM identity_meta WHERE key = %s", (key,))
        return json.loads(rows[0][0]) if rows and key != _CHECK_KEY else default

    # a small secret of the floor's (the approval key): sealed under the KEK like the other private material
    def put_secret(self, name: str, data: bytes) -> None:
        self.set_meta(f"secret:{name}", self._sealer.seal(f"secret:{name}", data).hex())

    def get_secret(self, name: str) -> bytes | None:
        sealed = self.get_meta(f"secret:{name}")
        return self._sealer.open(f"secret:{name}", bytes.fromhex(sealed)) if sealed else None

