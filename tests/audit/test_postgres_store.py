"""The central audit log on PostgreSQL (127.0.0.1:5432, database ``test``): migrations, verify and proofs
unchanged, tampering detected, one sequencer at a time, an unreachable database a typed refusal.

Each test run has a fresh schema, dropped at the end. These tests need the server: they fail,
they do not skip, when it cannot be reached (CI starts it; see .ci/run).
"""

from __future__ import annotations

import json
import time
import uuid

import psycopg
import pytest
from psycopg import sql
from typer.testing import CliRunner

from trustfabric.audit import postgres
from trustfabric.audit.errors import AuditStoreError, TamperDetected
from trustfabric.audit.events import Emitter, Kind
from trustfabric.audit.log import AuditLog, Query
from trustfabric.audit.treehead import load_or_create_signer, load_public_key
from trustfabric.audit.verify import verify_log
from trustfabric.cli import app

DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def schema():
    name = f"tf_test_{uuid.uuid4().hex[:10]}"
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def _fill(log: AuditLog, n: int, source: str = "venue-a", start: int = 0) -> None:
    em = Emitter(source, log, start_seq=start)
    for i in range(n):
        em.emit(Kind.DECISION, principal="spiffe://prod.acme.example/algo/algo-momentum", action="submit_order",
                resource="venue/orders", decision="allow" if i % 3 else "deny", trace_id=f"o-{start + i}")


def test_migrate_applies_once_and_refuses_a_newer_schema(schema):
    assert postgres.migrate(DSN, schema) == list(range(1, postgres.known_version() + 1))
    assert postgres.migrate(DSN, schema) == []
    assert postgres.schema_version(DSN, schema) == postgres.known_version()
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("INSERT INTO {}.schema_migrations VALUES (99, 0)").format(sql.Identifier(schema)))
    with pytest.raises(postgres.SchemaError) as newer:
        postgres.migrate(DSN, schema)
    assert newer.value.reason == "db.schema_newer"
    with pytest.raises(postgres.SchemaError) as refused:
        postgres.PostgresAuditStore(DSN, schema)
    assert refused.value.reason == "db.schema_newer"


def test_an_unmigrated_schema_and_an_unreachable_server_are_refused(schema):
    with pytest.raises(postgres.SchemaError) as outdated:
        postgres.PostgresAuditStore(DSN, schema)
    assert outdated.value.reason == "db.schema_outdated"
    with pytest.raises(AuditStoreError) as down:
        postgres.PostgresAuditStore("postgresql://postgres@127.0.0.1:1/test", schema)
    assert down.value.reason == "db.unreachable"
    with pytest.raises(postgres.SchemaError):
        postgres.migrate(DSN, "Robert'); DROP TABLE students;--")


def test_the_log_verifies_proves_and_detects_tampering_on_postgres(schema, tmp_path):
    postgres.migrate(DSN, schema)
    store = postgres.PostgresAuditStore(DSN, schema)
    log = AuditLog(store, load_or_create_signer(tmp_path))
    t0 = time.perf_counter()
    _fill(log, 3000)
    ingest_s = time.perf_counter() - t0
    head = log.checkpoint()
    assert head.tree_size == 3000 == store.size() == store.end()
    report = verify_log(store, load_public_key(tmp_path), [head])
    assert report.size == 3000 and report.signed_size == 3000
    proof = log.prove_inclusion(1234)
    assert proof and json.dumps(proof)  # a JSON document a third party checks
    assert len(store.query(Query(trace_id="o-77"))) == 1
    print(f"postgres: 3000 records appended one by one in {ingest_s:.2f} s ({3000 / ingest_s:.0f}/s)")
    with psycopg.connect(DSN, autocommit=True) as conn:  # someone edits a record in the database
        conn.execute(sql.SQL("UPDATE {}.records SET data = %s WHERE idx = 17").format(sql.Identifier(schema)),
                     (b'{"forged": true}',))
    with pytest.raises(TamperDetected):
        verify_log(store, load_public_key(tmp_path), [head])
    log.close()


def test_one_sequencer_at_a_time_and_the_next_takes_over_when_it_dies(schema, tmp_path):
    postgres.migrate(DSN, schema)
    first = postgres.PostgresAuditStore(DSN, schema)
    log = AuditLog(first, load_or_create_signer(tmp_path))
    _fill(log, 10)
    assert first.is_sequencer
    second = postgres.PostgresAuditStore(DSN, schema, lease_wait_s=0.3)
    with pytest.raises(AuditStoreError) as busy:
        with second.transaction():
            pass
    assert busy.value.reason == "audit.sequencer_busy"
    first.close()  # the holder goes away (a killed process's connection closes the same way)
    other = AuditLog(second, load_or_create_signer(tmp_path))
    _fill(other, 10, source="venue-b")
    assert second.is_sequencer and second.size() == 20
    other.close()


def test_a_hung_sequencer_is_ended_only_by_a_store_that_may_preempt(schema, tmp_path):
    postgres.migrate(DSN, schema)
    hung = postgres.PostgresAuditStore(DSN, schema)
    log = AuditLog(hung, load_or_create_signer(tmp_path))
    _fill(log, 5)  # it holds the sequencer's lock, and then hangs (its session stays open)
    for preempt in (False, lambda: False):  # no lease, or a lease found taken: it waits, and is refused
        other = postgres.PostgresAuditStore(DSN, schema, lease_wait_s=0.8)
        other.preempt = preempt
        with pytest.raises(AuditStoreError) as busy:
            with other.transaction():
                pass
        assert busy.value.reason == "audit.sequencer_busy" and other.preempted == 0
        other.close()
    holder = postgres.PostgresAuditStore(DSN, schema, lease_wait_s=3.0)
    holder.preempt = lambda: True  # the control plane that holds the floor's lease now
    taken = AuditLog(holder, load_or_create_signer(tmp_path))
    _fill(taken, 5, source="venue-b")
    assert holder.is_sequencer and holder.preempted == 1 and holder.size() == 10
    with pytest.raises(AuditStoreError):  # the hung one, back, writes nothing more
        _fill(log, 1, source="venue-c")
    assert holder.size() == 10
    taken.close()


def test_audit_verify_runs_unchanged_against_postgres(schema, tmp_path, monkeypatch):
    postgres.migrate(DSN, schema)
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    monkeypatch.setenv("TRUSTFABRIC_DATABASE_URL", DSN)
    monkeypatch.setenv("TRUSTFABRIC_DATABASE_SCHEMA", schema)
    from trustfabric.audit.log import open_log

    log = open_log(tmp_path / "audit")
    _fill(log, 50)
    log.checkpoint()
    log.close()
    result = CliRunner().invoke(app, ["audit", "verify", str(tmp_path / "audit"), "--spool", str(tmp_path / "none")])
    assert result.exit_code == 0, result.output
    assert "intact" in result.output and "50 records" in result.output
    status = CliRunner().invoke(app, ["db", "status"])
    assert status.exit_code == 0 and "up to date" in status.output


@pytest.mark.slow  # a real floor whose collector ships into PostgreSQL
async def test_a_floor_keeps_its_central_log_on_postgres(schema, tmp_path, monkeypatch):
    from trustfabric.trading.launcher import Floor

    postgres.migrate(DSN, schema)
    monkeypatch.setenv("TRUSTFABRIC_DATABASE_URL", DSN)
    monkeypatch.setenv("TRUSTFABRIC_DATABASE_SCHEMA", schema)
    monkeypatch.setenv("TRUSTFABRIC_KEK", "22" * 32)  # beyond one machine the identity store is here too
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path))
    floor = Floor(tmp_path, "zero-trust", services=("market-data", "algo-momentum", "pre-trade-risk"),
                  collect_interval_s=0.25)
    await floor.start()
    try:
        assert await floor.wait_for(lambda: floor.total("pep_allowed") > 10, 30.0)
        store = postgres.PostgresAuditStore(DSN, schema)
        try:
            # the services' decisions shipped (the control plane's own records may come first); the wait yields
            # to the event loop, where the floor's control plane runs
            assert await floor.wait_for(lambda: store.size() >= 10 and store.query(Query(kind="decision")), 20.0,
                                        0.2), f"{store.size()} records, no decision among them"
        finally:
            store.close()
    finally:
        await floor.stop()
    assert not (tmp_path / "audit" / "audit.db").exists()  # nothing went to SQLite behind PostgreSQL's back
    result = CliRunner().invoke(app, ["audit", "verify", str(tmp_path / "audit")])
    assert result.exit_code == 0 and "intact" in result.output, result.output
