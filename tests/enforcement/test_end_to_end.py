"""A real mTLS session through the enforcement point: identity CA, real EdDSA access tokens bound to the
client certificate (``cnf.x5t#S256``, identity plane's TokenIssuer/TokenVerifier/ReplayCache), transport
FrameServer, policy engine."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import msgspec
import pytest

from trustfabric.audit.events import Kind, MemorySink
from trustfabric.enforcement import errors as E
from trustfabric.enforcement.guard import guarded_handler
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.service import GuardedService
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.revocation import RevocationSet
from trustfabric.identity.workload import issue_for_test
from trustfabric.policy.engine import PolicyEngine
from trustfabric.transport.connection import FrameServer, connect
from trustfabric.transport.frames import ErrorFrame, OpenSession, RenewSession, Request, Response, SessionReady
from trustfabric.transport.tls import TLSConfig

from trustfabric.enforcement.errors import SessionRefused
from trustfabric.transport.errors import HandshakeRefused

from trustfabric.identity.tokens import KeyRing, ReplayCache, TokenIssuer, TokenVerifier

from .fakes import FakePeer

ISSUER = "https://idp.prod.acme.example"
KEYS = KeyRing.generate(time.time())
TOKENS = TokenIssuer(KEYS, ISSUER)


def FakePeerOf(creds):
    return FakePeer(str(creds.spiffe_id), creds.cert_der, creds.fingerprint_sha256, creds.serial)

POLICIES = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def floor():
    engine = PolicyEngine.from_dir(POLICIES, assume_healthy=True)
    now = time.time()
    ca = CertificateAuthority.create(engine.topology.trust_domain if hasattr(engine.topology, "trust_domain")
                                     else "prod.acme.example", now - 60)
    risk_id = engine.topology.spiffe_id("pre-trade-risk")
    algo_id = engine.topology.spiffe_id("algo-momentum")
    return engine, {"risk": issue_for_test(ca, risk_id, now - 60), "algo": issue_for_test(ca, algo_id, now - 60)}


@pytest.fixture
async def risk(floor):
    engine, creds = floor
    revocations = RevocationSet()
    sink = MemorySink()
    verifier = TokenVerifier(KEYS, ISSUER, replay_cache=ReplayCache())
    pep = EnforcementPoint(str(creds["risk"].spiffe_id), engine, verifier, sink=sink)
    pep.attach_revocations(revocations)
    unsubscribe = engine.bus.subscribe(pep.on_invalidation)
    svc = GuardedService("risk", pep)

    @svc.handler(action="submit_order", resource="risk/orders")
    async def on_order(req, ctx):
        return msgspec.msgpack.encode({"accepted": req.symbol, "by": ctx.principal})

    server = await FrameServer(guarded_handler(pep, svc), tls=TLSConfig(creds["risk"], revocation=revocations),
                               name="risk").start("127.0.0.1", 0)
    yield pep, server, revocations, sink
    await server.close()
    unsubscribe()
    pep.flush_decisions()
    assert pep.fail_open == 0


def token_for(creds, audience, ttl=60, issuer=TOKENS, cert_der=None):
    return issuer.issue(str(creds.spiffe_id), audience, time.time(), ttl, cert_der=cert_der or creds.cert_der)


async def test_session_and_orders_over_mtls(floor, risk):
    _, creds = floor
    pep, server, _, sink = risk
    conn = await connect("127.0.0.1", server.port, tls=TLSConfig(creds["algo"]))
    try:
        conn.send(Request(rid=1, action="submit_order", resource="risk/orders", symbol="AAPL", notional=10))
        assert (await asyncio.wait_for(conn.recv(), 3)) == Response(rid=1, ok=False, reason=E.NO_SESSION)
        conn.send(OpenSession(token=token_for(creds["algo"], pep.audience)))
        assert isinstance(await asyncio.wait_for(conn.recv(), 3), SessionReady)
        conn.send(Request(rid=2, action="submit_order", resource="risk/orders", symbol="AAPL", notional=10))
        ok = await asyncio.wait_for(conn.recv(), 3)
        assert ok.ok and msgspec.msgpack.decode(ok.body)["by"] == str(creds["algo"].spiffe_id)
        conn.send(Request(rid=3, action="submit_order", resource="risk/orders", symbol="JPM", notional=10))
        assert (await asyncio.wait_for(conn.recv(), 3)).reason == E.SYMBOL
        conn.send(RenewSession(token=token_for(creds["algo"], pep.audience)))
        assert isinstance(await asyncio.wait_for(conn.recv(), 3), SessionReady)
        assert len(sink.of_kind(Kind.SESSION_RENEW)) == 1
        # every reply that left had its decision in the sink first
        assert len(sink.of_kind(Kind.DECISION)) == 3
    finally:
        conn.close()


async def test_token_for_other_audience_refused_over_mtls(floor, risk):
    _, creds = floor
    pep, server, _, _ = risk
    conn = await connect("127.0.0.1", server.port, tls=TLSConfig(creds["algo"]))
    conn.send(OpenSession(token=token_for(creds["algo"], "spiffe://prod.acme.example/oms/oms")))
    reply = await asyncio.wait_for(conn.recv(), 3)
    assert isinstance(reply, ErrorFrame) and reply.reason == "token.wrong_aud"
    conn.close()


async def _open_refused(server, creds, token) -> str:
    conn = await connect("127.0.0.1", server.port, tls=TLSConfig(creds))
    try:
        conn.send(OpenSession(token=token))
        reply = await asyncio.wait_for(conn.recv(), 3)
        assert isinstance(reply, ErrorFrame), reply
        return reply.reason
    finally:
        conn.close()


async def test_token_bound_to_another_certificate_refused_over_mtls(floor, risk):
    engine, creds = floor
    pep, server, _, _ = risk
    now = time.time()
    other_ca = CertificateAuthority.create("prod.acme.example", now - 60)
    stolen_from = issue_for_test(other_ca, str(creds["algo"].spiffe_id), now - 60)  # same name, another key
    token = token_for(creds["algo"], pep.audience, cert_der=stolen_from.cert_der)
    assert await _open_refused(server, creds["algo"], token) == "token.cnf_mismatch"


async def test_replayed_token_refused_over_mtls(floor, risk):
    _, creds = floor
    pep, server, _, _ = risk
    token = token_for(creds["algo"], pep.audience)
    conn = await connect("127.0.0.1", server.port, tls=TLSConfig(creds["algo"]))
    conn.send(OpenSession(token=token))
    assert isinstance(await asyncio.wait_for(conn.recv(), 3), SessionReady)
    conn.close()
    assert await _open_refused(server, creds["algo"], token) == "token.replayed"


async def test_token_signed_by_another_key_refused_over_mtls(floor, risk):
    _, creds = floor
    pep, server, _, _ = risk
    forger = TokenIssuer(KeyRing.generate(time.time()), ISSUER)
    token = token_for(creds["algo"], pep.audience, issuer=forger)
    assert await _open_refused(server, creds["algo"], token) == "token.unknown_kid"


async def test_revocation_push_closes_session_and_refuses_handshake(floor, risk):
    _, creds = floor
    pep, server, revocations, _ = risk
    conn = await connect("127.0.0.1", server.port, tls=TLSConfig(creds["algo"]))
    conn.send(OpenSession(token=token_for(creds["algo"], pep.audience)))
    assert isinstance(await asyncio.wait_for(conn.recv(), 3), SessionReady)
    revocations.revoke_spiffe_id(str(creds["algo"].spiffe_id), time.time(), "quarantine.test")
    reply = await asyncio.wait_for(conn.recv(), 3)
    assert isinstance(reply, ErrorFrame) and reply.reason.startswith("quarantine")
    assert pep.sessions(str(creds["algo"].spiffe_id)) == []
    with pytest.raises(HandshakeRefused) as refused:  # the next handshake is refused by the TLS layer
        await connect("127.0.0.1", server.port, tls=TLSConfig(creds["algo"]))
    assert refused.value.reason == "cert.revoked"
    # and the PEP refuses the principal itself, should a handshake get through
    with pytest.raises(SessionRefused) as exc:
        pep.open_session(FakePeerOf(creds["algo"]), token_for(creds["algo"], pep.audience))
    assert exc.value.reason in (E.SESSION_PEER_REVOKED, E.SESSION_PEER_QUARANTINED)
    revocations.release_spiffe_id(str(creds["algo"].spiffe_id), time.time())
