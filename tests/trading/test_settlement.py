"""End-of-day netting conserves shares and cash; the ledger is double entry and never silently negative."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trustfabric.trading.errors import LedgerError
from trustfabric.trading.messages import Fill
from trustfabric.trading.settlement import CLEARING, CashLedger, JournalEntry, Posting, net_fills


def f(account, symbol, side, qty, price, i=[0]):
    i[0] += 1
    return Fill(exec_id=f"e{i[0]}", cl_ord_id="o", account=account, agent="g", symbol=symbol, side=side, qty=qty,
                price=price, venue="V", time_ns=0)


def test_netting_per_account_and_symbol():
    fills = [f("A", "AAPL", "buy", 100, 1000), f("A", "AAPL", "sell", 30, 1100), f("A", "MSFT", "sell", 5, 4000),
             f("B", "AAPL", "sell", 70, 1050)]
    out = {(i.account, i.symbol): (i.net_qty, i.net_cash, i.fills) for i in net_fills(fills, "2026-11-27")}
    assert out == {("A", "AAPL"): (70, -100 * 1000 + 30 * 1100, 2), ("A", "MSFT"): (-5, 20_000, 1),
                   ("B", "AAPL"): (-70, 70 * 1050, 1)}


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("ABC"), st.sampled_from(["X", "Y"]), st.sampled_from(["buy", "sell"]),
                          st.integers(1, 10_000), st.integers(1, 10_000_000)), max_size=50))
def test_netting_conserves_quantity_and_cash(rows):
    fills = [f(*r) for r in rows]
    instructions = net_fills(fills, "d")
    assert sum(i.net_qty for i in instructions) == sum(x.qty if x.side == "buy" else -x.qty for x in fills)
    assert sum(i.net_cash for i in instructions) == sum(
        -x.qty * x.price if x.side == "buy" else x.qty * x.price for x in fills)
    assert sum(i.fills for i in instructions) == len(fills)
    ledger = CashLedger()
    ledger.open_account(CLEARING, overdraft_limit=10**18)
    for a in "ABC":
        ledger.open_account(a, overdraft_limit=10**18)
    ledger.settle(instructions)
    assert ledger.total() == 0


def test_ledger_refuses_overdraft_and_changes_nothing():
    ledger = CashLedger()
    ledger.open_account("bank", overdraft_limit=10**12)
    ledger.open_account("A")
    ledger.open_account("B")
    ledger.transfer("fund", "bank", "A", 1000)
    with pytest.raises(LedgerError) as exc:
        ledger.post(JournalEntry("x", (Posting("A", -1500), Posting("B", 1500))))
    assert exc.value.reason == "ledger.insufficient_funds"
    assert (ledger.balance("A"), ledger.balance("B"), ledger.total()) == (1000, 0, 0)


@pytest.mark.parametrize("entry,reason", [
    (JournalEntry("u", (Posting("A", -10), Posting("B", 9))), "ledger.unbalanced"),
    (JournalEntry("e", ()), "ledger.unbalanced"),
    (JournalEntry("k", (Posting("A", -10), Posting("Z", 10))), "ledger.unknown_account"),
    (JournalEntry("f", (Posting("A", -1.5), Posting("B", 1.5))), "ledger.bad_amount"),  # type: ignore[arg-type]
])
def test_ledger_refuses_bad_entries(entry, reason):
    ledger = CashLedger()
    ledger.open_account("A", overdraft_limit=100)
    ledger.open_account("B")
    with pytest.raises(LedgerError) as exc:
        ledger.post(entry)
    assert exc.value.reason == reason
    assert ledger.balances == {"A": 0, "B": 0}


def test_duplicate_entries_and_bad_transfers_are_refused():
    ledger = CashLedger()
    ledger.open_account("A", overdraft_limit=100)
    ledger.open_account("B")
    ledger.transfer("t1", "A", "B", 50)
    with pytest.raises(LedgerError) as exc:
        ledger.transfer("t1", "A", "B", 50)
    assert exc.value.reason == "ledger.duplicate_entry"
    with pytest.raises(LedgerError):
        ledger.transfer("t2", "A", "B", -5)
    with pytest.raises(LedgerError):
        ledger.balance("nobody")


def test_settlement_that_would_overdraw_an_account_is_refused_whole():
    ledger = CashLedger()
    ledger.open_account(CLEARING, overdraft_limit=10**18)
    ledger.open_account("A")
    ledger.open_account("B")
    instructions = net_fills([f("A", "X", "sell", 1, 100), f("B", "X", "buy", 1, 100)], "d")
    with pytest.raises(LedgerError):
        ledger.settle(instructions)
    assert ledger.balances == {CLEARING: 0, "A": 0, "B": 0}
