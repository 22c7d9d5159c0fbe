"""The operator API over real sockets on 127.0.0.1: a person's action is applied to the live plane and the
reply is ok only once every enforcement point confirmed it; refusals change nothing; the plane starts from
the signal store and writes every change back."""

import asyncio
import json

import pytest

from tests.people import PASSWORD, Pool, enrol
from trustfabric.control import client as control_client
from trustfabric.control.errors import ControlRefused
from trustfabric.control.plane import ControlPlane
from trustfabric.control.protocol import OperatorRequest
from trustfabric.control.server import ControlServer
from trustfabric.control.signal_ops import signals_path
from trustfabric.identity.errors import TokenError
from trustfabric.identity.operators import OperatorCredential
from trustfabric.identity.revocation import RevocationSet
from trustfabric.signals.state import SignalState, save_state
from trustfabric.transport.tls import RotatingCredentials, TLSConfig

DIGEST = "ab" * 32
ALGO = "spiffe://prod.acme.example/algo/algo-momentum"

pytestmark = pytest.mark.timeout(60)


@pytest.fixture()
def plane(tmp_path):
    cp = ControlPlane(tmp_path)  # the system clock: real TLS handshakes check real validity
    cp.promote("venue-a", DIGEST)
    cp.register_points(["venue-a"])
    yield cp
    cp.close()


class Venue:
    """venue-a's control channel, recording what was pushed to it (as a service's callbacks would)."""

    def __init__(self, client: control_client.ControlClient) -> None:
        self.client = client
        self.pushed: list[object] = []
        client.on_invalidation = self.pushed.append
        client.on_revocation = self.pushed.append


async def _venue(plane, server) -> Venue:
    creds, reply = await control_client.join(
        "127.0.0.1", server.bootstrap_port, bundle_pem=plane.credentials.bundle_pem, control_id=plane.control_id,
        join_token=plane.issue_join_token("venue-a"), spiffe_id=plane.spiffe_id("venue-a"), code_digest=DIGEST,
        posture=plane.posture_report("venue-a"))
    tls = TLSConfig(RotatingCredentials(creds), revocation=RevocationSet())
    client = control_client.ControlClient("127.0.0.1", server.control_port, tls, reply.control_id, "venue-a")
    venue = Venue(client)
    subscribed = await client.start()
    client.jwks = control_client.LiveJwks(subscribed.jwks)
    return venue


async def _send(plane, server, person, action: str, target: str = "", code: str | None = None, **args: str):
    credential = OperatorCredential(user=person.name, password=PASSWORD, totp=code or person.code())
    request = OperatorRequest(credential=credential, action=action, target=target, args=args)
    return await control_client.operator_request("127.0.0.1", server.bootstrap_port,
                                                 bundle_pem=plane.credentials.bundle_pem,
                                                 control_id=plane.control_id, request=request, timeout_s=30.0)


async def test_a_change_is_ok_only_once_every_enforcement_point_confirmed_it(plane):
    officers = Pool(plane.identity.users())
    server = await ControlServer(plane).start()
    try:
        venue = await _venue(plane, server)
        reply = await _send(plane, server, officers.person(), "signal.risk", "algo-momentum", score="95")
        assert reply.ok, reply
        assert reply.applied == ["venue-a"] and reply.missing == [] and reply.operator == "user:officer0"
        assert plane.hub.risk.get(ALGO) == 95
        # the invalidation reached venue-a before its acknowledgement of the barrier behind it
        assert any(getattr(p, "principal", None) == ALGO and p.reason == "signal.risk" for p in venue.pushed)
        assert json.loads(signals_path(plane.home).read_text())["risk_scores"] == {ALGO: 95}

        # a registered enforcement point that never answers: applied in the plane, but not reported as taken
        plane.register_points(["venue-b"])
        server.confirm_timeout_s = 0.3
        reply = await _send(plane, server, officers.person(), "signal.kill", "algo-momentum", scope="agent",
                            state="HALTED")
        assert not reply.ok and reply.reason == "control.unconfirmed"
        assert reply.applied == ["venue-a"] and reply.missing == ["venue-b"]

        # revocations and a new token-key set are confirmed the same way
        plane.containment.unregister_point("venue-b")
        reply = await _send(plane, server, officers.person(), "ca.revoke", ALGO, reason="test")
        assert reply.ok and reply.applied == ["venue-a"], reply
        assert any(getattr(p, "value", None) == ALGO for p in venue.pushed)
        before = set(venue.client.jwks.verification_keys())
        reply = await _send(plane, server, officers.person(), "token.rotate_key")
        assert reply.ok, reply
        assert reply.result["kid"] in set(venue.client.jwks.verification_keys()) - before
    finally:
        await server.close()


async def test_refusals_change_nothing(plane):
    users = plane.identity.users()
    officer, trader = enrol(users, "dave", "security_officer"), enrol(users, "tess", "trader")
    server = await ControlServer(plane).start()
    try:
        reply = await _send(plane, server, trader, "quarantine", "algo-momentum")
        assert not reply.ok and reply.reason == "operator.not_permitted" and reply.operator == "user:tess"
        reply = await _send(plane, server, officer, "quarantine", "algo-momentum", code=officer.wrong_code())
        assert not reply.ok and reply.reason == "user.bad_totp"
        assert not plane.is_quarantined(ALGO)
        reply = await _send(plane, server, officer, "ca.rotate", "prod.acme.example")
        assert not reply.ok and reply.reason == "operator.unknown_action"  # not applied on a running floor
        reply = await _send(plane, server, officer, "signal.risk", "algo-momentum", score="150")
        assert not reply.ok and reply.reason == "signal.risk.out_of_range"
        assert plane.hub.risk.get(ALGO) == 0
        assert json.loads(signals_path(plane.home).read_text())["risk_scores"] == {}
    finally:
        await server.close()


async def test_an_unreachable_operator_endpoint_is_a_refusal(plane):
    server = await ControlServer(plane).start()
    port = server.bootstrap_port
    await server.close()
    request = OperatorRequest(credential=OperatorCredential(user="dave", password=PASSWORD, totp="123456"),
                              action="signal.risk", target="algo-momentum", args={"score": "95"})
    with pytest.raises(ControlRefused) as err:
        await control_client.operator_request("127.0.0.1", port, bundle_pem=plane.credentials.bundle_pem,
                                              control_id=plane.control_id, request=request, timeout_s=2.0)
    assert err.value.reason == "control.unreachable"


def test_the_plane_starts_from_the_signal_store_and_writes_changes_back(tmp_path):
    fresh = ControlPlane(tmp_path / "fresh")
    try:
        assert fresh.hub.market_open  # no store yet: the market is open around the clock (the demo's default)
    finally:
        fresh.close()
    home = tmp_path / "home"
    save_state(signals_path(home), SignalState(risk_scores={ALGO: 80}, calendar={"weekdays": []},
                                               kill_switches=[("agent", "algo-momentum", "HALTED")]))
    plane = ControlPlane(home)
    try:
        assert not plane.hub.market_open
        assert plane.hub.risk.get(ALGO) == 80
        assert plane.hub.kill.effective("algo-momentum", "acct-momentum") == "HALTED"
        users = plane.identity.users()
        officer = enrol(users, "dave", "security_officer")
        from trustfabric.identity.operators import OperatorCredential as Cred

        plane.operate(Cred(user="dave", password=PASSWORD, totp=officer.code()), "signal.market", "always-open", {})
        assert plane.hub.market_open
        assert json.loads(signals_path(home).read_text())["calendar"] == {"always_open": True}
    finally:
        plane.close()


def test_a_pushed_key_set_that_does_not_parse_leaves_the_last_good_one(plane):
    jwks = control_client.LiveJwks(plane.jwks())
    kids = set(jwks.verification_keys())
    for bad in (b"{not json", b'{"keys": "no"}', b'{"keys": [{"kty": "RSA"}]}'):
        with pytest.raises(TokenError) as err:
            jwks.replace(bad)
        assert err.value.reason == "token.bad_jwks"
        assert set(jwks.verification_keys()) == kids


async def test_an_acknowledgement_for_another_service_is_refused(plane):
    from trustfabric.control.protocol import PushAck

    server = await ControlServer(plane).start()
    try:
        venue = await _venue(plane, server)
        venue.client.conn.send(PushAck(service="venue-b", id=1))
        for _ in range(100):
            if venue.client.conn.closed:
                break
            await asyncio.sleep(0.02)
        assert venue.client.conn.closed
    finally:
        await server.close()


def test_automation_does_not_lower_a_risk_score_a_person_set(plane):
    officer = enrol(plane.identity.users(), "dave", "security_officer")
    plane.operate(OperatorCredential(user="dave", password=PASSWORD, totp=officer.code()), "signal.risk",
                  "algo-momentum", {"score": "95"})
    plane.risk_sink.set_risk(ALGO, 20.0, "response.baseline")  # the baseline republishes its own score
    assert plane.hub.risk.get(ALGO) == 95
    plane.risk_sink.set_risk(ALGO, 99.0, "response.containment")  # higher: automation may raise it
    assert plane.hub.risk.get(ALGO) == 99
    plane.operate(OperatorCredential(user="dave", password=PASSWORD, totp=officer.code()), "signal.risk",
                  "algo-momentum", {"score": "0"})
    plane.risk_sink.set_risk(ALGO, 20.0, "response.baseline")
    assert plane.hub.risk.get(ALGO) == 20


async def test_promotion_and_an_unattested_issue_on_the_live_plane(plane):
    from cryptography.hazmat.primitives import serialization

    from trustfabric.identity.workload import new_key_and_csr

    officers = Pool(plane.identity.users())
    trader = enrol(plane.identity.users(), "tess", "trader")
    server = await ControlServer(plane).start()
    try:
        digest = "cd" * 32
        reply = await _send(plane, server, trader, "ca.promote", digest, domain="prod.acme.example")
        assert not reply.ok and reply.reason == "operator.not_permitted"
        assert not plane.identity.releases.is_promoted("prod.acme.example", digest)
        reply = await _send(plane, server, officers.person(), "ca.promote", digest, domain="prod.acme.example")
        assert reply.ok and reply.result["digest"] == digest, reply
        assert plane.identity.releases.is_promoted("prod.acme.example", digest)

        sid = "spiffe://prod.acme.example/algo/algo-meanrev"
        _key, csr = new_key_and_csr(sid)
        reply = await _send(plane, server, officers.person(), "ca.issue_unattested", sid,
                            csr_pem=csr.public_bytes(serialization.Encoding.PEM).decode(), ttl="600")
        assert reply.ok, reply
        assert reply.result["cert_pem"].startswith("-----BEGIN CERTIFICATE-----")
        reply = await _send(plane, server, officers.person(), "ca.issue_unattested", sid, csr_pem="garbage")
        assert not reply.ok and reply.reason == "control.bad_request"
    finally:
        await server.close()
