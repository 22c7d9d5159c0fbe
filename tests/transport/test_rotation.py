"""Certificates that live 4 s rotate under continuous traffic: no message lost, no expired certificate used.

Real time (the TLS library checks validity against the wall clock), bounded to
about 9 s of traffic. Credentials are re-issued by the domain's CA every second;
the client re-establishes its connection before the earlier of its own and the
server's certificate expiry, between request/response pairs, and the server
closes any connection whose peer certificate has expired - so a client that did
not rotate in time would lose messages and the test would see it.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from trustfabric.audit.events import Kind
from trustfabric.identity.workload import issue_for_test
from trustfabric.transport.client import RotatingClient
from trustfabric.transport.connection import FrameServer, Limits
from trustfabric.transport.frames import Response
from trustfabric.transport.tls import RotatingCredentials, TLSConfig

from .conftest import CLIENT_ID, SERVER_ID

pytestmark = pytest.mark.slow  # nine seconds of wall-clock traffic across real certificate expiries

TTL_S = 4
TRAFFIC_S = 9.0
WORKERS = 4


async def test_rotation_under_live_traffic_loses_nothing_and_never_uses_an_expired_cert(ca, revocation, emitter, sink):
    server_creds = RotatingCredentials(issue_for_test(ca, SERVER_ID, time.time(), ttl_s=TTL_S))
    client_creds = RotatingCredentials(issue_for_test(ca, CLIENT_ID, time.time(), ttl_s=TTL_S))
    accepted: list[tuple[float, float, float]] = []  # (accept time, peer not_before, peer not_after)
    closes: list[str] = []

    async def handler(conn):
        accepted.append((time.time(), conn.peer.not_before, conn.peer.not_after))

        def on_frame(frame):
            conn.send(Response(rid=frame.rid, ok=True, reason=frame.action))

        conn.on_frame = on_frame
        closes.append(await conn.wait_closed())

    limits = Limits(handshake_timeout_s=3, frame_timeout_s=2, idle_timeout_s=5, tick_s=0.05)
    server = await FrameServer(handler, tls=TLSConfig(server_creds, revocation=revocation), limits=limits,
                               emitter=emitter).start()
    client = RotatingClient("127.0.0.1", server.port, TLSConfig(client_creds), renew_before_s=1.5,
                            limits=limits, expected_peer=SERVER_ID)
    stop = asyncio.Event()

    async def rotate_credentials():
        while not stop.is_set():
            await asyncio.sleep(1.0)
            now = time.time()
            server_creds.replace(issue_for_test(ca, SERVER_ID, now, ttl_s=TTL_S))
            client_creds.replace(issue_for_test(ca, CLIENT_ID, now, ttl_s=TTL_S))

    sent = 0
    answered = 0
    mismatched = 0

    async def traffic(worker: int):
        nonlocal sent, answered, mismatched
        i = 0
        while not stop.is_set():
            i += 1
            action = f"w{worker}.m{i}"
            sent += 1
            reply = await client.request(action, "md/quotes")
            if isinstance(reply, Response) and reply.ok and reply.reason == action:
                answered += 1
            else:
                mismatched += 1

    rotator = asyncio.ensure_future(rotate_credentials())
    workers = [asyncio.ensure_future(traffic(w)) for w in range(WORKERS)]
    try:
        async with asyncio.timeout(TRAFFIC_S + 6):
            await asyncio.sleep(TRAFFIC_S)
            stop.set()
            await asyncio.gather(*workers)  # every request in flight is answered
            await rotator
            await client.aclose()
    finally:
        stop.set()
        for task in workers + [rotator]:
            task.cancel()
        await server.close()

    assert sent > 500
    assert answered == sent and mismatched == 0  # nothing lost, nothing mixed up
    assert server_creds.rotations >= 7
    assert client.connections_opened >= 4  # several rotations of the live connection
    assert len(accepted) == client.connections_opened
    for accepted_at, not_before, not_after in accepted:
        assert not_before <= accepted_at < not_after  # never a handshake with an expired certificate
    assert "cert.expired" not in closes  # no connection outlived its certificate
    assert sink.of_kind(Kind.HANDSHAKE_REFUSED) == []
