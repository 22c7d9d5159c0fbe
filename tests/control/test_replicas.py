"""Control-plane replicas on one PostgreSQL schema: a follower answers with the lease holder's state.

Two :class:`ControlPlane` s in one process share a fresh schema (127.0.0.1:5432, database ``test``): the
holder writes, the follower catches up before it answers (``control/replica.py``). Each change the holder
makes - a quarantine, a release, a risk score, a revocation, a policy activation - is in the follower's
next answer, with the holder's epochs; a replayed snapshot changes nothing; an unreachable store and an
operator's request are refusals at the follower.
"""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from psycopg import sql

from trustfabric.audit import postgres
from trustfabric.control import client as control_client
from trustfabric.control.errors import NOT_LEADER, STATE_UNAVAILABLE, BootstrapRefused, ControlRefused
from trustfabric.control.plane import PRINCIPAL_QUARANTINED, ControlPlane
from trustfabric.control.protocol import OperatorRequest
from trustfabric.control.replica import Follower, SharedVersions
from trustfabric.control.server import ControlServer
from trustfabric.identity.operators import OperatorCredential
from trustfabric.identity.revocation import RevocationSet
from trustfabric.transport.tls import RotatingCredentials, TLSConfig

DSN = "postgresql://postgres@127.0.0.1:5432/test"
DOWN = "postgresql://postgres@127.0.0.1:1/test"
DIGEST = "ab" * 32


@pytest.fixture
def schema(monkeypatch):
    name = f"tf_replica_{uuid.uuid4().hex[:10]}"
    postgres.migrate(DSN, name)
    monkeypatch.setenv("TRUSTFABRIC_DATABASE_URL", DSN)
    monkeypatch.setenv("TRUSTFABRIC_DATABASE_SCHEMA", name)
    monkeypatch.setenv("TRUSTFABRIC_KEK", "44" * 32)
    yield name
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def planes(schema, tmp_path):
    holder = ControlPlane(tmp_path / "host-1")
    follower = ControlPlane(tmp_path / "host-2", writer=False, instance="replica-1")
    follower.follower = Follower(follower, SharedVersions(DSN, schema))
    follower.follower.catch_up()
    yield holder, follower
    follower.follower.versions.close()
    follower.close()
    holder.close()


def _tables(holder: ControlPlane, follower: ControlPlane, service: str, principal: str):
    asking = holder.topology.spiffe_id(service)
    now = holder.clock.now()
    return holder.table_for(asking, principal, now), follower.table_for(asking, principal, now)


def _same(a, b) -> None:
    assert (a.epoch, a.global_epoch) == (b.epoch, b.global_epoch)
    assert {k: (v.allowed, v.reason) for k, v in a.entries.items()} == \
        {k: (v.allowed, v.reason) for k, v in b.entries.items()}


def test_a_follower_issues_the_holders_tables_with_the_holders_epochs(planes):
    holder, follower = planes
    router = holder.topology.spiffe_id("order-router")
    _same(*_tables(holder, follower, "venue-a", router))
    assert follower.engine.epochs() == holder.engine.epochs()

    holder.hub.set_risk_score(router, 95, origin="analytics")  # a signal that changes decisions
    assert follower.follower.catch_up()
    _same(*_tables(holder, follower, "venue-a", router))
    assert not follower.follower.catch_up()  # nothing moved: the same snapshot again changes nothing

    holder.hub.quarantine(router, reason="test")
    assert follower.follower.catch_up()
    with pytest.raises(ControlRefused) as refused:
        follower.table_for(holder.topology.spiffe_id("venue-a"), router, holder.clock.now())
    assert refused.value.reason == PRINCIPAL_QUARANTINED
    holder.hub.release(router)
    holder.hub.set_risk_score(router, 5, origin="analytics")
    follower.follower.catch_up()
    _same(*_tables(holder, follower, "venue-a", router))
    assert follower.engine.epochs() == holder.engine.epochs()


def test_a_follower_sees_the_holders_revocations_and_writes_nothing(planes, schema):
    holder, follower = planes
    algo = holder.topology.spiffe_id("algo-momentum")
    holder.identity.revocations.revoke_spiffe_id(algo, holder.clock.now(), reason="test")
    assert not follower.identity.revocations.is_quarantined(algo)
    follower.follower.catch_up()
    assert follower.identity.revocations.is_quarantined(algo)
    with psycopg.connect(DSN, autocommit=True, options=f"-c search_path={schema}") as conn:
        before = conn.execute("SELECT version FROM signal_state").fetchone()
        follower.hub.set_risk_score(algo, 99, origin="test")  # a follower's own hub change is not the record
        assert conn.execute("SELECT version FROM signal_state").fetchone() == before


def test_a_follower_that_cannot_read_the_store_answers_nothing(planes, schema):
    _holder, follower = planes
    follower.follower.versions = SharedVersions(DOWN, schema)
    with pytest.raises(ControlRefused) as refused:
        follower.follower.catch_up()
    assert refused.value.reason == STATE_UNAVAILABLE and refused.value.retryable


async def test_a_follower_refuses_operators_and_serves_tables_over_its_control_port(planes):
    holder, follower = planes
    server = await ControlServer(follower).start("127.0.0.1")
    try:
        request = OperatorRequest(credential=OperatorCredential(user="dora", password="x", totp="000000"),
                                  action="signal.risk", target="algo-momentum", args={"score": "90"})
        with pytest.raises(ControlRefused) as refused:
            await control_client.operator_request("127.0.0.1", server.bootstrap_port,
                                                  bundle_pem=follower.credentials.bundle_pem,
                                                  control_id=follower.control_id, request=request, timeout_s=5.0)
        assert refused.value.reason == NOT_LEADER
        holder.hub.quarantine(holder.topology.spiffe_id("order-router"), reason="test")
        # a table request at the follower's port, right after the holder's change: caught up before the answer
        holder.promote("venue-a", DIGEST)
        token = holder.issue_join_token("venue-a")

        async def join():
            return await control_client.join(
                "127.0.0.1", server.bootstrap_port, bundle_pem=follower.credentials.bundle_pem,
                control_id=follower.control_id, join_token=token, spiffe_id=holder.spiffe_id("venue-a"),
                code_digest=DIGEST, posture=holder.posture_report("venue-a"))

        creds, reply = await join()  # a certificate from the follower: join tokens are in the store
        # in the shared inventory, whichever replica issued it
        [issued] = holder.identity.store.list_certificates(holder.spiffe_id("venue-a"))
        assert issued.serial == format(creds.certificate.serial_number, "x") and issued.attested
        with pytest.raises(BootstrapRefused) as reused:
            await join()
        assert reused.value.reason == "bootstrap.join_token_reused"
        tls = TLSConfig(RotatingCredentials(creds), revocation=RevocationSet())
        channel = control_client.ControlClient("127.0.0.1", server.control_port, tls, reply.control_id, "venue-a")
        await channel.connect()
        try:
            reply = await channel.table(holder.topology.spiffe_id("order-router"), holder.clock.now())
            assert not reply.ok and reply.reason == PRINCIPAL_QUARANTINED
            reply = await channel.table(holder.topology.spiffe_id("oms"), holder.clock.now())
            assert reply.ok and reply.table.global_epoch == holder.engine.global_epoch
        finally:
            channel.close()
        await asyncio.sleep(0)
    finally:
        await server.close()
