"""The service cores wired together in one process: algo -> risk -> router -> venues -> OMS -> settlement."""

import random

import msgspec
import pytest

from trustfabric.audit.events import Emitter, Kind, MemorySink
from trustfabric.clock import FakeClock
from trustfabric.trading import killswitch as ks
from trustfabric.trading.approval import ApprovalKeyring, ApprovalSigner, ApprovalVerifier
from trustfabric.trading.errors import KillSwitchRefused
from trustfabric.trading.cores import OmsCore, RiskCore, RouterCore, SettlementCore, VenueCore, risk_view
from trustfabric.trading.marketdata import MarketDataGenerator
from trustfabric.trading.messages import CancelOrder, NewOrder, Quote, ReplaceOrder, RoutedOrder
from trustfabric.trading.risk import PreTradeRiskChecker, RiskLimits
from trustfabric.trading.settlement import CLEARING
from trustfabric.trading.strategies import CancelIntent, MeanReversion, Momentum, OrderIntent
from tests.trading.builders import AGENT, AGENT2, T0, order


class WiredCores:
    """The cores of one floor in one process, wired by hand (no transport, no enforcement)."""

    def __init__(self, limits: RiskLimits | None = None):
        self.sink = MemorySink()
        clock = FakeClock(T0 / 1e9)
        ring = ApprovalKeyring.generate("k1")
        self.risk = RiskCore(PreTradeRiskChecker(limits or RiskLimits(dup_window_ns=0)), ApprovalSigner(ring),
                                 Emitter("pre-trade-risk", self.sink, clock))
        self.router = RouterCore(ApprovalVerifier(ring), ["V1", "V2"], Emitter("router", self.sink, clock))
        self.venues = {"V1": VenueCore("V1"), "V2": VenueCore("V2")}
        self.oms = OmsCore()
        self.settlement = SettlementCore()
        for account in ("ACC-1", "ACC-nrev", "ACC-ntum"):
            self.settlement.fund(account, 10**13, f"deposit-{account}")
        self.routed = 0

    def quote(self, symbol, bid, ask, t=T0):
        self.risk.on_market_data(Quote(symbol=symbol, bid=bid, bid_size=1, ask=ask, ask_size=1, time_ns=t))

    def refresh_books(self, symbol):
        for venue in self.venues.values():
            self.router.update_book(venue.snapshot(symbol))

    def submit(self, o: NewOrder, principal: str, now=T0):
        result, approval = self.risk.handle_new_order(o, principal, now)
        if not result.approved:
            return result, None
        self.oms.on_new_order(o)
        self.refresh_books(o.symbol)
        outcome = self.router.handle(RoutedOrder(order=o, approval=approval), now)
        assert outcome.reject is None
        self.routed += 1
        self.oms.on_routed(o.cl_ord_id, outcome.children)
        for child in outcome.children:
            for report in self.venues[child.venue].handle_order(child.order, "router", now):
                self.on_report(report)
        return result, outcome

    def on_report(self, report):
        if report.cl_ord_id not in self.oms.parent_of and report.cl_ord_id not in self.oms.manager.orders:
            return  # the market maker's own orders
        update = self.oms.on_execution_report(report)
        for fill in update.fills:
            self.risk.on_fill(fill)
            self.settlement.on_fill(fill)
        for agent, cl_ord_id in update.done:
            self.risk.on_order_done(agent, cl_ord_id)

    def make_market(self, symbol, bid, ask, size):
        for venue, extra in (("V1", 0), ("V2", 100)):
            self.venues[venue].handle_order(order(agent="mm", account="MM", symbol=symbol, side="sell", qty=size,
                                                  price=ask + extra), "mm", T0)
            self.venues[venue].handle_order(order(agent="mm", account="MM", symbol=symbol, side="buy", qty=size,
                                                  price=bid - extra), "mm", T0)


def test_order_flows_end_to_end_and_splits_across_venues():
    floor = WiredCores()
    floor.quote("AAPL", 1_000_000, 1_000_200)
    floor.make_market("AAPL", 1_000_000, 1_000_200, 100)
    o = order(qty=150, price=1_000_300)
    result, outcome = floor.submit(o, AGENT)
    assert result.approved and {c.venue for c in outcome.children} == {"V1", "V2"}
    record = floor.oms.manager.orders[o.cl_ord_id]
    assert record.state == "Filled" and record.cum_qty == 150
    snap = floor.oms.manager.snapshot(o.account, "AAPL", T0)
    assert snap.qty == 150
    instructions = floor.settlement.end_of_day("2026-11-27")
    assert instructions[0].net_qty == 150 and instructions[0].net_cash == -(100 * 1_000_200 + 50 * 1_000_300)
    assert floor.risk.checker.positions[(ks.AGENT, AGENT, "AAPL")] == 150
    assert floor.risk.checker.working == {}
    decisions = floor.sink.of_kind(Kind.DECISION)
    assert decisions[0].decision == "allow" and decisions[0].trace_id == o.cl_ord_id


def test_risk_refuses_an_order_submitted_for_another_principal():
    floor = WiredCores()
    floor.quote("AAPL", 1_000_000, 1_000_200)
    result, _ = floor.risk.handle_new_order(order(agent=AGENT2), AGENT, T0)
    assert not result.approved and result.reason == "risk.principal_mismatch"
    assert floor.sink.of_kind(Kind.DECISION)[-1].decision == "deny"


def test_router_refuses_orders_without_valid_approval():
    floor = WiredCores()
    floor.quote("AAPL", 1_000_000, 1_000_200)
    o = order()
    _, approval = floor.risk.handle_new_order(o, AGENT, T0)
    bypass = floor.router.handle(RoutedOrder(order=o), T0)
    assert bypass.reject.reason == "approval.missing" and bypass.children == ()
    forged = msgspec.structs.replace(approval, mac=bytes(32))
    assert floor.router.handle(RoutedOrder(order=o, approval=forged), T0).reject.reason == "approval.forged"
    bigger = msgspec.structs.replace(o, qty=5_000)
    assert floor.router.handle(RoutedOrder(order=bigger, approval=approval), T0).reject.reason == "approval.altered"
    assert floor.router.handle(RoutedOrder(order=o, approval=approval), T0).reject is None
    replay = floor.router.handle(RoutedOrder(order=o, approval=approval), T0 + 1)
    assert replay.reject.reason == "approval.replayed"
    denies = [e for e in floor.sink.of_kind(Kind.DECISION) if e.source == "router"]
    assert [e.reason for e in denies] == ["approval.missing", "approval.forged", "approval.altered",
                                          "approval.replayed"]


def test_halt_cancels_working_orders_and_needs_privileged_mfa():
    floor = WiredCores()
    floor.quote("AAPL", 1_000_000, 1_000_200)
    o = order(qty=10, price=990_000)  # rests: no liquidity
    floor.submit(o, AGENT)
    mallory = ks.Operator("mallory", privileged=False, mfa_at=T0 / 1e9)
    with pytest.raises(KillSwitchRefused):
        floor.risk.kill_switch("halt", ks.AGENT, AGENT, mallory, T0 / 1e9)
    denied = floor.sink.of_kind(Kind.ADMIN_ACTION)[-1]
    assert denied.decision == "deny" and denied.reason == ks.NOT_PRIVILEGED
    alice = ks.Operator("alice", privileged=True, mfa_at=T0 / 1e9)
    change = floor.risk.kill_switch("halt", ks.AGENT, AGENT, alice, T0 / 1e9)
    assert [c.cl_ord_id for c in change.cancels] == [o.cl_ord_id]
    for venue, cancel in floor.router.cancels_for(CancelOrder(cl_ord_id="k1", orig_cl_ord_id=o.cl_ord_id,
                                                              account=o.account, agent=AGENT, symbol="AAPL",
                                                              side="buy")):
        for report in floor.venues[venue].handle_cancel(cancel, "router", T0):
            floor.on_report(report)
    assert floor.oms.manager.orders[o.cl_ord_id].state == "Canceled"
    assert floor.risk.checker.working == {}
    assert floor.risk.handle_new_order(order(), AGENT, T0)[0].reason == "risk.halted"


def test_venue_disconnect_cancels_the_router_session_orders():
    floor = WiredCores()
    floor.quote("AAPL", 1_000_000, 1_000_200)
    o = order(qty=10, price=990_000)
    floor.submit(o, AGENT)
    reports = [r for v in floor.venues.values() for r in v.disconnect("router", T0)]
    assert len(reports) == 1 and reports[0].reason == "cancel_on_disconnect"
    floor.on_report(reports[0])
    assert floor.oms.manager.orders[o.cl_ord_id].state == "Canceled"


def test_simulated_session_with_two_strategies_keeps_every_invariant():
    limits = RiskLimits(dup_window_ns=0, max_order_qty=1_000)
    floor = WiredCores(limits)
    gen = MarketDataGenerator(random.Random(42))
    symbols = gen.symbols[:6]
    agents = {AGENT: MeanReversion(symbols, window=10, threshold_bps=5),
              AGENT2: Momentum(symbols, short_window=3, long_window=10)}
    refs: dict[str, str] = {}
    approved = rejected = 0
    for step in range(150):
        now = T0 + step * 100_000_000
        for event in gen.step(1.0, now):
            floor.risk.on_market_data(event)
            if not isinstance(event, Quote) or event.symbol not in symbols:
                continue
            if step % 10 == 0:  # the market maker refreshes liquidity
                floor.make_market(event.symbol, event.bid, event.ask, 300)
            for agent, strategy in agents.items():
                for intent in strategy.on_quote(event):
                    if isinstance(intent, CancelIntent):
                        continue
                    assert isinstance(intent, OrderIntent)
                    cl = f"{agent[-4:]}-{intent.ref}"
                    refs[cl] = agent
                    o = NewOrder(cl_ord_id=cl, account="ACC-" + agent[-4:], agent=agent, symbol=intent.symbol,
                                 side=intent.side, qty=intent.qty, price=intent.price, tif=intent.tif, time_ns=now)
                    result, _ = floor.submit(o, agent, now)
                    approved += result.approved
                    rejected += not result.approved
    assert approved > 20
    fills = floor.oms.fills
    assert fills and all(f.cl_ord_id in refs for f in fills)
    # every routed order had risk's approval: nothing bypassed
    assert floor.routed == approved
    assert all(use >= 0 for use in floor.risk.checker.usage_agent.values())
    for record in floor.oms.manager.orders.values():
        assert 0 <= record.cum_qty <= record.order.qty
    instructions = floor.settlement.end_of_day("2026-11-27")
    assert sum(i.fills for i in instructions) == len(fills)
    ledger = floor.settlement.ledger
    assert ledger.total() == 0
    assert all(balance >= 0 for account, balance in ledger.balances.items() if account.startswith("ACC"))
    assert ledger.balance(CLEARING) == -sum(i.net_cash for i in instructions)


def test_gateway_may_submit_for_clients_but_not_arbitrary_callers():
    ring = ApprovalKeyring.generate("k1")
    gw = "spiffe://test.acme/gateway/fix"
    risk = RiskCore(PreTradeRiskChecker(RiskLimits()), ApprovalSigner(ring), gateways=frozenset({gw}))
    risk.on_market_data(Quote(symbol="AAPL", bid=1_000_000, bid_size=1, ask=1_000_000, ask_size=1, time_ns=T0))
    o = order(agent="spiffe://test.acme/clients/c1")
    result, approval = risk.handle_new_order(o, gw, T0)
    assert result.approved and approval.principal == o.agent  # the originating principal, not the gateway
    ApprovalVerifier(ring).verify(approval, o, T0)
    result, _ = risk.handle_new_order(order(agent="spiffe://test.acme/clients/c1"), AGENT2, T0)
    assert result.reason == "risk.principal_mismatch"


def test_cancel_and_replace_through_risk_need_the_owner():
    floor = WiredCores()
    floor.quote("AAPL", 1_000_000, 1_000_200)
    o = order(qty=10, price=990_000)
    floor.submit(o, AGENT)
    cancel = CancelOrder(cl_ord_id="c1", orig_cl_ord_id=o.cl_ord_id, account=o.account, agent=AGENT,
                         symbol="AAPL", side="buy")
    assert floor.risk.handle_cancel(cancel, AGENT, T0) is None
    assert floor.risk.handle_cancel(cancel, AGENT2, T0).reason == "risk.principal_mismatch"
    foreign = msgspec.structs.replace(cancel, agent=AGENT2)
    assert floor.risk.handle_cancel(foreign, AGENT2, T0).reason == "risk.unknown_order"
    replace = ReplaceOrder(cl_ord_id="r1", orig_cl_ord_id=o.cl_ord_id, account=o.account, agent=AGENT,
                           symbol="AAPL", side="buy", qty=20, price=1_500_000)
    assert floor.risk.handle_replace(replace, AGENT, T0)[0].reason == "risk.price_collar"
    ok, approval = floor.risk.handle_replace(msgspec.structs.replace(replace, cl_ord_id="r2", price=995_000),
                                             AGENT, T0)
    assert ok.approved and approval.cl_ord_id == "r2"
    unknown = msgspec.structs.replace(replace, cl_ord_id="r3", orig_cl_ord_id="nope")
    assert floor.risk.handle_replace(unknown, AGENT, T0)[0].reason == "risk.unknown_order"


def test_parent_reports_and_risk_view():
    floor = WiredCores(RiskLimits(dup_window_ns=0, default_agent_credit=200_000_000))
    floor.quote("AAPL", 1_000_000, 1_000_200)
    floor.make_market("AAPL", 1_000_000, 1_000_200, 100)
    o = order(qty=150, price=1_000_300)
    floor.risk.handle_new_order(o, AGENT, T0)
    floor.oms.on_new_order(o)
    floor.refresh_books("AAPL")
    floor.risk.handle_new_order(order(qty=1), AGENT, T0)
    view = risk_view(floor.risk.checker)
    agent_row = [u for u in view.usage if u.scope == "agent"][0]
    assert agent_row.used == 150 * 1_000_300 + 1_000_000 and agent_row.percent > 70
    assert view.working_orders == 2 and view.kill_switch == ()
    new_report = floor.oms.on_routed(o.cl_ord_id, [RoutedOrder(order=msgspec.structs.replace(o, cl_ord_id="x.1"),
                                                                venue="V1")], T0)
    assert new_report.exec_type == "new" and new_report.leaves_qty == 150
    reports = floor.venues["V1"].handle_order(msgspec.structs.replace(o, cl_ord_id="x.1"), "router", T0)
    updates = [floor.oms.on_execution_report(r) for r in reports if r.cl_ord_id == "x.1"]
    parent = [u.report for u in updates if u.report is not None]
    assert [r.exec_type for r in parent] == ["partial_fill"] and parent[0].cum_qty == 100


def test_oms_reject_reports_and_releases():
    floor = WiredCores()
    o = order()
    floor.oms.on_new_order(o)
    update = floor.oms.on_reject(o.cl_ord_id, "route.no_venue", T0)
    assert update.report.exec_type == "rejected" and update.done == ((o.agent, o.cl_ord_id),)
