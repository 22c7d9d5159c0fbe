"""The identity store on PostgreSQL (127.0.0.1:5432, database ``test``): two replicas share one identity,
no private key lies in the database in plaintext, and a wrong, missing or exposed KEK is refused at start.

Each test has a fresh schema, dropped at the end. These tests need the server: they fail, they do not
skip, when it cannot be reached (CI starts it; see .ci/run).
"""

from __future__ import annotations

import os
import time
import uuid

import psycopg
import pyotp
import pytest
from cryptography.hazmat.primitives import serialization
from psycopg import sql

from trustfabric.audit import postgres
from trustfabric.identity.errors import StoreError
from trustfabric.identity.plane import IdentityPlane
from trustfabric.identity.postgres import PostgresIdentityStore
from trustfabric.identity.sealing import KEK_ENV, KEK_FILE_ENV, Sealer
from trustfabric.identity.store import RevocationRow, SigningKeyRow, UserRow, open_identity_store
from trustfabric.identity.workload import issue_for_test

DSN = "postgresql://postgres@127.0.0.1:5432/test"
KEK = bytes(range(32))
OTHER_KEK = bytes(range(1, 33))
ALGO = "spiffe://prod.acme.example/algo/algo-momentum"


@pytest.fixture
def schema():
    name = f"tf_test_{uuid.uuid4().hex[:10]}"
    postgres.migrate(DSN, name)
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def on_postgres(schema, monkeypatch):
    monkeypatch.setenv("TRUSTFABRIC_DATABASE_URL", DSN)
    monkeypatch.setenv("TRUSTFABRIC_DATABASE_SCHEMA", schema)
    monkeypatch.setenv(KEK_ENV, KEK.hex())
    monkeypatch.delenv(KEK_FILE_ENV, raising=False)
    return schema


def _raw(schema: str, query: str) -> list[tuple]:
    with psycopg.connect(DSN, autocommit=True, options=f"-c search_path={schema}") as conn:
        return conn.execute(query).fetchall()


def test_two_replicas_share_the_cas_the_key_ring_people_and_revocations(on_postgres, tmp_path):
    one = IdentityPlane(tmp_path / "host-1")
    two = IdentityPlane(tmp_path / "host-2")
    try:
        assert [created for _, created in one.init()] == [True, True, True]
        assert [created for _, created in two.init()] == [False, False, False]  # the CAs exist: shared, not made twice
        assert not (tmp_path / "host-1" / "ca").exists()  # no CA key file on any host
        now = time.time()
        cred = issue_for_test(two.ca("prod.acme.example"), ALGO, now)  # the other replica issues from the same CA
        assert cred.bundle_pem == one.ca("prod.acme.example").bundle_pem()
        der = cred.certificate.public_bytes(serialization.Encoding.DER)
        token = one.token_issuer().issue(ALGO, "spiffe://prod.acme.example/risk/pre-trade-risk", now, cert_der=der)
        claims = two.token_verifier().verify(token, "spiffe://prod.acme.example/risk/pre-trade-risk", der, now=now)
        assert claims.sub == ALGO  # a token issued by one replica verifies at the other
        secret = one.users().enrol("dave", "security_officer", "correct horse battery staple", now).totp_secret
        assert two.users().login("dave", "correct horse battery staple", pyotp.TOTP(secret).now(), now).name == "dave"
        one.revocations.revoke_spiffe_id(ALGO, now, "quarantine.test")
        assert IdentityPlane(tmp_path / "host-3").revocations.is_quarantined(ALGO)
    finally:
        one.close()
        two.close()


def test_no_private_key_or_totp_seed_is_stored_in_plaintext(on_postgres, tmp_path):
    plane = IdentityPlane(tmp_path / "home")
    try:
        plane.init()
        secret = plane.users().enrol("erin", "developer", "correct horse battery staple", time.time()).totp_secret
    finally:
        plane.close()
    stored = b"".join(bytes(r[0]) for r in _raw(on_postgres, "SELECT material FROM identity_cas"))
    stored += b"".join(bytes(r[0]) for r in _raw(on_postgres, "SELECT private_sealed FROM identity_signing_keys"))
    stored += b"".join(bytes(r[0]) for r in _raw(on_postgres, "SELECT totp_secret FROM identity_users"))
    assert stored and b"PRIVATE KEY" not in stored and b"BEGIN" not in stored and secret.encode() not in stored
    for name in ("g1-root.key", "g1-issuing.key"):
        assert name.encode() not in stored  # even the material's file names are inside the seal


def test_a_wrong_missing_invalid_or_exposed_kek_is_refused_at_start(on_postgres, tmp_path, monkeypatch):
    IdentityPlane(tmp_path / "home").close()  # the store's first use: KEK is now this store's KEK
    monkeypatch.setenv(KEK_ENV, OTHER_KEK.hex())
    with pytest.raises(StoreError) as wrong:
        IdentityPlane(tmp_path / "home")
    assert wrong.value.reason == "db.kek_wrong"
    monkeypatch.delenv(KEK_ENV)
    with pytest.raises(StoreError) as missing:
        open_identity_store(tmp_path / "home")
    assert missing.value.reason == "db.kek_missing"
    monkeypatch.setenv(KEK_ENV, "not a key")
    with pytest.raises(StoreError) as invalid:
        open_identity_store(tmp_path / "home")
    assert invalid.value.reason == "db.kek_invalid"
    monkeypatch.delenv(KEK_ENV)
    key_file = tmp_path / "kek"
    key_file.write_bytes(KEK)
    os.chmod(key_file, 0o644)
    monkeypatch.setenv(KEK_FILE_ENV, str(key_file))
    with pytest.raises(StoreError) as exposed:
        open_identity_store(tmp_path / "home")
    assert exposed.value.reason == "db.kek_exposed"
    os.chmod(key_file, 0o600)
    open_identity_store(tmp_path / "home").close()  # the right KEK from a private file opens it


def test_a_sealed_value_moved_to_another_row_does_not_open(schema):
    store = PostgresIdentityStore(DSN, schema, sealer=Sealer(KEK))
    try:
        store.put_signing_key(SigningKeyRow("k1", b"private one", 1.0))
        store.put_signing_key(SigningKeyRow("k2", b"private two", 2.0))
        with psycopg.connect(DSN, autocommit=True, options=f"-c search_path={schema}") as conn:
            conn.execute("UPDATE identity_signing_keys SET private_sealed = "
                         "(SELECT private_sealed FROM identity_signing_keys WHERE kid = 'k1') WHERE kid = 'k2'")
        with pytest.raises(StoreError) as moved:
            store.list_signing_keys()
        assert moved.value.reason == "db.kek_wrong"
    finally:
        store.close()


def test_the_store_keeps_the_protocols_semantics(schema):
    store = PostgresIdentityStore(DSN, schema, sealer=Sealer(KEK))
    try:
        assert store.add_revocation(RevocationRow("serial", "7", 1.0, "revoked")) < \
            store.add_revocation(RevocationRow("spiffe_id", ALGO, 2.0, "quarantine"))
        version, rows = store.list_revocations()
        assert [r.kind for r in rows] == ["serial", "spiffe_id"] and version >= 2
        store.put_user(UserRow("bob", "risk_officer", "hash", "SEED", failed_attempts=2))
        store.put_user(UserRow("bob", "risk_officer", "hash", "SEED", totp_last_step=9))  # replaced, not added
        assert store.get_user("bob").totp_last_step == 9 and store.get_user("bob").failed_attempts == 0
        store.put_signing_key(SigningKeyRow("k1", b"pem", 1.0))
        assert store.remove_signing_key("k1", b"public", 3.0, "key.revoked")
        assert not store.remove_signing_key("k1", b"public", 3.0, "key.revoked")
        assert store.list_signing_keys() == [] and store.list_removed_signing_keys()[0].public_pem == b"public"
        store.set_meta("firm", "acme.example")
        assert store.get_meta("firm") == "acme.example" and store.get_meta("kek.check") is None
        with pytest.raises(StoreError):
            store.set_meta("kek.check", "mine")
    finally:
        store.close()


def test_an_unreachable_server_and_an_outdated_schema_are_refused(schema):
    with pytest.raises(StoreError) as down:
        PostgresIdentityStore("postgresql://postgres@127.0.0.1:1/test", schema, sealer=Sealer(KEK))
    assert down.value.reason == "db.unreachable"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DELETE FROM {}.schema_migrations WHERE version = %s").format(sql.Identifier(schema)),
                     (postgres.known_version(),))
    with pytest.raises(postgres.SchemaError) as outdated:
        PostgresIdentityStore(DSN, schema, sealer=Sealer(KEK))
    assert outdated.value.reason == "db.schema_outdated"
