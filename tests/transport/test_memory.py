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


async def test_a_pipelining_requester_delivers_to_callbacks_times_replies_and_fails_the_rest_on_close():
    """Callbacks (a link's pipelined requests), the round-trip hook, frames that answer nothing, and the close."""
    server_got: list[Request] = []

    async def handler(conn):
        while True:
            frame = await conn.recv()
            server_got.append(frame)
            if frame.rid == 1:
                conn.send(Ping(n=7))  # answers no request: goes to on_other
                conn.send(Response(rid=1, ok=True))
            elif frame.rid == 2:
                conn.send(Response(rid=2, ok=False, reason="policy.deny"))
            else:
                conn.close("transport.reset")  # the third is never answered
                return

    client, task = serve_memory(handler, client_peer=_peer(CLIENT_ID), server_peer=_peer(SERVER_ID))
    others, timed, closed, replies = [], [], [], {}
    requester = Requester(client, on_other=others.append, on_reply=lambda f, ns: timed.append((f.rid, ns)),
                          closed_reply=lambda reason: Response(rid=0, ok=False, reason=reason),
                          on_closed=closed.append)
    for _ in range(3):
        rid = requester.next_rid()
        requester.queue(Request(rid=rid, action="md.read", resource="md/q"), lambda f, rid=rid: replies.__setitem__(rid, f))
    assert server_got == [] and requester.outstanding == 3  # queued, not yet flushed
    client.flush()
    await asyncio.wait_for(task, 1)
    for _ in range(50):
        if closed:
            break
        await asyncio.sleep(0.01)
    assert replies[1].ok and replies[2].reason == "policy.deny"
    assert replies[3] == Response(rid=0, ok=False, reason=client.close_reason)  # failed by the close, not lost
    assert others == [Ping(n=7)] and [rid for rid, _ in timed] == [1, 2] and all(ns > 0 for _, ns in timed)
    assert closed == [client.close_reason] and requester.outstanding == 0
