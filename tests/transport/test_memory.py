"""The in-memory transport behaves like the socket one: identities, frames, refusals, hook."""

from __future__ import annotations

import asyncio
import time

import pytest

from trustfabric.identity.spiffe import SpiffeId
from trustfabric.transport.client import Requester
from trustfabric.transport.errors import ConnectionClosed
from trustfabric.transport.frames import ErrorFrame, FrameCodec, Ping, Pong, Request, Response
from trustfabric.transport.memory import memory_pair, serve_memory
from trustfabric.transport.tls import PeerIdentity

from .conftest import CLIENT_ID, SERVER_ID


def _peer(spiffe: str) -> PeerIdentity:
    return PeerIdentity(spiffe_id=SpiffeId.parse(spiffe), cert_der=b"der", fingerprint_sha256="ab" * 32,
                        serial=1, not_after=time.time() + 600)


async def test_each_end_sees_the_other_identity_and_frames_cross():
    client, server = memory_pair(client_peer=_peer(CLIENT_ID), server_peer=_peer(SERVER_ID))
    assert str(client.peer.spiffe_id) == SERVER_ID and str(server.peer.spiffe_id) == CLIENT_ID
    client.send(Ping(n=4))
    assert await asyncio.wait_for(server.recv(), 1) == Ping(n=4)
    server.send(Pong(n=4))
    assert await asyncio.wait_for(client.recv(), 1) == Pong(n=4)


async def test_a_served_handler_works_with_the_requester():
    async def handler(conn):
        while True:
            frame = await conn.recv()
            conn.send(Response(rid=frame.rid, ok=frame.action == "md.read", reason=frame.action))

    client, task = serve_memory(handler, client_peer=_peer(CLIENT_ID), server_peer=_peer(SERVER_ID))
    requester = Requester(client)
    reply = await asyncio.wait_for(requester.request(Request(rid=1, action="md.read", resource="md/q")), 1)
    assert reply == Response(rid=1, ok=True, reason="md.read")
    client.close()
    await asyncio.wait_for(task, 1)


@pytest.mark.parametrize("data, reason", [
    (b"\x00\x01\x00\x00", "frame.oversized"),
    (b"\x00\x00\x00\x02\xc1\xc1", "frame.malformed"),
])
async def test_bad_bytes_are_answered_with_the_reason_then_closed(data, reason):
    client, server = memory_pair(client_peer=None, server_peer=None, codec=FrameCodec(max_frame=1024))
    client.write_raw(data)
    await asyncio.sleep(0.01)
    assert server.closed and server.close_reason == reason
    frame = await asyncio.wait_for(client.recv(), 1)
    assert isinstance(frame, ErrorFrame) and frame.reason == reason
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(client.recv(), 1)


async def test_truncated_stream_when_the_peer_closes_mid_frame():
    client, server = memory_pair(client_peer=None, server_peer=None)
    client.write_raw(b"\x00\x00\x00\x09abc")
    client.close()
    await asyncio.sleep(0.01)
    assert server.close_reason == "frame.truncated"


async def test_failing_pre_flush_hook_sends_nothing():
    client, server = memory_pair(client_peer=None, server_peer=None)

    def hook():
        raise OSError("spool down")

    server.on_before_flush = hook
    server.send(Response(rid=1, ok=True, reason="EFFECT"))
    frame = await asyncio.wait_for(client.recv(), 1)
    assert isinstance(frame, ErrorFrame) and frame.reason == "transport.flush_refused"
