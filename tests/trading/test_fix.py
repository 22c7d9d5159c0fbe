"""FIX 4.4 acceptor session: the happy path and every bad input, exactly."""

import pytest

from trustfabric.trading.errors import FixError
from trustfabric.trading.fix import codec
from trustfabric.trading.fix import session as fs
from trustfabric.trading.fix.client import FixInitiator
from trustfabric.trading.fix.store import MemorySeqStore, SqliteSeqStore
from trustfabric.trading.messages import ExecutionReport

NOW = 1_790_000_000.0
ID_C1 = "spiffe://test.acme/clients/c1"
BINDINGS = {"C1": ID_C1, "C2": "spiffe://test.acme/clients/c2"}


def new_session(store=None, identity=ID_C1, now=NOW):
    return fs.FixSession("GW", identity, BINDINGS, store if store is not None else MemorySeqStore(), now=now)


def logged_on(store=None):
    s = new_session(store)
    c = FixInitiator("C1", "GW")
    out = s.on_bytes(c.logon(NOW), NOW)
    assert isinstance(out.events[0], fs.LoggedOn)
    return s, c


def parse(c, out):
    return [m for raw in out.outgoing for m in c.receive(raw)]


def problems(out):
    return [e.reason for e in out.events if isinstance(e, fs.SessionProblem)]


def test_logon_binds_identity_and_answers_logon():
    s = new_session()
    c = FixInitiator("C1", "GW", heartbeat_s=15)
    out = s.on_bytes(c.logon(NOW), NOW)
    [reply] = parse(c, out)
    assert reply.message_type == b"A" and reply.get(108) == b"15" and reply.get(49) == b"GW"
    assert reply.get(56) == b"C1" and reply.get(34) == b"1"
    assert s.state == fs.ACTIVE and not out.disconnect


def test_new_order_single_becomes_an_event_and_converts_to_a_floor_order():
    s, c = logged_on()
    out = s.on_bytes(c.new_order_single(NOW, "o1", "AAPL", "sell", 300, 1_891_200, tif="ioc", account="ACC9"), NOW)
    [event] = out.events
    assert isinstance(event, fs.FixNewOrderSingle)
    assert (event.cl_ord_id, event.symbol, event.side, event.qty, event.price, event.tif, event.account) == (
        "o1", "AAPL", "sell", 300, 1_891_200, "ioc", "ACC9")
    order = event.to_new_order(ID_C1, 5)
    assert order.agent == ID_C1 and order.price == 1_891_200


def test_cancel_replace_status_and_mass_cancel_become_events():
    s, c = logged_on()
    events = []
    for raw in (c.cancel(NOW, "c1", "o1", "AAPL", "buy"), c.replace(NOW, "r1", "o1", "AAPL", "buy", 200, 1_000_100),
                c.status(NOW, "o1", "AAPL", "buy"), c.mass_cancel(NOW, "m1", "AAPL"), c.mass_cancel(NOW, "m2")):
        events.extend(s.on_bytes(raw, NOW).events)
    assert [type(e).__name__ for e in events] == ["FixCancelRequest", "FixReplaceRequest", "FixStatusRequest",
                                                  "FixMassCancelRequest", "FixMassCancelRequest"]
    assert events[1].qty == 200 and events[1].price == 1_000_100 and events[1].orig_cl_ord_id == "o1"
    assert (events[3].request_type, events[3].symbol) == ("1", "AAPL")
    assert (events[4].request_type, events[4].symbol) == ("7", "")


def test_message_before_logon_is_refused_without_answer():
    s = new_session()
    c = FixInitiator("C1", "GW")
    out = s.on_bytes(c.new_order_single(NOW, "o1", "AAPL", "buy", 1, 10_000), NOW)
    assert out.disconnect and out.outgoing == () and problems(out) == [fs.NOT_LOGGED_ON]
    assert s.on_bytes(c.logon(NOW), NOW).disconnect  # closed for good


def test_logon_with_identity_not_bound_to_sender_comp_id_is_refused():
    store = MemorySeqStore()
    s = new_session(store, identity="spiffe://test.acme/clients/c2")  # C2's certificate...
    c = FixInitiator("C1", "GW")  # ...claiming to be C1
    out = s.on_bytes(c.logon(NOW), NOW)
    [reply] = parse(c, out)
    assert reply.message_type == b"5" and out.disconnect and problems(out) == [fs.IDENTITY_MISMATCH]
    assert store.load("GW->C1") == (1, 1)  # the impostor moved none of C1's sequence numbers


def test_logon_from_unknown_comp_id_is_refused():
    out = new_session().on_bytes(FixInitiator("EVIL", "GW").logon(NOW), NOW)
    assert out.disconnect and problems(out) == [fs.IDENTITY_MISMATCH]


def test_logon_to_wrong_target_or_without_heartbeat_is_refused():
    out = new_session().on_bytes(FixInitiator("C1", "OTHER").logon(NOW), NOW)
    assert out.disconnect and problems(out) == [fs.BAD_COMP_ID]
    c = FixInitiator("C1", "GW")
    out = new_session().on_bytes(c.message(b"A", [(98, 0)], NOW), NOW)
    assert out.disconnect and problems(out) == [fs.MISSING_TAG]
    out = new_session().on_bytes(c.message(b"A", [(98, 0), (108, "x")], NOW), NOW)
    assert out.disconnect and problems(out) == [fs.BAD_VALUE]


def test_garbled_bytes_are_ignored_without_consuming_a_sequence_number():
    s, c = logged_on()
    out = s.on_bytes(b"garbage\x01more=junk\x01", NOW)
    assert problems(out) == [codec.GARBLED] and not out.disconnect and out.outgoing == ()
    out = s.on_bytes(c.new_order_single(NOW, "o1", "AAPL", "buy", 1, 10_000), NOW)
    assert isinstance(out.events[0], fs.FixNewOrderSingle)


def test_bad_checksum_is_ignored_and_the_same_seq_is_accepted_after():
    s, c = logged_on()
    raw = c.new_order_single(NOW, "o1", "AAPL", "buy", 1, 10_000)
    bad = raw[:-4] + (b"000" if raw[-4:-1] != b"000" else b"001") + b"\x01"
    out = s.on_bytes(bad, NOW)
    assert problems(out) == [codec.BAD_CHECKSUM] and out.outgoing == ()
    out = s.on_bytes(raw, NOW)
    assert isinstance(out.events[0], fs.FixNewOrderSingle)


def _with_body_length(raw: bytes, delta: int) -> bytes:
    head, rest = raw.split(b"\x019=", 1)
    length, body = rest.split(b"\x01", 1)
    return head + b"\x019=" + str(int(length) + delta).encode() + b"\x01" + body


@pytest.mark.parametrize("delta", [-5, 5, 10_000_000])
def test_bad_body_length_is_detected_and_the_stream_resynchronises(delta):
    s, c = logged_on()
    bad = _with_body_length(c.new_order_single(NOW, "o1", "AAPL", "buy", 1, 10_000, seq=2), delta)
    good = c.new_order_single(NOW, "o1", "AAPL", "buy", 1, 10_000, seq=2)
    out = s.on_bytes(bad + good, NOW)
    assert problems(out) == [codec.BAD_BODY_LENGTH]
    assert [type(e).__name__ for e in out.events][-1] == "FixNewOrderSingle"


def test_bytes_arriving_one_at_a_time_still_frame():
    s, c = logged_on()
    raw = c.new_order_single(NOW, "o1", "AAPL", "buy", 1, 10_000)
    events = []
    for i in range(len(raw)):
        events.extend(s.on_bytes(raw[i:i + 1], NOW).events)
    assert [type(e).__name__ for e in events] == ["FixNewOrderSingle"]


@pytest.mark.parametrize("omit,tag", [((55,), 55), ((11,), 11), ((54,), 54), ((38,), 38), ((60,), 60), ((44,), 44)])
def test_missing_required_tag_gets_a_session_reject(omit, tag):
    s, c = logged_on()
    raw = c.message(b"D", [(t, v) for t, v in [(11, "o1"), (55, "AAPL"), (54, "1"), (60, codec.fix_time(NOW)),
                                                (38, 10), (40, "2"), (44, "1.00")] if t not in omit], NOW)
    out = s.on_bytes(raw, NOW)
    [reject] = parse(c, out)
    assert reject.message_type == b"3" and reject.get(371) == str(tag).encode() and reject.get(373) == b"1"
    assert reject.get(45) == b"2" and problems(out) == [fs.MISSING_TAG]
    # the rejected message consumed its sequence number
    assert isinstance(s.on_bytes(c.status(NOW, "o1", "AAPL", "buy"), NOW).events[0], fs.FixStatusRequest)


@pytest.mark.parametrize("fields,tag,srr", [
    ([(54, "9")], 54, b"5"),
    ([(38, "ten")], 38, b"6"),
    ([(38, "0")], 38, b"5"),
    ([(40, "1")], 40, b"5"),
    ([(44, "1.000001")], 44, b"6"),
    ([(59, "9")], 59, b"5"),
])
def test_bad_values_get_a_session_reject(fields, tag, srr):
    s, c = logged_on()
    base = dict([(11, "o1"), (55, "AAPL"), (54, "1"), (60, codec.fix_time(NOW)), (38, 10), (40, "2"), (44, "1.00")])
    base.update(dict(fields))
    out = s.on_bytes(c.message(b"D", list(base.items()), NOW), NOW)
    [reject] = parse(c, out)
    assert reject.get(371) == str(tag).encode() and reject.get(373) == srr
    assert not any(isinstance(e, fs.FixNewOrderSingle) for e in out.events)


def test_wrong_comp_ids_after_logon_get_reject_and_logout():
    s, c = logged_on()
    out = s.on_bytes(c.new_order_single(NOW, "o1", "AAPL", "buy", 1, 10_000, sender="C2"), NOW)
    types = [m.message_type for m in parse(c, out)]
    assert types == [b"3", b"5"] and out.disconnect and problems(out) == [fs.BAD_COMP_ID]
    s, c = logged_on()
    out = s.on_bytes(c.message(b"0", [], NOW, target="NOTGW"), NOW)
    assert out.disconnect and fs.BAD_COMP_ID in problems(out)


def test_sequence_gap_requests_resend_and_accepts_the_resent_messages():
    s, c = logged_on()
    c.next_out = 5  # messages 2..4 lost
    out = s.on_bytes(c.new_order_single(NOW, "o5", "AAPL", "buy", 1, 10_000), NOW)
    [resend] = parse(c, out)
    assert resend.message_type == b"2" and resend.get(7) == b"2" and resend.get(16) == b"0"
    assert problems(out) == [fs.SEQ_GAP] and not any(isinstance(e, fs.FixNewOrderSingle) for e in out.events)
    # a second out-of-order message does not trigger another ResendRequest
    assert parse(c, s.on_bytes(c.new_order_single(NOW, "o6", "AAPL", "buy", 1, 10_000), NOW)) == []
    events = []
    for seq in (2, 3, 4, 5, 6):
        events += s.on_bytes(c.new_order_single(NOW, f"r{seq}", "AAPL", "buy", 1, 10_000, seq=seq, poss_dup=True),
                             NOW).events
    assert [e.cl_ord_id for e in events] == ["r2", "r3", "r4", "r5", "r6"]


def test_gap_fill_sequence_reset_advances_expected_seq():
    s, c = logged_on()
    c.next_out = 6
    s.on_bytes(c.heartbeat(NOW), NOW)  # seq 6 > 2: resend requested
    s.on_bytes(c.message(b"4", [(123, "Y"), (36, 7)], NOW, seq=2, poss_dup=True), NOW)
    c.next_out = 7
    out = s.on_bytes(c.status(NOW, "o1", "AAPL", "buy"), NOW)
    assert isinstance(out.events[0], fs.FixStatusRequest)


def test_sequence_reset_that_lowers_the_sequence_is_rejected():
    s, c = logged_on()
    out = s.on_bytes(c.message(b"4", [(36, 1)], NOW), NOW)  # reset mode, NewSeqNo 1 < expected 2
    [reject] = parse(c, out)
    assert reject.message_type == b"3" and reject.get(373) == b"5" and problems(out) == [fs.BAD_VALUE]


def test_sequence_reset_reset_mode_jumps_ahead():
    s, c = logged_on()
    s.on_bytes(c.message(b"4", [(36, 50)], NOW, seq=99), NOW)
    c.next_out = 50
    assert isinstance(s.on_bytes(c.status(NOW, "o1", "AAPL", "buy"), NOW).events[0], fs.FixStatusRequest)


def test_too_low_seq_without_possdup_logs_out():
    s, c = logged_on()
    s.on_bytes(c.heartbeat(NOW), NOW)  # seq 2
    out = s.on_bytes(c.message(b"0", [], NOW, seq=2), NOW)
    [logout] = parse(c, out)
    assert logout.message_type == b"5" and b"too low" in logout.get(58)
    assert out.disconnect and problems(out) == [fs.SEQ_TOO_LOW]


def test_too_low_seq_with_possdup_is_ignored():
    s, c = logged_on()
    raw = c.new_order_single(NOW, "o1", "AAPL", "buy", 1, 10_000)
    assert s.on_bytes(raw, NOW).events
    out = s.on_bytes(c.new_order_single(NOW, "o1", "AAPL", "buy", 1, 10_000, seq=2, poss_dup=True), NOW)
    assert out.events == () and out.outgoing == () and not out.disconnect


def test_missing_msg_seq_num_logs_out():
    s, c = logged_on()
    out = s.on_bytes(c.message(b"0", [], NOW, omit=(34,)), NOW)
    assert out.disconnect and problems(out) == [fs.MISSING_TAG]


def test_missing_sending_time_gets_reject():
    s, c = logged_on()
    out = s.on_bytes(c.message(b"0", [], NOW, omit=(52,)), NOW)
    [reject] = parse(c, out)
    assert reject.message_type == b"3" and reject.get(371) == b"52" and not out.disconnect


def test_test_request_is_answered_with_heartbeat():
    s, c = logged_on()
    [hb] = parse(c, s.on_bytes(c.test_request(NOW, "ping-1"), NOW))
    assert hb.message_type == b"0" and hb.get(112) == b"ping-1"


def test_test_request_without_id_is_rejected():
    s, c = logged_on()
    [reject] = parse(c, s.on_bytes(c.message(b"1", [], NOW), NOW))
    assert reject.message_type == b"3" and reject.get(371) == b"112"


def test_unsupported_message_type_is_rejected():
    s, c = logged_on()
    out = s.on_bytes(c.message(b"ZZ", [(58, "x")], NOW), NOW)
    [reject] = parse(c, out)
    assert reject.get(373) == b"11" and problems(out) == [fs.INVALID_MSG_TYPE]


def test_the_peers_logout_consumes_its_sequence_number():
    store = MemorySeqStore()
    s, c = logged_on(store)
    s.on_bytes(c.logout(NOW), NOW)
    assert store.load(s.key)[0] == c.next_out  # the next Logon's MsgSeqNum is expected: no ResendRequest
    s2 = new_session(store)
    out = s2.on_bytes(c.logon(NOW), NOW)
    assert [m.message_type for m in parse(c, out)] == [b"A"]


def test_a_fix_application_type_not_taken_gets_business_message_reject():
    s, c = logged_on()
    out = s.on_bytes(c.message(b"AE", [(571, "r1")], NOW), NOW)  # TradeCaptureReport
    [bmr] = parse(c, out)
    assert (bmr.message_type, bmr.get(372), bmr.get(380)) == (b"j", b"AE", b"3")
    assert problems(out) == [fs.UNSUPPORTED] and not out.disconnect


def test_logout_is_acknowledged():
    s, c = logged_on()
    out = s.on_bytes(c.logout(NOW), NOW)
    assert [m.message_type for m in parse(c, out)] == [b"5"] and out.disconnect
    assert isinstance(out.events[-1], fs.LoggedOut)


def _report(cl_ord_id, exec_type="new", status="new"):
    return ExecutionReport(cl_ord_id=cl_ord_id, order_id="V1:AAPL:1", exec_id=f"x-{cl_ord_id}", venue="V1",
                           account="ACC", agent=ID_C1, symbol="AAPL", side="buy", exec_type=exec_type,
                           ord_status=status, order_qty=10, price=1_000_000, leaves_qty=10)


def test_resend_request_resends_app_messages_and_gap_fills_admin():
    s, c = logged_on()  # we sent Logon = 1
    s.send_app(codec.execution_report(_report("a")), NOW)  # 2
    s.on_bytes(c.test_request(NOW, "t"), NOW)  # we answer Heartbeat = 3
    s.send_app(codec.execution_report(_report("b")), NOW + 1)  # 4
    msgs = parse(c, s.on_bytes(c.resend_request(NOW + 2, 1, 0), NOW + 2))
    summary = [(m.message_type, m.get(34), m.get(36), m.get(11), m.get(43)) for m in msgs]
    assert summary == [(b"4", b"1", b"2", None, b"Y"), (b"8", b"2", None, b"a", b"Y"),
                       (b"4", b"3", b"4", None, b"Y"), (b"8", b"4", None, b"b", b"Y")]
    assert msgs[1].get(122) is not None


def test_sequence_numbers_survive_reconnect_in_sqlite(tmp_path):
    path = str(tmp_path / "fix.db")
    s, c = logged_on(SqliteSeqStore(path))
    s.on_bytes(c.heartbeat(NOW), NOW)  # in 2
    s.send_app(codec.execution_report(_report("a")), NOW)  # out 2
    s.on_disconnect()
    store = SqliteSeqStore(path)
    assert store.load("GW->C1") == (3, 3)
    s2 = new_session(store)
    out = s2.on_bytes(c.logon(NOW), NOW)  # seq 3
    [reply] = parse(c, out)
    assert reply.get(34) == b"3" and s2.state == fs.ACTIVE
    assert store.sent("GW->C1", 1, 10).keys() == {2}
    # a reconnect that restarts at 1 without ResetSeqNumFlag is too low
    s3 = new_session(store)
    out = s3.on_bytes(FixInitiator("C1", "GW").logon(NOW), NOW)
    assert out.disconnect and problems(out) == [fs.SEQ_TOO_LOW]
    # with ResetSeqNumFlag both sides start over
    s4 = new_session(store)
    out = s4.on_bytes(FixInitiator("C1", "GW").logon(NOW, reset=True), NOW)
    assert s4.state == fs.ACTIVE and store.load("GW->C1") == (2, 2)


def test_logon_with_higher_seq_after_reconnect_requests_resend():
    store = MemorySeqStore()
    s, c = logged_on(store)
    s.on_disconnect()
    c.next_out = 9
    s2 = new_session(store)
    out = s2.on_bytes(c.logon(NOW), NOW)
    types = [(m.message_type, m.get(7)) for m in parse(c, out)]
    assert types == [(b"A", None), (b"2", b"2")] and s2.state == fs.ACTIVE


def test_heartbeat_test_request_and_timeout_timers():
    s, c = logged_on()  # 30 s heartbeat
    assert s.on_timer(NOW + 10).outgoing == ()
    [hb] = parse(c, s.on_timer(NOW + 30))
    assert hb.message_type == b"0"
    [tr, *_] = parse(c, s.on_timer(NOW + 37))
    assert tr.message_type == b"1"
    out = s.on_timer(NOW + 73)
    assert out.disconnect and [m.message_type for m in parse(c, out)] == [b"5"]


def test_logon_timeout():
    s = new_session()
    assert not s.on_timer(NOW + 5).disconnect
    assert s.on_timer(NOW + 10).disconnect


def test_too_many_garbled_messages_log_out():
    s, c = logged_on()
    out = s.on_bytes(b"".join(b"8=FIX.4.4\x019=5\x0135=0\x0110=000\x01" for _ in range(10)), NOW)
    assert out.disconnect and any(isinstance(e, fs.LoggedOut) for e in out.events)


def test_send_app_before_logon_is_refused():
    with pytest.raises(FixError):
        new_session().send_app(codec.execution_report(_report("a")), NOW)


def test_builders_produce_valid_messages():
    c = FixInitiator("C1", "GW")
    s, c = logged_on()
    raw = s.send_app(codec.execution_report(_report("a", "fill", "filled"), text="done"), NOW)
    [er] = c.receive(raw)
    assert (er.get(150), er.get(39), er.get(44), er.get(54)) == (b"F", b"2", b"100", b"1")
    [ocr] = c.receive(s.send_app(codec.order_cancel_reject("c1", "o1", text="too late"), NOW))
    assert ocr.message_type == b"9" and ocr.get(434) == b"1"
    [bmr] = c.receive(s.send_app(codec.business_message_reject(7, "D", 5, "missing"), NOW))
    assert bmr.message_type == b"j" and bmr.get(380) == b"5" and bmr.get(45) == b"7"


def test_price_helpers_are_exact():
    assert codec.price_from_fix(b"189.5") == 1_895_000
    assert codec.price_to_fix(1_895_000) == "189.5"
    for bad in (b"1e400", b"NaN", b"abc", b"0.00001"):
        with pytest.raises(ValueError):
            codec.price_from_fix(bad)


# --- fuzzing: bad bytes never crash the session and never yield orders before Logon ------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_random_bytes_before_logon_never_crash_or_yield_orders(data):
    s = new_session()
    out = s.on_bytes(data, NOW)
    assert not any(isinstance(e, (fs.FixNewOrderSingle, fs.LoggedOn)) for e in out.events)
    assert not any(e.reason == "fix.internal" for e in out.events if isinstance(e, fs.SessionProblem))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, 400), st.integers(0, 255), st.integers(1, 40))
def test_mutated_messages_after_logon_never_crash(position, byte, cut):
    s, c = logged_on()
    raw = bytearray(c.new_order_single(NOW, "o1", "AAPL", "buy", 10, 1_000_000) * 2)
    raw[position % len(raw)] = byte
    data = bytes(raw)
    events = []
    for i in range(0, len(data), cut):
        events.extend(s.on_bytes(data[i:i + cut], NOW).events)
    assert not any(e.reason == "fix.internal" for e in events if isinstance(e, fs.SessionProblem))
    for e in events:
        if isinstance(e, fs.FixNewOrderSingle):
            assert e.qty > 0 and e.price > 0 and e.side in ("buy", "sell")


@pytest.mark.parametrize("sending_time", [NOW - 600, NOW + 600])
def test_stale_or_future_sending_time_gets_reject_and_logout(sending_time):
    s, c = logged_on()
    out = s.on_bytes(c.new_order_single(sending_time, "o1", "AAPL", "buy", 1, 10_000), NOW)
    types = [m.message_type for m in parse(c, out)]
    assert types == [b"3", b"5"] and out.disconnect and problems(out) == [fs.SENDING_TIME]
    assert not any(isinstance(e, fs.FixNewOrderSingle) for e in out.events)


def test_garbled_sending_time_is_refused():
    s, c = logged_on()
    raw = c.message(b"0", [], NOW, omit=(52,)).replace(b"\x0110=", b"\x0152=yesterday\x0110=")
    out = s.on_bytes(_recompute(raw), NOW)
    assert problems(out) == [fs.SENDING_TIME] and out.disconnect


def _recompute(raw: bytes) -> bytes:
    """Fix BodyLength and CheckSum of a hand-edited message."""
    body_start = raw.index(b"\x01", raw.index(b"\x019=") + 1) + 1
    end = raw.rindex(b"10=")
    body = raw[body_start:end]
    head = raw[:raw.index(b"\x019=")] + b"\x019=" + str(len(body)).encode() + b"\x01"
    data = head + body
    return data + b"10=" + f"{codec.checksum(data):03d}".encode() + b"\x01"


def test_fix_time_round_trips():
    assert codec.parse_fix_time(codec.fix_time(NOW).encode()) == pytest.approx(NOW, abs=0.001)
    assert codec.parse_fix_time(b"20261127-00:00:00") is not None
    assert codec.parse_fix_time(b"not a time") is None
