"""PostgreSQL goes away under a running floor, and comes back.

The floor's identity store and central audit log are on PostgreSQL, reached through a proxy the test
cuts (every connection reset, new ones refused, as when the server stops). While it is away the
control plane issues nothing - tokens, tables, renewals and joins are refused with
``control.state_unavailable`` - the enforcement points keep serving the sessions they hold (cached
decisions), and nothing fails open. When it is back the floor issues again without a restart, and
every record written meanwhile reaches the central log, which verifies.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid

import psycopg
import pytest
from cryptography.hazmat.primitives import serialization
from psycopg import sql

from tests.faults.proxy import CuttableProxy
from trustfabric.audit import postgres
from trustfabric.audit.log import Query, open_log
from trustfabric.control.errors import ControlRefused
from trustfabric.control.plane import STATE_UNAVAILABLE
from trustfabric.identity.workload import issue_for_test
from trustfabric.trading.launcher import Floor

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

DSN = "postgresql://postgres@127.0.0.1:5432/test"
SERVICES = ("market-data", "algo-momentum", "pre-trade-risk", "order-router", "venue-a", "oms", "settlement")


@pytest.fixture
def database(monkeypatch, tmp_path):
    schema = f"tf_fault_{uuid.uuid4().hex[:10]}"
    proxy = CuttableProxy(("127.0.0.1", 5432)).start()
    dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/test"
    postgres.migrate(dsn, schema)
    monkeypatch.setenv("TRUSTFABRIC_DATABASE_URL", dsn)
    monkeypatch.setenv("TRUSTFABRIC_DATABASE_SCHEMA", schema)
    monkeypatch.setenv("TRUSTFABRIC_KEK", "11" * 32)
    monkeypatch.setenv("TRUSTFABRIC_HOME", str(tmp_path / "home"))
    yield proxy, schema
    proxy.close()
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


def _token(plane, caller: str) -> str:
    cred = issue_for_test(plane.identity.ca(plane.trust_domain), caller, time.time())
    return plane.token_for(caller, cred.certificate.public_bytes(serialization.Encoding.DER), "pre-trade-risk")[0]


async def test_the_floor_refuses_to_issue_serves_what_it_holds_and_recovers(database, tmp_path):
    proxy, _schema = database
    floor = Floor(tmp_path / "home", "zero-trust", services=SERVICES)
    await floor.start()
    plane = floor.plane
    algo = floor.topology.spiffe_id("algo-momentum")
    try:
        assert await floor.wait_for(lambda: floor.total("pep_allowed") > 50, 60.0)
        assert _token(plane, algo)  # issued while the database is there
        proxy.cut()
        cut_at = time.time()
        served_before = floor.total("pep_allowed")
        assert await floor.wait_for(lambda: not plane.state_available, 15.0), "the outage went unnoticed"
        with pytest.raises(ControlRefused) as refused:
            _token(plane, algo)
        assert refused.value.reason == STATE_UNAVAILABLE and refused.value.retryable
        assert await floor.wait_for(lambda: floor.total("pep_allowed") > served_before + 20, 20.0), \
            "held sessions stopped being served"
        assert floor.total("fail_open") == 0
        assert all(p.status == "ready" for p in floor.processes.values())
        proxy.restore()
        assert await floor.wait_for(lambda: plane.state_available, 15.0), "the floor did not see it come back"
        assert _token(plane, algo)  # issuing again, no restart
        back_at = time.time()
        assert await floor.wait_for(lambda: floor.collected > 0 and not floor.collector_error, 20.0)
    finally:
        await floor.stop()
    assert floor.total("fail_open") == 0
    log = open_log(tmp_path / "home" / "audit")
    try:
        during = [r for r in log.query(Query(kind="decision", since_ns=int(cut_at * 1e9), until_ns=int(back_at * 1e9)))]
    finally:
        log.close()
    assert during, "no record written during the outage reached the central log"
    verify = subprocess.run([sys.executable, "-m", "trustfabric.cli", "audit", "verify", "--require-signed"],
                            env=dict(os.environ), capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
