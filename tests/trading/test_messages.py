from decimal import Decimal

import msgspec
import pytest

from trustfabric.trading import messages as m
from tests.trading.builders import order


def test_every_message_round_trips_through_msgpack():
    o = order()
    samples = [
        m.Quote(symbol="AAPL", bid=1, bid_size=2, ask=3, ask_size=4, time_ns=5),
        m.Trade(symbol="AAPL", price=1, qty=2, time_ns=3),
        o,
        m.CancelOrder(cl_ord_id="c", orig_cl_ord_id="o", account="a", agent="g", symbol="S", side="sell"),
        m.ReplaceOrder(cl_ord_id="r", orig_cl_ord_id="o", account="a", agent="g", symbol="S", side="buy", qty=1,
                       price=2),
        m.RiskApproval(principal="p", cl_ord_id="o", symbol="S", side="buy", qty=1, price=2, limits_version=3,
                       issued_ns=4, nonce=b"n" * 16, key_id="k", mac=b"m" * 32),
        m.RoutedOrder(order=o, venue="V1", parent_cl_ord_id="p"),
        m.ExecutionReport(cl_ord_id="o", order_id="1", exec_id="e", venue="V", account="a", agent="g", symbol="S",
                          side="buy", exec_type="fill", ord_status="filled", order_qty=1, price=2),
        m.Fill(exec_id="e", cl_ord_id="o", account="a", agent="g", symbol="S", side="buy", qty=1, price=2,
               venue="V", time_ns=1),
        m.PositionSnapshot(account="a", symbol="S", qty=1, cost=2, realized_pnl=3, unrealized_pnl=4, mark=5,
                           time_ns=6),
        m.SettlementInstruction(account="a", symbol="S", net_qty=1, net_cash=-2, fills=1, settle_date="2026-11-27"),
        m.KillSwitchCommand(action="halt", scope="firm", target="", operator="alice", time_ns=1),
        m.Reject(ref_id="o", reason="risk.price_collar"),
    ]
    for msg in samples:
        assert m.decode(m.encode(msg)) == msg


def test_messages_are_immutable():
    o = order()
    with pytest.raises(AttributeError):
        o.qty = 5  # type: ignore[misc]


def test_decoder_refuses_bad_side_and_unknown_type():
    raw = msgspec.msgpack.encode({"type": "NewOrder", "cl_ord_id": "x", "account": "a", "agent": "g",
                                  "symbol": "S", "side": "short", "qty": 1, "price": 1})
    with pytest.raises(msgspec.ValidationError):
        m.decode(raw)
    with pytest.raises(msgspec.ValidationError):
        m.decode(msgspec.msgpack.encode({"type": "Nope"}))


def test_price_conversion_is_exact():
    assert m.to_price("12.34") == 123_400
    assert m.to_price("0.0001") == 1
    assert m.to_dollars(123_400) == Decimal("12.34")
    with pytest.raises(ValueError):
        m.to_price("0.00001")
