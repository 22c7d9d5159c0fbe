"""A hung control plane costs an unrelated connection nothing: tables are awaited on the control channel.

A real service side (``ControlClient`` over mTLS, ``ControlTableSource``, the enforcement point behind
``guarded_handler`` on an mTLS ``FrameServer``) against a control endpoint that accepts, subscribes the
service, and then never answers a table request (a stopped or hung control plane). Another connection's
Ping round trip completes while the session open is still pending, and the open is refused once the
table's own deadline passes.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from trustfabric.control.client import ControlClient, ControlTableSource
from trustfabric.control.protocol import (
    CONTROL_CODEC, RevocationSnapshot, Subscribe, Subscribed, TableReply, TableRequest,
)
from trustfabric.enforcement import errors as E
from trustfabric.enforcement.guard import guarded_handler
from trustfabric.enforcement.pep import EnforcementPoint
from trustfabric.enforcement.tables import StaticTableSource
from trustfabric.identity.ca import CertificateAuthority
from trustfabric.identity.tokens import KeyRing, ReplayCache, TokenIssuer, TokenVerifier
from trustfabric.identity.workload import issue_for_test
from trustfabric.policy.decision import Invalidation
from trustfabric.transport.connection import FrameServer, connect
from trustfabric.transport.frames import ErrorFrame, OpenSession, Ping, Pong, Request, Response, SessionReady
from trustfabric.transport.tls import TLSConfig

TD = "prod.acme.example"
CONTROL = f"spiffe://{TD}/control/control-plane"
VENUE = f"spiffe://{TD}/venue/venue-a"
ALGO = f"spiffe://{TD}/algo/algo-momentum"
ISSUER = "https://idp.prod.acme.example"
DEADLINE_S = 1.5  # the table's own deadline in these tests (the floor's is 0.5 s)


class HungControl:
    """A control endpoint that subscribes the service and answers tables only while ``answering``."""

    def __init__(self) -> None:
        self.answering = True
        self.asked = asyncio.Event()
        self.held: list = []  # (connection, request) not answered while the plane hangs
        self.tables = StaticTableSource.from_mapping({"principals": {ALGO: [
            {"action": "submit_order", "resource": "venue/orders"}]}})

    async def serve(self, conn) -> None:
        def on_frame(frame) -> None:
            if type(frame) is Subscribe:
                conn.send(Subscribed(jwks=b"", revoked=RevocationSnapshot()))
            elif type(frame) is TableRequest:
                self.asked.set()
                if self.answering:
                    self.answer(conn, frame)
                else:
                    self.held.append((conn, frame))

        conn.on_frame = on_frame
        await conn.wait_closed()

    def answer(self, conn, frame) -> None:
        conn.send(TableReply(rid=frame.rid, ok=True, table=self.tables.decision_table(frame.principal, frame.now)))

    def resume(self) -> None:
        """The plane answers again, the held requests first."""
        self.answering = True
        held, self.held = self.held, []
        for conn, frame in held:
            self.answer(conn, frame)


@pytest.fixture(scope="module")
def pki():
    now = time.time()
    ca = CertificateAuthority.create(TD, now - 60)
    return {name: issue_for_test(ca, sid, now - 60) for name, sid in
            (("control", CONTROL), ("venue", VENUE), ("algo", ALGO), ("other", f"spiffe://{TD}/oms/oms"))}


@pytest.fixture
async def service(pki):
    hung = HungControl()
    control = await FrameServer(hung.serve, tls=TLSConfig(pki["control"]), codec=CONTROL_CODEC,
                                name="control").start("127.0.0.1", 0)
    tls = TLSConfig(pki["venue"])
    client = ControlClient("127.0.0.1", control.port, tls, CONTROL, "venue-a")
    await client.start()
    keys = KeyRing.generate(time.time())
    pep = EnforcementPoint(VENUE, ControlTableSource(client, timeout_s=DEADLINE_S),
                           TokenVerifier(keys, ISSUER, replay_cache=ReplayCache()))
    server = await FrameServer(guarded_handler(pep), tls=tls, name="venue-a").start("127.0.0.1", 0)
    issuer = TokenIssuer(keys, ISSUER)

    def token() -> str:
        return issuer.issue(ALGO, VENUE, time.time(), 60, cert_der=pki["algo"].cert_der)

    yield hung, pep, server, token
    await server.close()
    client.close()
    await control.close()
    assert pep.fail_open == 0


async def _ping_while_pending(server, pki, pending: asyncio.Task) -> None:
    """An unrelated connection's Ping round trip completes while ``pending`` has no answer yet."""
    other = await connect("127.0.0.1", server.port, tls=TLSConfig(pki["other"]))
    try:
        other.send(Ping(n=7))
        assert await asyncio.wait_for(other.recv(), DEADLINE_S * 4) == Pong(n=7)
        assert not pending.done()
    finally:
        other.close()


async def test_session_open_against_a_hung_control_plane_leaves_other_connections_served(pki, service):
    hung, pep, server, token = service
    hung.answering = False
    conn = await connect("127.0.0.1", server.port, tls=TLSConfig(pki["algo"]))
    try:
        conn.send(OpenSession(token=token()))
        reply = asyncio.get_running_loop().create_task(conn.recv())
        await asyncio.wait_for(hung.asked.wait(), DEADLINE_S * 4)
        await _ping_while_pending(server, pki, reply)
        refused = await asyncio.wait_for(reply, DEADLINE_S * 4)
        assert isinstance(refused, ErrorFrame) and refused.reason == E.SESSION_ENGINE_UNREACHABLE
        assert pep.engine_failures == 1 and not pep.sessions()
    finally:
        conn.close()


async def test_table_repull_against_a_hung_control_plane_leaves_other_connections_served(pki, service):
    hung, pep, server, token = service
    conn = await connect("127.0.0.1", server.port, tls=TLSConfig(pki["algo"]))
    try:
        conn.send(OpenSession(token=token()))
        assert isinstance(await asyncio.wait_for(conn.recv(), DEADLINE_S * 4), SessionReady)
        conn.send(Request(rid=1, action="submit_order", resource="venue/orders"))
        assert (await asyncio.wait_for(conn.recv(), DEADLINE_S * 4)).ok
        # the control plane hangs, then an epoch change makes the session's next message re-pull its table
        hung.answering = False
        hung.asked.clear()
        pep.on_invalidation(Invalidation(ALGO, hung.tables.bump(ALGO), 1, "signal.changed"))
        (session,) = pep.sessions(ALGO)
        assert pep.needs_redecide(session)
        conn.send(Request(rid=2, action="submit_order", resource="venue/orders"))
        reply = asyncio.get_running_loop().create_task(conn.recv())
        await asyncio.wait_for(hung.asked.wait(), DEADLINE_S * 4)
        await _ping_while_pending(server, pki, reply)
        assert await asyncio.wait_for(reply, DEADLINE_S * 4) == Response(rid=2, ok=False,
                                                                         reason=E.ENGINE_UNREACHABLE)
        # the control plane answers again: the next message re-pulls and passes
        hung.answering = True
        conn.send(Request(rid=3, action="submit_order", resource="venue/orders"))
        assert (await asyncio.wait_for(conn.recv(), DEADLINE_S * 4)).ok
    finally:
        conn.close()


async def test_a_certificate_revoked_while_its_table_is_awaited_gets_no_session(pki, service):
    hung, pep, server, token = service
    hung.answering = False
    conn = await connect("127.0.0.1", server.port, tls=TLSConfig(pki["algo"]))
    try:
        conn.send(OpenSession(token=token()))
        reply = asyncio.get_running_loop().create_task(conn.recv())
        await asyncio.wait_for(hung.asked.wait(), DEADLINE_S * 4)
        pep.revoke_certificate(pki["algo"].fingerprint_sha256)  # pushed while the open waits for its table
        hung.resume()
        refused = await asyncio.wait_for(reply, DEADLINE_S * 4)
        assert isinstance(refused, ErrorFrame) and refused.reason == E.SESSION_PEER_REVOKED
        assert not pep.sessions()
    finally:
        conn.close()


async def test_sync_pull_of_an_awaited_source_is_unreachable_not_blocking(pki, service):
    """The synchronous port of the control source never blocks: it fails closed at once."""
    from trustfabric.enforcement.errors import EngineUnreachable

    _hung, pep, _server, _token = service
    with pytest.raises(EngineUnreachable):
        pep._tables.decision_table(ALGO, time.time())
