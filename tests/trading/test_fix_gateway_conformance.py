"""The fix-gateway against a FIX client over mTLS: FIX 4.4 session and application conformance.

Each test drives the real gateway service (sessions, timers, core) on its real TLS edge port
with the project's own initiator; pre-trade risk and the OMS are fakes, the clock a FakeClock.
"""

import asyncio

import pytest

from tests.trading.fix_edge_harness import GatewayHarness, of_type, report

pytestmark = pytest.mark.timeout(60)


async def test_gateway_sends_its_own_heartbeat_while_the_client_keeps_talking(tmp_path):
    async with GatewayHarness(tmp_path) as gw:
        c = await gw.logged_on(heartbeat_s=5, keep_alive=False)  # the test sends the client's messages itself
        got = []
        for _ in range(10):  # the client talks every 0.2 s (real time), 1 s of our clock each
            gw.clock.advance(1.0)
            c.send(c.fix.heartbeat(gw.clock.now()))
            got = await c.read_until(lambda m: m.message_type == b"0" and m.get(112) is None, 0.2)
            if got:
                break
        assert got, [m.message_type for m in c.received]
        assert of_type(c.received, b"1") == []  # the client was never silent: no TestRequest
        await c.close()


async def test_avg_px_is_the_volume_weighted_average_of_the_fills(tmp_path):
    async with GatewayHarness(tmp_path) as gw:
        c = await gw.logged_on()
        c.send(c.fix.new_order_single(gw.clock.now(), "o1", "AAPL", "buy", 300, 1_030_000, account="acct-clients"))
        assert await c.read_until(lambda m: m.get(150) == b"0", 3.0)
        gw.push(report("o1", "partial_fill", "partially_filled", last_qty=100, last_px=1_000_000, cum_qty=100))
        gw.push(report("o1", "fill", "filled", last_qty=200, last_px=1_030_000, cum_qty=300))
        fills = []
        while len(fills) < 2:
            got = await c.read_until(lambda m: m.get(150) == b"F", 3.0)
            assert got
            fills += got
        # 100 @ 100.00 then 200 @ 103.00 -> (10_000 + 20_600) / 300 = 102
        assert [m.get(6) for m in fills] == [b"100", b"102"]
        assert [m.get(14) for m in fills] == [b"100", b"300"]
        await c.close()


async def test_cancel_confirmation_carries_the_cancel_request_clordid_and_the_original_in_41(tmp_path):
    async with GatewayHarness(tmp_path) as gw:
        c = await gw.logged_on()
        c.send(c.fix.new_order_single(gw.clock.now(), "o1", "AAPL", "buy", 300, 1_000_000))
        assert await c.read_until(lambda m: m.get(150) == b"0", 3.0)
        c.send(c.fix.cancel(gw.clock.now(), "c1", "o1", "AAPL", "buy"))
        await asyncio.sleep(0.1)
        assert "cancel_order" in gw.risk.actions()
        gw.push(report("o1", "canceled", "canceled"))
        [conf] = await c.read_until(lambda m: m.get(150) == b"4", 3.0)
        assert (conf.message_type, conf.get(39), conf.get(11), conf.get(41)) == (b"8", b"4", b"c1", b"o1")
        await c.close()


async def test_replace_is_a_new_risk_decision_and_is_confirmed_with_150_5(tmp_path):
    async with GatewayHarness(tmp_path) as gw:
        c = await gw.logged_on()
        c.send(c.fix.new_order_single(gw.clock.now(), "o1", "AAPL", "buy", 300, 1_000_000))
        assert await c.read_until(lambda m: m.get(150) == b"0", 3.0)
        c.send(c.fix.replace(gw.clock.now(), "r1", "o1", "AAPL", "buy", 500, 1_010_000))
        [conf] = await c.read_until(lambda m: m.get(150) == b"5", 3.0)
        assert (conf.get(11), conf.get(41), conf.get(38), conf.get(44), conf.get(39)) == (
            b"r1", b"o1", b"500", b"101", b"0")
        assert gw.risk.actions().count("submit_order") == 2  # the replacement went through risk again
        gw.push(report("o1", "canceled", "canceled"))  # the original's cancel: not a second report
        await c.read_until(lambda m: False, 0.3)
        assert [m.get(11) for m in c.received if m.get(150) == b"4"] == []
        # a replacement refused by risk gets OrderCancelReject (434=2), the original stays as it was
        gw.risk.refuse.add("FIX.CLIENT-A.r2")
        c.send(c.fix.replace(gw.clock.now(), "r2", "r1", "AAPL", "buy", 900, 1_010_000))
        [rej] = await c.read_until(lambda m: m.message_type == b"9", 3.0)
        assert (rej.get(11), rej.get(41), rej.get(434)) == (b"r2", b"r1", b"2")
        await c.close()


async def test_the_clients_logout_counts_in_the_inbound_sequence(tmp_path):
    async with GatewayHarness(tmp_path) as gw:
        c = await gw.logged_on()
        c.send(c.fix.heartbeat(gw.clock.now()))
        c.send(c.fix.logout(gw.clock.now()))
        assert await c.read_until(lambda m: m.message_type == b"5", 3.0)
        await c.close()
        again = await gw.client()
        again.fix.next_out = c.fix.next_out  # the next seq after the Logout, no ResetSeqNumFlag
        again.send(again.fix.logon(gw.clock.now()))
        assert (await again.read_until(lambda m: m.message_type == b"A", 3.0))
        await again.read_until(lambda m: m.message_type == b"2", 0.5)
        assert of_type(again.received, b"2") == []  # no needless ResendRequest
        await again.close()


async def test_order_status_request_answers_150_i_with_the_orders_state(tmp_path):
    async with GatewayHarness(tmp_path) as gw:
        c = await gw.logged_on()
        c.send(c.fix.new_order_single(gw.clock.now(), "o1", "AAPL", "buy", 300, 1_000_000))
        assert await c.read_until(lambda m: m.get(150) == b"0", 3.0)
        gw.push(report("o1", "partial_fill", "partially_filled", last_qty=100, last_px=1_000_000, cum_qty=100))
        assert await c.read_until(lambda m: m.get(150) == b"F", 3.0)
        c.send(c.fix.status(gw.clock.now(), "o1", "AAPL", "buy"))
        [status] = await c.read_until(lambda m: m.get(150) == b"I", 3.0)
        assert (status.get(11), status.get(39), status.get(14), status.get(151), status.get(6)) == (
            b"o1", b"1", b"100", b"200", b"100")
        c.send(c.fix.status(gw.clock.now(), "nope", "AAPL", "buy"))  # unknown: 150=I, 39=8
        [unknown] = await c.read_until(lambda m: m.get(150) == b"I" and m.get(11) == b"nope", 3.0)
        assert unknown.get(39) == b"8"
        await c.close()


async def test_unsupported_application_message_gets_business_message_reject(tmp_path):
    async with GatewayHarness(tmp_path) as gw:
        c = await gw.logged_on()
        c.send(c.fix.message(b"R", [(131, "q1"), (55, "AAPL")], gw.clock.now()))  # QuoteRequest
        [bmr] = await c.read_until(lambda m: m.message_type == b"j", 3.0)
        assert (bmr.get(372), bmr.get(380), bmr.get(45)) == (b"R", b"3", str(c.fix.next_out - 1).encode())
        c.send(c.fix.message(b"ZZ", [(58, "x")], gw.clock.now()))  # not a FIX MsgType: session Reject
        [rej] = await c.read_until(lambda m: m.message_type == b"3", 3.0)
        assert rej.get(373) == b"11"
        await c.close()


async def test_a_poss_resend_order_already_seen_is_not_executed_again(tmp_path):
    async with GatewayHarness(tmp_path) as gw:
        c = await gw.logged_on()
        c.send(c.fix.new_order_single(gw.clock.now(), "o1", "AAPL", "buy", 300, 1_000_000))
        assert await c.read_until(lambda m: m.get(150) == b"0", 3.0)
        c.send(c.fix.new_order_single(gw.clock.now(), "o1", "AAPL", "buy", 300, 1_000_000, poss_resend=True))
        [status] = await c.read_until(lambda m: m.get(150) in (b"I", b"8"), 3.0)
        assert status.get(150) == b"I" and status.get(39) == b"0"  # its status, not a duplicate reject
        assert gw.risk.actions().count("submit_order") == 1
        # a PossResend order never seen is a new order
        c.send(c.fix.new_order_single(gw.clock.now(), "o2", "AAPL", "buy", 100, 1_000_000, poss_resend=True))
        assert await c.read_until(lambda m: m.get(150) == b"0" and m.get(11) == b"o2", 3.0)
        assert gw.risk.actions().count("submit_order") == 2
        # without PossResend a reused ClOrdID is refused, still not executed
        c.send(c.fix.new_order_single(gw.clock.now(), "o1", "AAPL", "buy", 300, 1_000_000))
        [dup] = await c.read_until(lambda m: m.get(150) == b"8", 3.0)
        assert b"dup" in (dup.get(58) or b"") and gw.risk.actions().count("submit_order") == 2
        await c.close()


async def test_a_poss_dup_below_the_expected_sequence_is_ignored(tmp_path):
    async with GatewayHarness(tmp_path) as gw:
        c = await gw.logged_on()
        c.send(c.fix.new_order_single(gw.clock.now(), "o1", "AAPL", "buy", 300, 1_000_000))
        assert await c.read_until(lambda m: m.get(150) == b"0", 3.0)
        seen = c.fix.next_out - 1
        c.send(c.fix.new_order_single(gw.clock.now(), "o1", "AAPL", "buy", 300, 1_000_000, seq=seen,
                                      poss_dup=True))
        c.send(c.fix.test_request(gw.clock.now(), "after-dup"))
        [answer] = await c.read_until(lambda m: m.get(112) == b"after-dup", 3.0)
        assert answer.message_type == b"0"
        assert [m.message_type for m in c.received if m.message_type in (b"3", b"5", b"8")] == [b"8"]  # the ack
        assert gw.risk.actions().count("submit_order") == 1
        await c.close()
