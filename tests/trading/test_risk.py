"""Every 15c3-5 check refuses an order that breaks it, and lets a good one through."""

import msgspec
import pytest

from trustfabric.trading import killswitch as ks
from trustfabric.trading import risk
from trustfabric.trading.errors import RiskRejected
from trustfabric.trading.messages import to_price
from trustfabric.trading.risk import PreTradeRiskChecker, RiskLimits
from tests.trading.builders import ACCOUNT, AGENT, AGENT2, T0, order

MS = 1_000_000


def checker(**limits) -> PreTradeRiskChecker:
    c = PreTradeRiskChecker(RiskLimits(**limits))
    c.update_reference("AAPL", to_price("100.00"), T0)
    return c


def test_good_order_is_approved_and_reserves_credit():
    c = checker()
    result = c.check(order(), T0)
    assert result.approved and result.reason == risk.OK and result.limits_version == 1
    assert c.usage_agent[AGENT] == 100 * to_price("100.00") == c.usage_firm


def test_result_is_immutable_and_raises_on_reject():
    c = checker()
    result = c.check(order(qty=0), T0)
    with pytest.raises(AttributeError):
        result.approved = True  # type: ignore[misc]
    with pytest.raises(RiskRejected) as exc:
        result.raise_for_reject()
    assert exc.value.reason == risk.ORDER_BAD_QTY


@pytest.mark.parametrize("fields,reason", [
    ({"qty": 0}, risk.ORDER_BAD_QTY),
    ({"qty": -5}, risk.ORDER_BAD_QTY),
    ({"price": 0}, risk.ORDER_BAD_PRICE),
    ({"price": to_price("100.005")}, risk.ORDER_BAD_TICK),
    ({"side": "short"}, risk.ORDER_BAD_SIDE),
    ({"tif": "fok"}, risk.ORDER_BAD_TIF),
    ({"account": ""}, risk.ORDER_BAD_FIELD),
])
def test_malformed_orders_are_refused(fields, reason):
    assert checker().check(order(**fields), T0).reason == reason


def test_sub_dollar_prices_use_the_finer_tick():
    c = checker()
    c.update_reference("MULN", to_price("0.2154"), T0)
    assert c.check(order(symbol="MULN", price=to_price("0.2155")), T0).approved


def test_price_collar_by_band():
    c = checker()
    c.update_reference("PENNY", to_price("4.00"), T0)  # 10% band
    c.update_reference("MID", to_price("40.00"), T0)  # 5% band
    # above $50: 3% band (AAPL at $100)
    assert c.check(order(price=to_price("103.00")), T0).approved
    assert c.check(order(price=to_price("103.01")), T0).reason == risk.PRICE_COLLAR
    assert c.check(order(price=to_price("96.99"), side="sell"), T0).reason == risk.PRICE_COLLAR
    assert c.check(order(symbol="MID", price=to_price("42.00")), T0).approved
    assert c.check(order(symbol="MID", price=to_price("42.01")), T0).reason == risk.PRICE_COLLAR
    assert c.check(order(symbol="PENNY", price=to_price("4.40")), T0).approved
    assert c.check(order(symbol="PENNY", price=to_price("4.41")), T0).reason == risk.PRICE_COLLAR


def test_no_reference_price_is_a_reject():
    assert checker().check(order(symbol="ZZZZ"), T0).reason == risk.NO_REFERENCE


def test_stale_reference_is_a_reject_when_configured():
    c = checker(max_reference_age_ns=1_000 * MS)
    assert c.check(order(), T0 + 500 * MS).approved
    assert c.check(order(price=to_price("100.01")), T0 + 2_000 * MS).reason == risk.STALE_REFERENCE


def test_max_qty_and_max_notional_per_order():
    c = checker(max_order_qty=500, max_order_notional=to_price("40000"))
    assert c.check(order(qty=400), T0).approved
    assert c.check(order(qty=501), T0).reason == risk.MAX_QTY
    assert c.check(order(qty=401, price=to_price("100.00")), T0).reason == risk.MAX_NOTIONAL


def test_duplicate_clordid_is_refused_even_much_later():
    c = checker()
    assert c.check(order(cl_ord_id="X1"), T0).approved
    assert c.check(order(cl_ord_id="X1", qty=7), T0 + 10**12).reason == risk.DUP_CLORDID
    # the same id from another agent is a different order
    assert c.check(order(cl_ord_id="X1", agent=AGENT2), T0).approved


def test_duplicate_window_refuses_identical_orders_within_n_ms():
    c = checker(dup_window_ns=100 * MS)
    assert c.check(order(qty=10), T0).approved
    assert c.check(order(qty=10), T0 + 50 * MS).reason == risk.DUP_WINDOW
    assert c.check(order(qty=11), T0 + 50 * MS).approved  # different qty
    assert c.check(order(qty=10), T0 + 151 * MS).approved  # outside the window


def test_throttle_is_a_token_bucket_on_injected_time():
    c = checker(rate_per_s=100.0, burst=100, dup_window_ns=0)
    results = [c.check(order(qty=1 + i % 50), T0).reason for i in range(101)]
    assert results[:100] == [risk.OK] * 100
    assert results[100] == risk.THROTTLE
    # another agent has its own bucket
    assert c.check(order(agent=AGENT2), T0).approved
    # 10 ms later: one token back
    assert c.check(order(qty=77), T0 + 10 * MS).approved
    assert c.check(order(qty=78), T0 + 10 * MS).reason == risk.THROTTLE


def test_restricted_list():
    c = checker(restricted=frozenset({"AAPL"}))
    assert c.check(order(), T0).reason == risk.RESTRICTED


@pytest.mark.parametrize("limits,reason", [
    ({"default_agent_credit": to_price("15000")}, risk.CREDIT_AGENT),
    ({"default_account_credit": to_price("15000")}, risk.CREDIT_ACCOUNT),
    ({"firm_credit": to_price("15000")}, risk.CREDIT_FIRM),
])
def test_aggregate_credit_limits(limits, reason):
    c = checker(**limits)
    assert c.check(order(qty=100), T0).approved  # $10,000 used
    result = c.check(order(qty=60), T0)  # +$6,000 > $15,000
    assert result.reason == reason and not result.approved
    assert c.check(order(qty=50), T0).approved  # exactly $15,000 is within


def test_prealert_at_70_percent_is_a_warning_not_a_reject():
    c = checker(default_agent_credit=to_price("10000"), agent_credit={AGENT2: to_price("1000000")})
    first = c.check(order(qty=60), T0)
    assert first.approved and first.warnings == ()
    second = c.check(order(qty=10), T0)  # 70%
    assert second.approved and risk.PREALERT_AGENT in second.warnings


def test_cancels_release_credit_and_fills_keep_it():
    c = checker(default_agent_credit=to_price("10000"), dup_window_ns=0)
    assert c.check(order(cl_ord_id="A", qty=100), T0).approved
    assert c.check(order(cl_ord_id="B", qty=1), T0).reason == risk.CREDIT_AGENT
    c.on_order_done(AGENT, "A")
    assert c.check(order(cl_ord_id="C", qty=100), T0).approved
    c.on_fill(AGENT, "C", 100, to_price("100.00"))
    assert c.check(order(cl_ord_id="D", qty=1, price=to_price("100.01")), T0).reason == risk.CREDIT_AGENT


def test_limits_version_must_increase():
    c = checker()
    c.set_limits(RiskLimits(version=2))
    assert c.check(order(), T0).limits_version == 2
    with pytest.raises(ValueError):
        c.set_limits(RiskLimits(version=2))


def test_unexpected_input_fails_closed():
    c = checker()

    class Weird:
        cl_ord_id = "W"
        qty = 1
        price = 100
        side = "buy"
        tif = "day"
        agent = AGENT
        account = ACCOUNT
        symbol = ["AAPL"]  # unhashable: a lookup deep in the checks raises TypeError

    result = c.check(Weird(), T0)  # type: ignore[arg-type]
    assert not result.approved and result.reason == risk.INTERNAL


def _operator(name="alice"):
    return ks.Operator(name, privileged=True, mfa_at=T0 / 1e9)


def test_halted_agent_account_and_firm_refuse_everything():
    for scope, target in ((ks.AGENT, AGENT), (ks.ACCOUNT, ACCOUNT), (ks.FIRM, "")):
        c = checker()
        c.killswitch.halt(scope, target, _operator(), T0 / 1e9)
        assert c.check(order(), T0).reason == risk.HALTED
    c = checker()
    c.killswitch.halt(ks.AGENT, AGENT2, _operator(), T0 / 1e9)
    assert c.check(order(), T0).approved  # someone else's halt


def test_reducing_allows_only_orders_that_shrink_the_position():
    c = checker()
    assert c.check(order(cl_ord_id="L", qty=100), T0).approved
    c.on_fill(AGENT, "L", 100, to_price("100.00"))  # long 100
    c.killswitch.reduce(ks.AGENT, AGENT, _operator(), T0 / 1e9)
    assert c.check(order(side="buy", qty=10), T0).reason == risk.REDUCING_ONLY
    assert c.check(order(side="sell", qty=101), T0).reason == risk.REDUCING_ONLY
    assert c.check(order(cl_ord_id="S1", side="sell", qty=60), T0).approved
    # 60 already working on the sell side: 50 more would flip the position
    assert c.check(order(side="sell", qty=50), T0).reason == risk.REDUCING_ONLY
    assert c.check(order(side="sell", qty=40), T0).approved


def test_reducing_with_no_position_refuses_both_sides():
    c = checker()
    c.killswitch.reduce(ks.FIRM, "", _operator(), T0 / 1e9)
    assert c.check(order(side="buy"), T0).reason == risk.REDUCING_ONLY
    assert c.check(order(side="sell"), T0).reason == risk.REDUCING_ONLY


def test_limits_struct_is_frozen():
    limits = RiskLimits()
    with pytest.raises(AttributeError):
        limits.firm_credit = 0  # type: ignore[misc]
    assert msgspec.structs.replace(limits, version=2).version == 2


# --- properties: usage is exact and limits hold whatever the sequence -------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["new", "fill", "done"]), st.integers(1, 300),
                          st.integers(-300, 300), st.sampled_from([AGENT, AGENT2])), max_size=60))
def test_credit_usage_never_exceeds_limits_and_matches_working_plus_executed(ops):
    limit = to_price("50000")
    c = checker(default_agent_credit=limit, default_account_credit=limit, firm_credit=limit * 3 // 2,
                dup_window_ns=0)
    live: list[tuple[str, str]] = []
    for i, (op, qty, tick_offset, agent) in enumerate(ops):
        if op == "new":
            o = order(cl_ord_id=f"p{i}", agent=agent, qty=qty, price=to_price("100.00") + 100 * (tick_offset // 10))
            if c.check(o, T0 + i).approved:
                live.append((agent, o.cl_ord_id))
        elif live and op == "fill":
            agent_, cl = live[qty % len(live)]
            c.on_fill(agent_, cl, qty // 3 + 1, to_price("99.00"))
        elif live:
            c.on_order_done(*live.pop(qty % len(live)))
        assert 0 <= c.usage_firm <= limit * 3 // 2
        for a in (AGENT, AGENT2):
            assert 0 <= c.usage_agent.get(a, 0) <= limit
        working = sum(w.leaves * w.price for w in c.working.values())
        assert working <= c.usage_firm


def test_band_and_tick_helpers():
    assert [risk.collar_percent(to_price(p)) for p in ("4.99", "5.00", "5.01", "50.00", "50.01")] == [10, 10, 5, 5, 3]
    assert risk.tick_size(to_price("0.9999")) == 1 and risk.tick_size(to_price("1.00")) == 100


def test_new_day_resets_ids_and_executed_usage_but_keeps_working_reservations():
    c = checker(default_agent_credit=to_price("15000"), dup_window_ns=0)
    assert c.check(order(cl_ord_id="A", qty=100), T0).approved
    c.on_fill(AGENT, "A", 100, to_price("100.00"))
    assert c.check(order(cl_ord_id="B", qty=40), T0).approved  # working
    assert c.check(order(cl_ord_id="C", qty=20), T0).reason == risk.CREDIT_AGENT
    c.new_day()
    assert c.usage_agent[AGENT] == 40 * to_price("100.00")
    assert c.check(order(cl_ord_id="A", qty=100), T0).approved  # yesterday's id is usable again
    assert c.check(order(cl_ord_id="D", qty=20), T0).reason == risk.CREDIT_AGENT
    assert c.positions[(ks.AGENT, AGENT, "AAPL")] == 100
