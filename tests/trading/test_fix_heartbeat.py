"""FIX 4.4 liveness on both sides (HeartbeatTimer, the acceptor, the initiator), on a FakeClock."""

import pytest

from trustfabric.clock import FakeClock
from trustfabric.trading.fix import heartbeat as hb
from trustfabric.trading.fix.client import FixInitiator

from tests.trading.fix_edge_harness import GatewayHarness, of_type

pytestmark = pytest.mark.timeout(60)


def test_heartbeat_due_when_nothing_sent_for_the_interval_even_while_receiving():
    t = hb.HeartbeatTimer.start(10, 0.0)
    for second in range(1, 10):
        t.received(float(second))
        assert t.due(float(second)) == ()
    t.received(10.0)
    assert t.due(10.0) == (hb.SEND_HEARTBEAT,)
    t.sent(10.0)
    assert t.due(15.0) == ()


def test_test_request_after_interval_plus_transmission_time_then_peer_gone():
    t = hb.HeartbeatTimer.start(10, 0.0)
    t.sent(11.0)
    assert t.due(11.9) == ()  # 11.9 s of silence: within 10 s + 20 %
    assert t.due(12.0) == (hb.SEND_TEST_REQUEST,)
    t.test_request_sent(12.0)
    assert hb.PEER_GONE not in t.due(23.9)
    assert t.due(24.0) == (hb.PEER_GONE,)


def test_any_message_answers_the_test_request():
    t = hb.HeartbeatTimer.start(10, 0.0)
    t.test_request_sent(12.0)
    t.received(13.0)
    assert t.test_request_sent_at is None and t.due(24.0) == (hb.SEND_HEARTBEAT,)


def test_a_non_positive_interval_is_refused():
    with pytest.raises(ValueError):
        hb.HeartbeatTimer.start(0, 0.0)


def test_initiator_heartbeats_test_requests_and_gives_up_on_a_silent_acceptor():
    clock = FakeClock()
    c = FixInitiator("C1", "GW", heartbeat_s=10, clock=clock)
    c.logon(clock.now())
    assert c.on_timer(clock.now()).outgoing == ()
    clock.advance(10)
    [heartbeat] = c.on_timer(clock.now()).outgoing
    assert b"\x0135=0\x01" in heartbeat
    clock.advance(2)  # 12 s without anything from the acceptor
    [test_request] = c.on_timer(clock.now()).outgoing
    assert b"\x0135=1\x01" in test_request
    clock.advance(12)
    gone = c.on_timer(clock.now())
    assert gone.disconnect and b"\x0135=5\x01" in gone.outgoing[0]


def test_initiator_answers_a_test_request_with_its_id():
    clock = FakeClock()
    acceptor = FixInitiator("GW", "C1", clock=clock)
    c = FixInitiator("C1", "GW", clock=clock)
    [tr] = c.receive(acceptor.test_request(clock.now(), "T-7"))
    [answer] = acceptor.receive(c.on_message(tr, clock.now()))
    assert answer.message_type == b"0" and answer.get(112) == b"T-7"


async def test_gateway_test_requests_a_silent_client_then_logs_it_out(tmp_path):
    async with GatewayHarness(tmp_path) as gw:
        c = await gw.logged_on(heartbeat_s=5, keep_alive=False)
        gw.clock.advance(6.0)  # 5 s + 20 %: nothing from the client
        [tr] = await c.read_until(lambda m: m.message_type == b"1", 3.0)
        assert tr.get(112)
        gw.clock.advance(6.0)  # still nothing: the TestRequest is unanswered
        [logout] = await c.read_until(lambda m: m.message_type == b"5", 3.0)
        assert b"TestRequest" in (logout.get(58) or b"")
        await c.read_until(lambda m: False, 2.0)
        assert c.closed
        await c.close()


async def test_client_answers_the_gateways_test_request_and_stays_logged_on(tmp_path):
    async with GatewayHarness(tmp_path) as gw:
        # the client's own clock stands still (its timers stay quiet); it still answers TestRequests
        c = await gw.logged_on(heartbeat_s=5, clock=FakeClock(gw.clock.now()))
        gw.clock.advance(6.0)
        assert await c.read_until(lambda m: m.message_type == b"1", 3.0)
        gw.clock.advance(6.0)
        await c.read_until(lambda m: m.message_type == b"5", 1.5)
        assert of_type(c.received, b"5") == [] and not c.closed
        test_id = of_type(c.received, b"1")[0].get(112)
        assert gw.service.sessions["CLIENT-A"].session.timer.test_request_sent_at is None, test_id
        await c.close()
