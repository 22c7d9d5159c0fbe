"""A small FIX 4.4 initiator for tests and the demo: builds client messages, reads replies.

It is deliberately permissive (it can send any sequence number, omit tags or
corrupt a checksum) so tests can drive the acceptor's every refusal.

It also keeps FIX 4.4 liveness as an initiator must (:class:`~.heartbeat.HeartbeatTimer`
on ``clock``'s monotonic readings, started by :meth:`FixInitiator.logon`):
:meth:`FixInitiator.on_message` answers a TestRequest with its Heartbeat and
:meth:`FixInitiator.on_timer` says what to send now (Heartbeat, TestRequest) or that
the acceptor is gone (a Logout to send, then close). ``keep_alive=False``
makes a client that stays silent, to test the acceptor's timeout.
"""

from __future__ import annotations

from dataclasses import dataclass

import simplefix

from trustfabric.clock import SYSTEM_CLOCK, Clock
from trustfabric.trading.fix import codec
from trustfabric.trading.fix.codec import BEGIN_STRING, FixFramer
from trustfabric.trading.fix.heartbeat import PEER_GONE, SEND_HEARTBEAT, SEND_TEST_REQUEST, HeartbeatTimer


@dataclass(frozen=True, slots=True)
class TimerOutput:
    outgoing: tuple[bytes, ...] = ()
    disconnect: bool = False  # the acceptor did not answer our TestRequest: Logout sent, close now


class FixInitiator:
    def __init__(self, sender_comp_id: str, target_comp_id: str, *, heartbeat_s: int = 30,
                 clock: Clock = SYSTEM_CLOCK, keep_alive: bool = True) -> None:
        self.sender_comp_id = sender_comp_id
        self.target_comp_id = target_comp_id
        self.heartbeat_s = heartbeat_s
        self.next_out = 1
        self.framer = FixFramer()
        self.clock = clock
        self.keep_alive = keep_alive
        self.timer: HeartbeatTimer | None = None  # runs from our Logon on

    def message(self, msg_type: bytes | str, fields: list[tuple[int, object]], now: float, *,
                seq: int | None = None, poss_dup: bool = False, poss_resend: bool = False, omit: tuple[int, ...] = (),
                sender: str | None = None, target: str | None = None) -> bytes:
        """Encode one message; by default uses and advances ``next_out``."""
        msg = simplefix.FixMessage()
        msg.append_pair(8, BEGIN_STRING, header=True)
        msg.append_pair(35, msg_type, header=True)
        header = [(49, sender or self.sender_comp_id), (56, target or self.target_comp_id)]
        if seq is None:
            seq = self.next_out
            self.next_out += 1
        header.append((34, seq))
        if poss_dup:
            header.append((43, "Y"))
        if poss_resend:
            header.append((97, "Y"))
        header.append((52, codec.fix_time(now)))
        for tag, value in header + list(fields):
            if tag not in omit:
                msg.append_pair(tag, value, header=tag in (49, 56, 34, 43, 52, 97))
        if self.timer is not None:
            self.timer.sent(self.clock.monotonic())
        return msg.encode()

    def logon(self, now: float, *, reset: bool = False, **kw) -> bytes:
        fields: list[tuple[int, object]] = [(98, 0), (108, self.heartbeat_s)]
        if reset:
            self.next_out = 1
            fields.append((141, "Y"))
        self.timer = HeartbeatTimer.start(self.heartbeat_s, self.clock.monotonic())
        return self.message(codec.LOGON, fields, now, **kw)

    def logout(self, now: float, text: str = "bye") -> bytes:
        return self.message(codec.LOGOUT, [(58, text)], now)

    def heartbeat(self, now: float, test_req_id: str = "") -> bytes:
        return self.message(codec.HEARTBEAT, [(112, test_req_id)] if test_req_id else [], now)

    def test_request(self, now: float, test_req_id: str) -> bytes:
        return self.message(codec.TEST_REQUEST, [(112, test_req_id)], now)

    def resend_request(self, now: float, begin: int, end: int = 0) -> bytes:
        return self.message(codec.RESEND_REQUEST, [(7, begin), (16, end)], now)

    def new_order_single(self, now: float, cl_ord_id: str, symbol: str, side: str, qty: int, price: int, *,
                         tif: str = "day", account: str = "", **kw) -> bytes:
        fields: list[tuple[int, object]] = [(11, cl_ord_id)]
        if account:
            fields.append((1, account))
        fields += [(55, symbol), (54, codec.SIDE_TO_FIX[side]), (60, codec.fix_time(now)), (38, qty), (40, "2"),
                   (44, codec.price_to_fix(price)), (59, codec.TIF_TO_FIX[tif])]
        return self.message(codec.NEW_ORDER_SINGLE, fields, now, **kw)

    def cancel(self, now: float, cl_ord_id: str, orig_cl_ord_id: str, symbol: str, side: str) -> bytes:
        return self.message(codec.ORDER_CANCEL_REQUEST, [(11, cl_ord_id), (41, orig_cl_ord_id), (55, symbol),
                                                         (54, codec.SIDE_TO_FIX[side]), (60, codec.fix_time(now))],
                            now)

    def replace(self, now: float, cl_ord_id: str, orig_cl_ord_id: str, symbol: str, side: str, qty: int,
                price: int) -> bytes:
        return self.message(codec.ORDER_CANCEL_REPLACE, [
            (11, cl_ord_id), (41, orig_cl_ord_id), (55, symbol), (54, codec.SIDE_TO_FIX[side]),
            (60, codec.fix_time(now)), (38, qty), (40, "2"), (44, codec.price_to_fix(price))], now)

    def status(self, now: float, cl_ord_id: str, symbol: str, side: str) -> bytes:
        return self.message(codec.ORDER_STATUS_REQUEST, [(11, cl_ord_id), (55, symbol),
                                                         (54, codec.SIDE_TO_FIX[side])], now)

    def mass_cancel(self, now: float, cl_ord_id: str, symbol: str = "") -> bytes:
        fields: list[tuple[int, object]] = [(11, cl_ord_id), (530, "1" if symbol else "7")]
        if symbol:
            fields.append((55, symbol))
        fields.append((60, codec.fix_time(now)))
        return self.message(codec.ORDER_MASS_CANCEL, fields, now)

    def receive(self, data: bytes) -> list[simplefix.FixMessage]:
        """Parse replies; framing problems are dropped (the acceptor is trusted to be well-formed)."""
        messages = [f.message for f in self.framer.feed(data) if f.message is not None]
        if messages and self.timer is not None:
            self.timer.received(self.clock.monotonic())
        return messages

    def on_message(self, msg: simplefix.FixMessage, now: float) -> bytes | None:
        """The initiator's own answer to one received message: a TestRequest's Heartbeat, or None."""
        if msg.message_type == codec.TEST_REQUEST and self.keep_alive:
            return self.heartbeat(now, (msg.get(112) or b"").decode("ascii", "replace"))
        return None

    def on_timer(self, now: float) -> TimerOutput:
        """What liveness asks for now, on the clock's monotonic reading (nothing before Logon)."""
        if self.timer is None or not self.keep_alive:
            return TimerOutput()
        mono = self.clock.monotonic()
        due = self.timer.due(mono)
        if PEER_GONE in due:
            self.timer = None
            return TimerOutput((self.logout(now, "heartbeat timeout: TestRequest not answered"),), True)
        out = []
        if SEND_TEST_REQUEST in due:
            out.append(self.test_request(now, self.timer.next_test_request_id()))
            self.timer.test_request_sent(mono)
        if SEND_HEARTBEAT in due:
            out.append(self.heartbeat(now))
        return TimerOutput(tuple(out))
