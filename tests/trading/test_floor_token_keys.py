"""Token-key revocation on the running floor: the key leaves the JWKS at once, the revocation is pushed, and the
enforcement point of a real service process closes the sessions its tokens admitted and refuses its tokens."""

import asyncio

import msgspec
import pytest

from trustfabric.audit.compact import expand_event
from trustfabric.audit.events import Kind
from trustfabric.audit.spool import Ack, read_spool_records
from trustfabric.identity.errors import TokenError
from trustfabric.identity.revocation import RevocationSet
from trustfabric.identity.workload import WorkloadCredentials
from trustfabric.trading.launcher import Floor
from trustfabric.transport.connection import connect
from trustfabric.transport.frames import ErrorFrame, OpenSession, SessionReady
from trustfabric.transport.tls import RotatingCredentials, TLSConfig

pytestmark = pytest.mark.timeout(120)

ALGO = "algo-momentum"
MD = "market-data"


async def _open(floor: Floor, creds: WorkloadCredentials, token: str):
    """A real mTLS connection to market-data as the algo, with ``token``: (connection, first reply)."""
    conn = await connect("127.0.0.1", floor.ports[MD], tls=TLSConfig(RotatingCredentials(creds),
                                                                     revocation=RevocationSet()),
                         expected_peer=floor.topology.spiffe_id(MD))
    conn.send(OpenSession(token=token))
    return conn, await asyncio.wait_for(conn.recv(), 5)


@pytest.mark.slow
async def test_a_revoked_token_key_closes_the_sessions_it_admitted_at_a_running_service(tmp_path):
    floor = Floor(tmp_path, "zero-trust", services=(MD, ALGO), collect_audit=False)
    await floor.start()
    try:
        plane = floor.plane
        assert await floor.wait_for(lambda: floor.stats().get(MD, {}).get("sessions", 0) >= 1, 30.0, 0.1)
        creds = WorkloadCredentials.load(tmp_path / "floor" / "creds" / ALGO)
        algo_id = floor.topology.spiffe_id(ALGO)
        old = plane.identity.keys.active.kid
        admitting, _ = plane.token_for(algo_id, creds.cert_der, MD)
        spare, _ = plane.token_for(algo_id, creds.cert_der, MD)  # signed by the same key, presented later
        conn, ready = await _open(floor, creds, admitting)
        assert isinstance(ready, SessionReady)

        with pytest.raises(TokenError) as err:  # the signing key itself: rotate first
            plane.revoke_token_key(old, "user:dave")
        assert err.value.reason == "token.key_active"
        plane.identity.rotate_token_key("user:dave")
        entry = plane.revoke_token_key(old, "user:dave")
        assert (entry.kind, entry.value) == ("token_key", old)
        assert old not in {k["kid"] for k in msgspec.json.decode(plane.jwks())["keys"]}

        # the session it admitted is closed by market-data's enforcement point, promptly, with the reason
        dropped = await asyncio.wait_for(conn.recv(), 5)
        assert isinstance(dropped, ErrorFrame) and dropped.reason == "token.key_revoked", dropped
        await asyncio.wait_for(conn.wait_closed(), 5)
        # and its tokens are refused there from now on
        again, reply = await _open(floor, creds, spare)
        assert isinstance(reply, ErrorFrame) and reply.reason == "token.unknown_kid"
        again.close()
    finally:
        await floor.stop()
    events = [expand_event(p) for _, _, p in read_spool_records(tmp_path / "spool" / MD, Ack())]
    revoked = [e for e in events if e.kind == Kind.SESSION_CLOSE and e.reason == "token.key_revoked"]
    opened_with_old = [e for e in events if e.kind == Kind.SESSION_OPEN and e.detail.get("kid") == old]
    assert len(revoked) >= 2 and {e.principal for e in revoked} == {algo_id}  # the algo's own session and ours
    assert len(opened_with_old) >= 2
    # no session was admitted with the revoked key after its revocation
    last_close = max(e.time_ns for e in revoked)
    assert not [e for e in opened_with_old if e.time_ns > last_close]
