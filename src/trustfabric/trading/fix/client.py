"""A small FIX 4.4 initiator for tests and the demo: builds client messages, reads replies.

It is deliberately permissive (it can send any sequence number, omit tags or
corrupt a checksum) so tests can drive the acceptor's every refusal.
"""

from __future__ import annotations

import simplefix

from trustfabric.trading.fix import codec
from trustfabric.trading.fix.codec import BEGIN_STRING, FixFramer


class FixInitiator:
    def __init__(self, sender_comp_id: str, target_comp_id: str, *, heartbeat_s: int = 30) -> None:
        self.sender_comp_id = sender_comp_id
        self.target_comp_id = target_comp_id
        self.heartbeat_s = heartbeat_s
        self.next_out = 1
        self.framer = FixFramer()

    def message(self, msg_type: bytes | str, fields: list[tuple[int, object]], now: float, *,
                seq: int | None = None, poss_dup: bool = False, omit: tuple[int, ...] = (),
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
        header.append((52, codec.fix_time(now)))
        for tag, value in header + list(fields):
            if tag not in omit:
                msg.append_pair(tag, value, header=tag in (49, 56, 34, 43, 52))
        return msg.encode()

    def logon(self, now: float, *, reset: bool = False, **kw) -> bytes:
        fields: list[tuple[int, object]] = [(98, 0), (108, self.heartbeat_s)]
        if reset:
            self.next_out = 1
            fields.append((141, "Y"))
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
        return [f.message for f in self.framer.feed(data) if f.message is not None]
