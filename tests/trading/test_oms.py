"""OMS state machine, fills, positions and P&L."""

import pytest

from trustfabric.trading import oms
from trustfabric.trading.errors import OrderStateError
from trustfabric.trading.messages import Fill
from tests.trading.builders import ACCOUNT, AGENT, T0, order

_n = iter(range(1, 10**6))


def fill(o, qty, price, exec_id=None):
    return Fill(exec_id=exec_id or f"e{next(_n)}", cl_ord_id=o.cl_ord_id, account=o.account, agent=o.agent,
                symbol=o.symbol, side=o.side, qty=qty, price=price, venue="V1", time_ns=T0)


def test_new_partial_filled():
    m = oms.OrderManager()
    o = order(qty=100)
    m.new_order(o)
    assert m.apply_fill(fill(o, 40, 1000)).state == oms.PARTIALLY_FILLED
    record = m.apply_fill(fill(o, 60, 1000))
    assert record.state == oms.FILLED and record.cum_qty == 100 and record.leaves == 0


@pytest.mark.parametrize("terminal", ["fill", "cancel", "reject"])
def test_terminal_states_refuse_every_transition(terminal):
    m = oms.OrderManager()
    o = order(qty=10)
    m.new_order(o)
    if terminal == "fill":
        m.apply_fill(fill(o, 10, 1000))
    elif terminal == "cancel":
        m.cancel(o.cl_ord_id)
    else:
        m.reject(o.cl_ord_id)
    for action in (lambda: m.cancel(o.cl_ord_id), lambda: m.reject(o.cl_ord_id),
                   lambda: m.replace(o.cl_ord_id, order(qty=20)), lambda: m.apply_fill(fill(o, 1, 1000))):
        with pytest.raises(OrderStateError) as exc:
            action()
        assert exc.value.reason in (oms.ILLEGAL_TRANSITION, oms.OVERFILL)


def test_partially_filled_cannot_be_rejected():
    m = oms.OrderManager()
    o = order(qty=10)
    m.new_order(o)
    m.apply_fill(fill(o, 5, 1000))
    with pytest.raises(OrderStateError) as exc:
        m.reject(o.cl_ord_id)
    assert exc.value.reason == oms.ILLEGAL_TRANSITION


def test_overfill_unknown_and_duplicate_exec_are_handled():
    m = oms.OrderManager()
    o = order(qty=10)
    m.new_order(o)
    with pytest.raises(OrderStateError) as exc:
        m.apply_fill(fill(o, 11, 1000))
    assert exc.value.reason == oms.OVERFILL
    f = fill(o, 5, 1000, exec_id="dup")
    m.apply_fill(f)
    assert m.apply_fill(f) is None and m.orders[o.cl_ord_id].cum_qty == 5
    with pytest.raises(OrderStateError) as exc:
        m.cancel("nope")
    assert exc.value.reason == oms.UNKNOWN_ORDER
    with pytest.raises(OrderStateError):
        m.new_order(o)


def test_replace_carries_cum_qty_and_ends_the_old_order():
    m = oms.OrderManager()
    o = order(qty=100)
    m.new_order(o)
    m.apply_fill(fill(o, 30, 1000))
    new = order(qty=150, cl_ord_id=o.cl_ord_id + "-r")
    successor = m.replace(o.cl_ord_id, new)
    assert m.orders[o.cl_ord_id].state == oms.REPLACED and successor.state == oms.PARTIALLY_FILLED
    assert successor.cum_qty == 30 and successor.leaves == 120
    with pytest.raises(OrderStateError):
        m.replace(new.cl_ord_id, order(qty=20))  # below cum qty


def test_positions_and_pnl_long_then_short():
    m = oms.OrderManager()
    buy = order(qty=100, side="buy")
    sell = order(qty=150, side="sell")
    m.new_order(buy)
    m.new_order(sell)
    m.apply_fill(fill(buy, 100, 1000))
    m.apply_fill(fill(sell, 150, 1100))
    m.set_mark("AAPL", 1050)
    snap = m.snapshot(ACCOUNT, "AAPL", T0)
    assert snap.qty == -50 and snap.realized_pnl == 100 * 100 and snap.unrealized_pnl == 50 * 50
    assert snap.cost == -50 * 1100
    assert m.snapshots(T0) == [snap]


def test_average_cost_realized_pnl_is_exact():
    p = oms.Position()
    cash = 0
    for qty, price in [(3, 1001), (4, 1003), (-5, 1010), (6, 997), (-8, 1005)]:
        p.apply(qty, price)
        cash -= qty * price
    # flat: all P&L is realized and equals the cash flows exactly
    assert p.qty == 0 and p.cost == 0 and p.realized == cash


def test_unknown_account_position_snapshot_is_flat():
    m = oms.OrderManager()
    snap = m.snapshot("nobody", "AAPL", T0)
    assert (snap.qty, snap.realized_pnl, snap.unrealized_pnl) == (0, 0, 0)
    assert AGENT  # fixtures import check
