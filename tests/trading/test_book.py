"""Price-time priority matching, partial fills, replace priority, cancel-on-disconnect."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustfabric.trading.book import OrderBook
from trustfabric.trading.errors import BookError
from tests.trading.builders import T0, order


def o(side, qty, price, **kw):
    return order(side=side, qty=qty, price=price, **kw)


def fills(reports):
    return [(r.cl_ord_id, r.last_qty, r.last_px) for r in reports if r.exec_type in ("fill", "partial_fill")]


def test_resting_orders_and_top_of_book():
    book = OrderBook("AAPL", "V1")
    book.add(o("buy", 100, 990), "s1", T0)
    book.add(o("buy", 50, 995), "s1", T0)
    book.add(o("sell", 70, 1010), "s1", T0)
    assert book.best_bid() == (995, 50) and book.best_ask() == (1010, 70)
    assert book.depth("buy") == [(995, 50), (990, 100)]
    book.check_invariants()


def test_price_then_time_priority():
    book = OrderBook("AAPL", "V1")
    book.add(o("sell", 100, 1010, cl_ord_id="late-better"), "s1", T0 + 2)
    book.add(o("sell", 100, 1005, cl_ord_id="first"), "s1", T0)
    book.add(o("sell", 100, 1005, cl_ord_id="second"), "s2", T0 + 1)
    reports = book.add(o("buy", 250, 1010, cl_ord_id="taker"), "s3", T0 + 3)
    resting = [f for f in fills(reports) if f[0] != "taker"]
    assert resting == [("first", 100, 1005), ("second", 100, 1005), ("late-better", 50, 1010)]
    assert book.best_ask() == (1010, 50)
    book.check_invariants()


def test_partial_fill_reports_leaves_and_status():
    book = OrderBook("AAPL", "V1")
    book.add(o("sell", 30, 1000, cl_ord_id="maker"), "s1", T0)
    reports = book.add(o("buy", 100, 1000, cl_ord_id="taker"), "s2", T0)
    taker = [r for r in reports if r.cl_ord_id == "taker"]
    assert [r.exec_type for r in taker] == ["new", "partial_fill"]
    assert taker[-1].ord_status == "partially_filled" and taker[-1].leaves_qty == 70 and taker[-1].cum_qty == 30
    maker = [r for r in reports if r.cl_ord_id == "maker"][-1]
    assert maker.exec_type == "fill" and maker.ord_status == "filled" and maker.leaves_qty == 0
    assert book.best_bid() == (1000, 70)


def test_trade_happens_at_resting_price():
    book = OrderBook("AAPL", "V1")
    book.add(o("buy", 10, 1000), "s1", T0)
    assert {f[2] for f in fills(book.add(o("sell", 10, 900), "s2", T0))} == {1000}


def test_ioc_remainder_is_canceled():
    book = OrderBook("AAPL", "V1")
    book.add(o("sell", 10, 1000), "s1", T0)
    reports = book.add(o("buy", 25, 1000, tif="ioc", cl_ord_id="ioc"), "s2", T0)
    assert reports[-1].exec_type == "canceled" and reports[-1].cum_qty == 10 and reports[-1].leaves_qty == 0
    assert book.best_bid() is None


def test_cancel_requires_owner_and_live_order():
    book = OrderBook("AAPL", "V1")
    book.add(o("buy", 10, 1000, cl_ord_id="a"), "s1", T0)
    oid = book.order_id_for("s1", "a")
    with pytest.raises(BookError) as exc:
        book.cancel(oid, "intruder", T0)
    assert exc.value.reason == "book.not_owner"
    report = book.cancel(oid, "s1", T0)
    assert report.exec_type == "canceled" and report.leaves_qty == 0
    with pytest.raises(BookError) as exc:
        book.cancel(oid, "s1", T0)
    assert exc.value.reason == "book.unknown_order"


def test_bad_and_duplicate_orders_are_refused():
    book = OrderBook("AAPL", "V1")
    with pytest.raises(BookError):
        book.add(o("buy", 0, 1000), "s1", T0)
    with pytest.raises(BookError):
        book.add(o("buy", 1, 1000, symbol="MSFT"), "s1", T0)
    book.add(o("buy", 1, 1000, cl_ord_id="d"), "s1", T0)
    with pytest.raises(BookError) as exc:
        book.add(o("buy", 1, 1000, cl_ord_id="d"), "s1", T0)
    assert exc.value.reason == "book.duplicate"


def test_replace_down_keeps_priority_up_loses_it():
    book = OrderBook("AAPL", "V1")
    book.add(o("sell", 100, 1000, cl_ord_id="a"), "s1", T0)
    book.add(o("sell", 100, 1000, cl_ord_id="b"), "s2", T0)
    book.replace(book.order_id_for("s1", "a"), "s1", "a2", 50, 1000, T0)
    assert fills(book.add(o("buy", 50, 1000, cl_ord_id="t1"), "s3", T0))[0][0] == "a2"
    book2 = OrderBook("AAPL", "V1")
    book2.add(o("sell", 100, 1000, cl_ord_id="a"), "s1", T0)
    book2.add(o("sell", 100, 1000, cl_ord_id="b"), "s2", T0)
    book2.replace(book2.order_id_for("s1", "a"), "s1", "a2", 150, 1000, T0)
    assert fills(book2.add(o("buy", 50, 1000, cl_ord_id="t1"), "s3", T0))[0][0] == "b"
    with pytest.raises(BookError) as exc:
        book2.replace(book2.order_id_for("s1", "a2"), "s1", "a3", 0, 1000, T0)
    assert exc.value.reason == "book.bad_replace"


def test_replace_to_a_crossing_price_matches():
    book = OrderBook("AAPL", "V1")
    book.add(o("sell", 10, 1010, cl_ord_id="ask"), "s1", T0)
    book.add(o("buy", 10, 1000, cl_ord_id="bid"), "s2", T0)
    reports = book.replace(book.order_id_for("s2", "bid"), "s2", "bid2", 10, 1010, T0)
    assert ("bid2", 10, 1010) in fills(reports)
    book.check_invariants()


def test_cancel_on_disconnect_cancels_only_that_session():
    book = OrderBook("AAPL", "V1")
    book.add(o("buy", 10, 990, cl_ord_id="a"), "gone", T0)
    book.add(o("sell", 10, 1010, cl_ord_id="b"), "gone", T0)
    book.add(o("buy", 10, 980, cl_ord_id="c"), "stays", T0)
    reports = book.cancel_session("gone", T0)
    assert sorted(r.cl_ord_id for r in reports) == ["a", "b"]
    assert all(r.reason == "cancel_on_disconnect" for r in reports)
    assert [x.cl_ord_id for x in book.orders()] == ["c"]


orders_strategy = st.lists(
    st.tuples(st.sampled_from(["buy", "sell"]), st.integers(1, 50), st.integers(95, 105),
              st.sampled_from(["s1", "s2", "s3"]), st.sampled_from(["day", "ioc"]), st.booleans()),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(orders_strategy)
def test_book_invariants_hold_and_quantity_is_conserved(ops):
    book = OrderBook("AAPL", "V1")
    submitted = {"buy": 0, "sell": 0}
    filled = {"buy": 0, "sell": 0}
    canceled = {"buy": 0, "sell": 0}
    for i, (side, qty, price, session, tif, cancel_first) in enumerate(ops):
        if cancel_first and book.orders():
            victim = book.orders()[0]
            canceled[victim.side] += victim.leaves
            book.cancel(victim.order_id, victim.owner, T0)
        submitted[side] += qty
        for r in book.add(o(side, qty, price * 100, tif=tif, cl_ord_id=f"x{i}"), session, T0):
            if r.exec_type in ("fill", "partial_fill"):
                filled[r.side] += r.last_qty
            if r.exec_type == "canceled":
                canceled[r.side] += r.order_qty - r.cum_qty
        book.check_invariants()
    assert filled["buy"] == filled["sell"]
    resting = {"buy": 0, "sell": 0}
    for x in book.orders():
        resting[x.side] += x.leaves
    for side in ("buy", "sell"):
        assert submitted[side] == filled[side] + canceled[side] + resting[side]
