"""Framed connections on real loopback sockets: bad input answered then closed, bounded time, batching."""

from __future__ import annotations

import asyncio
import socket

import msgspec
import pytest

from tests.waiting import eventually
from trustfabric.audit.events import Kind
from trustfabric.transport.client import Requester, loopback_rtt
from trustfabric.transport.connection import FrameServer, Limits, connect
from trustfabric.transport.errors import ConnectionClosed, TransportTimeout
from trustfabric.transport.frames import DEFAULT_CODEC, ErrorFrame, FrameCodec, Ping, Pong, Request, Response

from .conftest import FAST_LIMITS


class Recorder:
    """A server handler that answers Ping with Pong and remembers how each connection ended."""

    def __init__(self) -> None:
        self.closed: list[str] = []
        self.seen: list = []

    async def __call__(self, conn) -> None:
        def on_frame(frame):
            self.seen.append(frame)
            if isinstance(frame, Ping):
                conn.send(Pong(n=frame.n))

        conn.on_frame = on_frame
        self.closed.append(await conn.wait_closed())


async def _read_all(conn) -> list:
    frames = []
    while True:
        try:
            frames.append(await asyncio.wait_for(conn.recv(), 3))
        except ConnectionClosed:
            return frames


@pytest.fixture(params=["tls", "plain"])
async def served(request, server_tls, client_tls, emitter):
    recorder = Recorder()
    tls_pair = (server_tls, client_tls) if request.param == "tls" else (None, None)
    server = await FrameServer(recorder, tls=tls_pair[0], emitter=emitter, limits=FAST_LIMITS,
                               codec=FrameCodec(max_frame=4096)).start()
    yield server, recorder, tls_pair[1]
    await server.close()


@pytest.mark.parametrize(
    "payload, reason",
    [
        ((5000).to_bytes(4, "big") + b"x" * 10, "frame.oversized"),
        (b"\x00\x00\x00\x05\xc1\xc1\xc1\xc1\xc1", "frame.malformed"),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", "frame.oversized"),  # garbage read as a huge length
        (b"\x00\x00\x00\x03garbage", "frame.malformed"),
        (len(msgspec.msgpack.encode(["rm_rf", 1])).to_bytes(4, "big") + msgspec.msgpack.encode(["rm_rf", 1]),
         "frame.unknown_type"),
    ],
)
async def test_bad_frames_get_an_error_reply_then_close_and_the_server_lives_on(served, payload, reason):
    server, recorder, client_tls = served
    conn = await connect("127.0.0.1", server.port, tls=client_tls, limits=FAST_LIMITS)
    conn.send(Ping(n=1))
    conn.write_raw(payload)
    frames = await _read_all(conn)
    assert frames[0] == Pong(n=1)  # the good frame before the bad one was served
    assert frames[-1] == ErrorFrame(reason=reason, detail=frames[-1].detail)
    await eventually(lambda: recorder.closed)
    assert recorder.closed == [reason]
    # The server still serves others.
    other = await connect("127.0.0.1", server.port, tls=client_tls, limits=FAST_LIMITS)
    other.send(Ping(n=2))
    assert await asyncio.wait_for(other.recv(), 3) == Pong(n=2)
    other.close()


async def test_truncated_frame_at_end_of_stream(served):
    server, recorder, client_tls = served
    conn = await connect("127.0.0.1", server.port, tls=client_tls, limits=FAST_LIMITS)
    conn.write_raw(DEFAULT_CODEC.encode(Ping(n=1))[:-1])
    await asyncio.sleep(0.05)
    conn.close()
    await eventually(lambda: recorder.closed)
    assert recorder.closed == ["frame.truncated"]


async def test_slow_loris_is_cut_off_within_the_frame_bound(served):
    server, recorder, client_tls = served
    conn = await connect("127.0.0.1", server.port, tls=client_tls, limits=FAST_LIMITS)
    data = DEFAULT_CODEC.encode(Request(rid=1, action="a" * 50, resource="r"))
    loop = asyncio.get_running_loop()
    started = loop.time()
    for byte in data[:-1]:  # one byte every 50 ms: the frame would take ~3 s; the bound is 0.4 s
        if conn.closed:
            break
        conn.write_raw(bytes([byte]))
        await asyncio.sleep(0.05)
    await eventually(lambda: recorder.closed)
    cut_after = loop.time() - started
    assert recorder.closed == ["frame.timeout"]
    assert recorder.seen == []
    assert cut_after < FAST_LIMITS.frame_timeout_s + 1.0  # bounded: a generous margin for a busy machine
    frames = await _read_all(conn)
    assert frames and frames[-1].reason == "frame.timeout"


async def test_idle_connection_is_closed(server_tls, client_tls):
    recorder = Recorder()
    limits = Limits(handshake_timeout_s=3, frame_timeout_s=1, idle_timeout_s=0.3, tick_s=0.05)
    async with FrameServer(recorder, tls=server_tls, limits=limits) as server:
        conn = await connect("127.0.0.1", server.port, tls=client_tls)
        await eventually(lambda: recorder.closed)
        assert recorder.closed == ["transport.idle"]
        conn.close()


async def test_silent_peer_is_refused_after_the_handshake_timeout(server_tls, emitter, sink):
    limits = Limits(handshake_timeout_s=0.3)
    async with FrameServer(Recorder(), tls=server_tls, limits=limits, emitter=emitter) as server:
        raw = socket.create_connection(("127.0.0.1", server.port))  # TCP only, never says hello
        try:
            await eventually(lambda: sink.of_kind(Kind.HANDSHAKE_REFUSED))
            [event] = sink.of_kind(Kind.HANDSHAKE_REFUSED)
            assert event.reason == "transport.handshake_timeout"
            assert server.accepted == 0
        finally:
            raw.close()


async def test_client_handshake_is_bounded_too(client_tls):
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()  # accepts TCP, never answers TLS
    try:
        with pytest.raises(TransportTimeout) as info:
            await connect("127.0.0.1", listener.getsockname()[1], tls=client_tls,
                          limits=Limits(handshake_timeout_s=0.3))
        assert info.value.reason == "transport.handshake_timeout"
    finally:
        listener.close()


async def test_a_handler_that_raises_closes_only_its_connection(server_tls, client_tls):
    calls = []

    async def handler(conn):
        calls.append(1)
        frame = await conn.recv()
        if frame.n == 13:
            raise RuntimeError("boom")
        conn.send(Pong(n=frame.n))
        await conn.wait_closed()

    async with FrameServer(handler, tls=server_tls, limits=FAST_LIMITS) as server:
        bad = await connect("127.0.0.1", server.port, tls=client_tls)
        bad.send(Ping(n=13))
        frames = await _read_all(bad)
        assert frames[-1].reason == "transport.handler_error"
        good = await connect("127.0.0.1", server.port, tls=client_tls)
        good.send(Ping(n=1))
        assert await asyncio.wait_for(good.recv(), 3) == Pong(n=1)
        good.close()
        assert server.handler_errors == 1


async def test_batch_is_flushed_once_after_the_pre_flush_hook(server_tls, client_tls):
    order: list[str] = []

    async def handler(conn):
        conn.on_before_flush = lambda: order.append("audit-flushed")
        frame = await conn.recv()
        for i in range(3):
            conn.queue(Response(rid=frame.rid + i, ok=True))
        order.append("queued")
        conn.flush()
        order.append("sent")
        await conn.wait_closed()

    async with FrameServer(handler, tls=server_tls, limits=FAST_LIMITS) as server:
        conn = await connect("127.0.0.1", server.port, tls=client_tls)
        conn.send(Request(rid=10, action="a", resource="r"))
        replies = [await asyncio.wait_for(conn.recv(), 3) for _ in range(3)]
        assert [r.rid for r in replies] == [10, 11, 12]
        assert order == ["queued", "audit-flushed", "sent"]  # one hook call for the whole batch
        conn.close()


async def test_a_failing_pre_flush_hook_lets_nothing_leave(server_tls, client_tls):
    async def handler(conn):
        def spool_down():
            raise OSError("audit spool unavailable")

        conn.on_before_flush = spool_down
        frame = await conn.recv()
        conn.send(Response(rid=frame.rid, ok=True, reason="EFFECT"))
        await conn.wait_closed()

    async with FrameServer(handler, tls=server_tls, limits=FAST_LIMITS) as server:
        conn = await connect("127.0.0.1", server.port, tls=client_tls)
        conn.send(Request(rid=1, action="a", resource="r"))
        frames = await _read_all(conn)
        assert not any(isinstance(f, Response) for f in frames)
        assert frames[-1].reason == "transport.flush_refused"


async def test_backpressure_drain_waits_for_a_reader_that_is_slow(server_tls, client_tls):
    limits = Limits(high_water=64 * 1024, low_water=16 * 1024, idle_timeout_s=10, tick_s=0.05)
    received = []

    async def handler(conn):
        for _ in range(200):
            conn.send(Response(rid=1, ok=True, body=msgspec.Raw(msgspec.msgpack.encode(b"x" * 30000))))
            await conn.drain()
            assert conn.unsent <= limits.high_water
        await conn.wait_closed()

    async with FrameServer(handler, tls=server_tls, limits=limits) as server:
        conn = await connect("127.0.0.1", server.port, tls=client_tls, limits=limits)
        await asyncio.sleep(0.2)  # let the server fill the socket buffers while we do not read
        for _ in range(200):
            received.append(await asyncio.wait_for(conn.recv(), 5))
        assert len(received) == 200
        conn.close()


async def test_requester_matches_replies_by_rid_and_fails_pending_on_close(server_tls, client_tls):
    async def handler(conn):
        first = await conn.recv()
        second = await conn.recv()
        conn.send(Response(rid=second.rid, ok=True))  # out of order
        conn.send(Response(rid=first.rid, ok=True))
        await conn.recv()  # the third is never answered: the connection closes under it

    async with FrameServer(handler, tls=server_tls, limits=FAST_LIMITS) as server:
        requester = Requester(await connect("127.0.0.1", server.port, tls=client_tls))
        a = asyncio.ensure_future(requester.request(Request(rid=1, action="a", resource="r")))
        b = asyncio.ensure_future(requester.request(Request(rid=2, action="a", resource="r")))
        assert (await a).rid == 1 and (await b).rid == 2
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(requester.request(Request(rid=3, action="a", resource="r")), 3)


async def test_loopback_rtt_probe_reports_percentiles(server_tls, client_tls):
    plain = await loopback_rtt(server_tls=None, client_tls=None, n=200, warmup=20)
    tls = await loopback_rtt(server_tls=server_tls, client_tls=client_tls, n=200, warmup=20)
    for stats in (plain, tls):
        assert stats.n == 200 and 0 < stats.min_us <= stats.p50_us <= stats.p99_us <= stats.max_us


def test_the_same_paths_run_on_uvloop(server_tls, client_tls):
    """Production runs on uvloop: a round trip and a bad-frame refusal on a uvloop event loop."""
    import uvloop

    async def scenario():
        recorder = Recorder()
        async with FrameServer(recorder, tls=server_tls, limits=FAST_LIMITS) as server:
            conn = await connect("127.0.0.1", server.port, tls=client_tls)
            conn.send(Ping(n=3))
            assert await asyncio.wait_for(conn.recv(), 3) == Pong(n=3)
            conn.write_raw(b"\xff\xff\xff\xff")
            frames = await _read_all(conn)
            assert frames[-1].reason == "frame.oversized"
            stats = await loopback_rtt(server_tls=server_tls, client_tls=client_tls, n=100, warmup=10)
            assert stats.n == 100
            return asyncio.get_running_loop()

    loop = uvloop.run(scenario())
    assert isinstance(loop, uvloop.Loop)


async def test_server_closes_a_connection_once_the_peer_certificate_expires(server_creds, client_tls, revocation):
    from trustfabric.clock import FakeClock
    from trustfabric.transport.tls import TLSConfig

    clock = FakeClock(client_tls.credentials.current().not_after - 30)
    recorder = Recorder()
    async with FrameServer(recorder, tls=TLSConfig(server_creds, revocation=revocation, clock=clock),
                           limits=FAST_LIMITS) as server:
        conn = await connect("127.0.0.1", server.port, tls=client_tls)
        conn.send(Ping(n=1))
        assert await asyncio.wait_for(conn.recv(), 3) == Pong(n=1)
        clock.advance(31)  # the fabric's clock passes the client's not_after
        await eventually(lambda: recorder.closed)
        assert recorder.closed == ["cert.expired"]
        frames = await _read_all(conn)
        assert frames[-1].reason == "cert.expired"


async def _delivered_in_one_turn(server_tls, client_tls, bodies: list) -> tuple[list[int], list[int]]:
    """Send one request per body (one TLS record each) before the server's loop turn.

    Returns the rids the server saw, and how many it had seen when the loop next turned.
    """
    loop = asyncio.get_running_loop()
    seen: list[int] = []
    at_next_turn: list[int] = []

    async def handler(conn):
        def on_frame(frame):
            seen.append(frame.rid)
            if len(seen) == 1:
                loop.call_soon(lambda: at_next_turn.append(len(seen)))

        conn.on_frame = on_frame
        await conn.wait_closed()

    server = await FrameServer(handler, tls=server_tls, limits=FAST_LIMITS).start()
    try:
        client = await connect("127.0.0.1", server.port, tls=client_tls, limits=FAST_LIMITS)
        for rid, body in enumerate(bodies, start=1):
            client.send(Request(rid=rid, action="a", resource="r", body=body))
        await eventually(lambda: len(seen) == len(bodies))
        client.close()
    finally:
        await server.close()
    return seen, at_next_turn


async def test_queued_tls_records_are_decoded_in_one_loop_turn(server_tls, client_tls):
    """Several large records waiting in the kernel are taken together (as one plain recv would)."""
    big = msgspec.Raw(msgspec.msgpack.encode("x" * 3000))  # each flush: one record above COALESCE_RECORD
    seen, at_next_turn = await _delivered_in_one_turn(server_tls, client_tls, [big] * 4)
    assert seen == [1, 2, 3, 4]
    assert at_next_turn == [4]  # all four records were delivered before the loop moved on


async def test_data_then_close_in_one_read_delivers_the_data_first(server_tls, client_tls):
    got: list = []
    reasons: list[str] = []

    async def handler(conn):
        conn.on_frame = got.append
        reasons.append(await conn.wait_closed())

    server = await FrameServer(handler, tls=server_tls, limits=FAST_LIMITS).start()
    try:
        client = await connect("127.0.0.1", server.port, tls=client_tls, limits=FAST_LIMITS)
        body = msgspec.Raw(msgspec.msgpack.encode("y" * 3000))
        client.send(Request(rid=7, action="a", resource="r", body=body))
        client.send(Request(rid=8, action="a", resource="r", body=body))
        client.close()
        await eventually(lambda: reasons)
        assert [f.rid for f in got] == [7, 8]
        assert reasons == ["transport.closed"]
    finally:
        await server.close()


async def test_a_small_record_after_a_large_one_does_not_end_the_turn(server_tls, client_tls):
    """A large batch ends in a small record; the peer's next batch behind it is taken in the same turn."""
    big = msgspec.Raw(msgspec.msgpack.encode("x" * 3000))
    small = msgspec.Raw(msgspec.msgpack.encode("y"))
    seen, at_next_turn = await _delivered_in_one_turn(server_tls, client_tls, [big, small, big])
    assert seen == [1, 2, 3] and at_next_turn == [3]


def _framed(body: bytes) -> bytes:
    return len(body).to_bytes(4, "big") + body


async def test_a_deeply_nested_frame_is_refused_after_the_frames_before_it_in_the_same_read(served, caplog):
    server, recorder, client_tls = served
    deep = _framed(msgspec.msgpack.encode(Request(rid=1, action="a", resource="r",
                                                  body=msgspec.Raw(b"\x91" * 1000 + b"\xc0"))))
    conn = await connect("127.0.0.1", server.port, tls=client_tls, limits=FAST_LIMITS)
    conn.write_raw(DEFAULT_CODEC.encode(Ping(n=1)) + DEFAULT_CODEC.encode(Ping(n=2)) + deep)
    frames = await _read_all(conn)
    assert frames[:2] == [Pong(n=1), Pong(n=2)]  # the good frames of the same read were served
    assert frames[-1] == ErrorFrame(reason="frame.too_deep", detail=frames[-1].detail)
    await eventually(lambda: recorder.closed)
    assert recorder.closed == ["frame.too_deep"]
    assert "Traceback" not in caplog.text and "RecursionError" not in caplog.text
