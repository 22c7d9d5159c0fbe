"""Admission control: the caps refuse, the counts come back, refusals are reported in bursts; on real listeners."""

from __future__ import annotations

import asyncio
import socket

import pytest

from trustfabric.audit.events import Kind
from trustfabric.transport import admission as A
from trustfabric.transport.admission import Admission, AdmissionLimits
from trustfabric.transport.connection import FrameServer, connect
from trustfabric.transport.errors import AdmissionRefused
from trustfabric.transport.frames import Ping
from trustfabric.transport.listener import StreamListener


def test_each_cap_refuses_with_its_own_reason():
    adm = Admission(AdmissionLimits(max_handshaking=3, max_handshaking_per_source=2, max_connections=5,
                                    max_connections_per_source=3))
    a1, a2 = adm.admit("10.0.0.1"), adm.admit("10.0.0.1")
    with pytest.raises(AdmissionRefused) as exc:
        adm.admit("10.0.0.1")
    assert exc.value.reason == A.SOURCE_HANDSHAKES_FULL
    b1 = adm.admit("10.0.0.2")
    with pytest.raises(AdmissionRefused) as exc:
        adm.admit("10.0.0.3")
    assert exc.value.reason == A.HANDSHAKES_FULL
    a1.established()
    a2.established()
    a3 = adm.admit("10.0.0.1")
    a3.established()
    with pytest.raises(AdmissionRefused) as exc:  # 3 connections of 10.0.0.1 now, handshakes or not
        adm.admit("10.0.0.1")
    assert exc.value.reason == A.SOURCE_CONNECTIONS_FULL
    b1.established()
    adm.admit("10.0.0.4")
    with pytest.raises(AdmissionRefused) as exc:
        adm.admit("10.0.0.5")
    assert exc.value.reason == A.CONNECTIONS_FULL
    assert adm.refusals == {A.SOURCE_HANDSHAKES_FULL: 1, A.HANDSHAKES_FULL: 1, A.SOURCE_CONNECTIONS_FULL: 1,
                            A.CONNECTIONS_FULL: 1}


def test_tickets_give_back_what_they_took_once():
    adm = Admission(AdmissionLimits(max_handshaking=2, max_connections=2))
    t = adm.admit("h")
    t.release()
    t.release()
    t.established()
    assert (adm.handshaking, adm.connections) == (0, 0)
    u = adm.admit("h")
    u.established()
    u.established()
    assert (adm.handshaking, adm.connections) == (0, 1)
    u.release()
    assert (adm.handshaking, adm.connections, adm.admitted) == (0, 0, 2)


def test_refusals_are_reported_once_per_interval_with_their_count():
    now = [100.0]
    reports = []
    adm = Admission(AdmissionLimits(max_handshaking=0, report_every_s=1.0),
                    on_refuse=lambda r, n, src: reports.append((r, n)), monotonic=lambda: now[0])
    for _ in range(50):
        with pytest.raises(AdmissionRefused):
            adm.admit("h")
    now[0] += 1.5
    with pytest.raises(AdmissionRefused):
        adm.admit("h")
    adm.flush_reports()
    assert reports == [(A.HANDSHAKES_FULL, 1), (A.HANDSHAKES_FULL, 50)]
    assert adm.refusals[A.HANDSHAKES_FULL] == 51


def test_a_failing_reporter_never_stops_admission():
    def boom(*_):
        raise RuntimeError("sink down")

    adm = Admission(AdmissionLimits(max_handshaking=1), on_refuse=boom)
    adm.admit("h")
    with pytest.raises(AdmissionRefused):
        adm.admit("h")
    assert adm.refusals[A.HANDSHAKES_FULL] == 1


def test_the_end_of_a_surge_returns_the_heap():
    adm = Admission(AdmissionLimits(trim_after=3))
    tickets = [adm.admit("h") for _ in range(3)]
    for t in tickets[:-1]:
        t.release()
    assert adm.trims == 0  # one still in its handshake
    tickets[-1].release()
    assert adm.trims == (1 if A._MALLOC_TRIM is not None else 0)


async def _idle_connections(port: int, n: int) -> list[socket.socket]:
    """``n`` TCP connections that never send a byte (a handshake flood)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setblocking(False)
        try:
            await asyncio.get_running_loop().sock_connect(s, ("127.0.0.1", port))
        except OSError:
            s.close()
            continue
        socks.append(s)
    return socks


async def _until(predicate, timeout_s: float = 5.0) -> bool:
    for _ in range(int(timeout_s / 0.01)):
        if predicate():
            return True
        await asyncio.sleep(0.01)
    return predicate()


async def test_a_frame_server_refuses_a_handshake_flood_and_still_serves_after_it(server_tls, client_tls,
                                                                                emitter, sink):
    async def echo(conn):
        while True:
            conn.send(await conn.recv())

    limits = AdmissionLimits(max_handshaking=100, max_handshaking_per_source=8)
    server = await FrameServer(echo, tls=server_tls, emitter=emitter, name="venue", admission=limits).start()
    try:
        idle = await _idle_connections(server.port, 40)
        assert await _until(lambda: server.refusals[A.SOURCE_HANDSHAKES_FULL] >= 32)
        assert server.admission.peak_handshaking == 8
        refused = [e for e in sink.of_kind(Kind.HANDSHAKE_REFUSED) if e.reason.startswith("admission.")]
        assert refused and refused[0].decision == "deny" and refused[0].detail["refused"] >= 1
        for s in idle:
            s.close()
        assert await _until(lambda: server.admission.handshaking == 0)
        conn = await connect("127.0.0.1", server.port, tls=client_tls)
        conn.send(Ping(n=7))
        assert (await asyncio.wait_for(conn.recv(), 5)).n == 7
        conn.close()
    finally:
        await server.close()
    assert server.admission.connections == 0


async def test_a_stream_listener_caps_connections_in_all():
    served = asyncio.Event()
    release = asyncio.Event()

    async def hold(stream):
        served.set()
        await release.wait()

    refusals = []
    listener = await StreamListener(hold, context=None, name="edge",
                                    on_refuse=lambda r, d, a, p: refusals.append(r),
                                    admission=AdmissionLimits(max_connections=3, max_connections_per_source=3,
                                                              report_every_s=0.0)).start()
    try:
        held = await _idle_connections(listener.port, 3)
        assert await _until(lambda: listener.admission.connections == 3)
        extra = await _idle_connections(listener.port, 2)
        assert await _until(lambda: listener.refusals.get(A.CONNECTIONS_FULL, 0) == 2)
        assert refusals.count(A.CONNECTIONS_FULL) == 2
        for s in held + extra:
            s.close()
        release.set()
    finally:
        await listener.close()
