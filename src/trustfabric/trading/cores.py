"""Service cores of the trading floor: everything a service does except I/O.

Each class is what one floor process runs; whoever wraps it into a process only
adds the transport, the enforcement point and the event loop:

* :class:`RiskCore`   ``handle_new_order(order, principal, now_ns) -> (RiskResult, RiskApproval | None)``;
  market data feeds references, execution feedback feeds usage and positions,
  operators drive the kill switch (halting returns the cancels to send).
* :class:`RouterCore`     ``handle(routed, now_ns) -> RouteOutcome``: verifies the
  approval bound to the order, then splits it across venues (SOR).
* :class:`VenueCore`      one venue: books per symbol, reports, cancel-on-disconnect.
* :class:`OmsCore`        parent orders, child execution reports -> fills, states, positions, P&L.
* :class:`SettlementCore` the day's fills -> netting instructions -> cash ledger.
* :func:`risk_view`       the risk dashboard's read-only view of limits, usage and positions.

Every refusal is returned as a :class:`~trustfabric.trading.messages.Reject` with its
reason code (and, when an emitter is given, an audit event); no exception in a
core turns into an allow.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import msgspec

from trustfabric.audit.events import Emitter, Kind
from trustfabric.trading import killswitch as ks
from trustfabric.trading import oms as oms_mod
from trustfabric.trading.approval import ApprovalSigner, ApprovalVerifier
from trustfabric.trading.book import OrderBook
from trustfabric.trading.errors import TradingError
from trustfabric.trading.messages import (
    CancelOrder,
    ExecutionReport,
    Fill,
    NewOrder,
    Quote,
    PositionSnapshot,
    Reject,
    ReplaceOrder,
    RiskApproval,
    RoutedOrder,
    SettlementInstruction,
    Trade,
)
from trustfabric.trading.risk import PRINCIPAL_MISMATCH, UNKNOWN_ORDER, PreTradeRiskChecker, RiskResult
from trustfabric.trading.settlement import CLEARING, CashLedger, net_fills
from trustfabric.trading.sor import VenueBook, route

ROUTER_INTERNAL = "route.internal"
FUNDING = "funding"  # outside money: deposits come from here
ROUTER_UNKNOWN_VENUE = "route.unknown_venue"


class RiskCore:
    """The pre-trade-risk service core (SEC 15c3-5), signing approvals for the router."""

    def __init__(self, checker: PreTradeRiskChecker, signer: ApprovalSigner, emitter: Emitter | None = None, *,
                 gateways: frozenset[str] = frozenset()) -> None:
        self.checker = checker
        self.signer = signer
        self.emitter = emitter
        self.gateways = gateways  # callers (the FIX gateway) that submit for the clients they authenticated

    def _may_act_for(self, principal: str, agent: str) -> bool:
        return principal == agent or principal in self.gateways

    def handle_new_order(self, order: NewOrder, principal: str, now_ns: int) -> tuple[RiskResult, RiskApproval | None]:
        """Check one order from ``principal`` (the authenticated caller); sign it if approved.

        The approval names the order's originating principal (``order.agent``); only that
        principal itself, or a configured gateway acting for it, may submit.
        """
        if not self._may_act_for(principal, order.agent):
            result = RiskResult(False, PRINCIPAL_MISMATCH, order.cl_ord_id, self.checker.limits.version,
                                detail=f"{principal} submitted for {order.agent}")
        else:
            result = self.checker.check(order, now_ns)
        approval = None
        if result.approved:
            try:
                approval = self.signer.sign(order, order.agent, result.limits_version, now_ns)
            except Exception as exc:  # cannot sign -> cannot approve
                self.checker.on_order_done(order.agent, order.cl_ord_id)
                result = RiskResult(False, "risk.internal", order.cl_ord_id, result.limits_version,
                                    detail=type(exc).__name__)
        if self.emitter is not None:
            self.emitter.emit(Kind.DECISION, trace_id=order.cl_ord_id, principal=principal, action="risk.check",
                              resource=order.symbol, decision="allow" if result.approved else "deny",
                              reason=result.reason, detail={"warnings": list(result.warnings),
                                                            "limits_version": result.limits_version})
        return result, approval

    def handle_cancel(self, cancel: CancelOrder, principal: str, now_ns: int) -> Reject | None:
        """A cancel passes (``None``) only from the owner of a working order. Cancels reduce risk:
        they are not throttled and pass in every kill-switch state."""
        if not self._may_act_for(principal, cancel.agent):
            return Reject(ref_id=cancel.cl_ord_id, reason=PRINCIPAL_MISMATCH, time_ns=now_ns)
        if not self.checker.is_working(cancel.agent, cancel.orig_cl_ord_id):
            return Reject(ref_id=cancel.cl_ord_id, reason=UNKNOWN_ORDER, time_ns=now_ns)
        return None

    def handle_replace(self, replace: ReplaceOrder, principal: str, now_ns: int
                       ) -> tuple[RiskResult, RiskApproval | None]:
        """A replace is checked as a new order under its new ClOrdID (every check applies again).

        The old order's reservation is released only when the venue confirms the
        replace (``on_order_done``), so credit is briefly counted twice: fail safe.
        """
        if not self._may_act_for(principal, replace.agent) or not self.checker.is_working(
                replace.agent, replace.orig_cl_ord_id):
            reason = UNKNOWN_ORDER if self._may_act_for(principal, replace.agent) else PRINCIPAL_MISMATCH
            return RiskResult(False, reason, replace.cl_ord_id, self.checker.limits.version), None
        order = NewOrder(cl_ord_id=replace.cl_ord_id, account=replace.account, agent=replace.agent,
                         symbol=replace.symbol, side=replace.side, qty=replace.qty, price=replace.price,
                         time_ns=replace.time_ns)
        return self.handle_new_order(order, principal, now_ns)

    def reject_for(self, result: RiskResult, now_ns: int) -> Reject:
        return Reject(ref_id=result.cl_ord_id, reason=result.reason, detail=result.detail, time_ns=now_ns)

    def on_market_data(self, event: Quote | Trade) -> None:
        if isinstance(event, Quote):
            if event.bid > 0 and event.ask >= event.bid:
                self.checker.update_reference(event.symbol, (event.bid + event.ask) // 2, event.time_ns)
        else:
            self.checker.update_reference(event.symbol, event.price, event.time_ns)

    def on_fill(self, fill: Fill) -> None:
        self.checker.on_fill(fill.agent, fill.cl_ord_id, fill.qty, fill.price)

    def on_order_done(self, agent: str, cl_ord_id: str) -> None:
        self.checker.on_order_done(agent, cl_ord_id)

    # kill switch ------------------------------------------------------------------------------------
    def _admin(self, change: ks.KillSwitchChange, action: str) -> ks.KillSwitchChange:
        if self.emitter is not None:
            self.emitter.emit(Kind.ADMIN_ACTION, principal=change.operator, action=f"killswitch.{action}",
                              resource=f"{change.scope}:{change.target}", decision="allow",
                              detail={"state": change.state, "cancels": len(change.cancels)})
        return change

    def _refused(self, exc: TradingError, operator: ks.Operator, action: str, scope: str, target: str) -> None:
        if self.emitter is not None:
            self.emitter.emit(Kind.ADMIN_ACTION, principal=operator.principal, action=f"killswitch.{action}",
                              resource=f"{scope}:{target}", decision="deny", reason=exc.reason)

    def kill_switch(self, action: str, scope: str, target: str, operator: ks.Operator, now: float
                    ) -> ks.KillSwitchChange:
        """``halt`` / ``reduce`` / ``request_resume`` / ``approve_resume``; raises KillSwitchRefused."""
        switch = self.checker.killswitch
        try:
            if action == "halt":
                change = switch.halt(scope, target, operator, now, self.checker.working_refs())
            elif action == "reduce":
                change = switch.reduce(scope, target, operator, now)
            elif action == "request_resume":
                change = switch.request_resume(scope, target, operator, now)
            elif action == "approve_resume":
                change = switch.approve_resume(scope, target, operator, now)
            else:
                raise ks.KillSwitchRefused(f"unknown action {action!r}", reason=ks.BAD_SCOPE)
        except TradingError as exc:
            self._refused(exc, operator, action, scope, target)
            raise
        return self._admin(change, action)


class RouteOutcome(msgspec.Struct, frozen=True):
    children: tuple[RoutedOrder, ...] = ()
    reject: Reject | None = None


class RouterCore:
    """Order router: only orders carrying a valid approval bound to them are routed.

    A replace approved by risk reaches the router as a new order under its new
    ClOrdID with its own approval: send :meth:`cancels_for` the original's children
    first, then :meth:`handle` the replacement.
    """

    def __init__(self, verifier: ApprovalVerifier, venues: Iterable[str], emitter: Emitter | None = None) -> None:
        self.verifier = verifier
        self.venues = tuple(venues)
        self.books: dict[tuple[str, str], VenueBook] = {}
        self.children: dict[str, list[tuple[str, str]]] = {}  # parent -> [(venue, child id)]
        self.emitter = emitter

    def update_book(self, book: VenueBook) -> None:
        if book.venue not in self.venues:
            raise TradingError(f"unknown venue {book.venue}", reason=ROUTER_UNKNOWN_VENUE)
        self.books[(book.venue, book.symbol)] = book

    def handle(self, routed: RoutedOrder, now_ns: int) -> RouteOutcome:
        order = routed.order
        try:
            self.verifier.verify(routed.approval, order, now_ns)
            books = [self.books.get((v, order.symbol)) or VenueBook(v, order.symbol) for v in self.venues]
            children = route(order, books)
        except TradingError as exc:
            return self._deny(order, exc.reason, exc.detail, now_ns)
        except Exception as exc:  # fail closed
            return self._deny(order, ROUTER_INTERNAL, type(exc).__name__, now_ns)
        self.children[order.cl_ord_id] = [(c.venue, c.order.cl_ord_id) for c in children]
        return RouteOutcome(children=tuple(children))

    def _deny(self, order: NewOrder, reason: str, detail: str, now_ns: int) -> RouteOutcome:
        if self.emitter is not None:
            self.emitter.emit(Kind.DECISION, trace_id=order.cl_ord_id, principal=order.agent, action="route",
                              resource=order.symbol, decision="deny", reason=reason)
        return RouteOutcome(reject=Reject(ref_id=order.cl_ord_id, reason=reason, detail=detail, time_ns=now_ns))

    def cancels_for(self, cancel: CancelOrder) -> list[tuple[str, CancelOrder]]:
        """Per-venue cancels for every child of ``cancel.orig_cl_ord_id``."""
        return [(venue, msgspec.structs.replace(cancel, cl_ord_id=f"{cancel.cl_ord_id}.{n}", orig_cl_ord_id=child))
                for n, (venue, child) in enumerate(self.children.get(cancel.orig_cl_ord_id, ()), start=1)]


class VenueCore:
    """One venue: a price-time book per symbol, owner sessions for cancel-on-disconnect."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.books: dict[str, OrderBook] = {}

    def book(self, symbol: str) -> OrderBook:
        book = self.books.get(symbol)
        if book is None:
            book = self.books[symbol] = OrderBook(symbol, self.name)
        return book

    def _rejected(self, order: NewOrder, reason: str, now_ns: int) -> ExecutionReport:
        return ExecutionReport(cl_ord_id=order.cl_ord_id, order_id="", exec_id=f"{self.name}-rej-{order.cl_ord_id}",
                               venue=self.name, account=order.account, agent=order.agent, symbol=order.symbol,
                               side=order.side, exec_type="rejected", ord_status="rejected", order_qty=order.qty,
                               price=order.price, time_ns=now_ns, reason=reason)

    def handle_order(self, order: NewOrder, session: str, now_ns: int) -> list[ExecutionReport]:
        try:
            return self.book(order.symbol).add(order, session, now_ns)
        except TradingError as exc:
            return [self._rejected(order, exc.reason, now_ns)]

    def handle_cancel(self, cancel: CancelOrder, session: str, now_ns: int) -> list[ExecutionReport] | Reject:
        book = self.books.get(cancel.symbol)
        order_id = book.order_id_for(session, cancel.orig_cl_ord_id) if book else None
        if order_id is None:
            return Reject(ref_id=cancel.cl_ord_id, reason="book.unknown_order", time_ns=now_ns)
        try:
            return [book.cancel(order_id, session, now_ns, reason=cancel.reason)]
        except TradingError as exc:
            return Reject(ref_id=cancel.cl_ord_id, reason=exc.reason, time_ns=now_ns)

    def disconnect(self, session: str, now_ns: int) -> list[ExecutionReport]:
        """Cancel-on-disconnect across all books."""
        out: list[ExecutionReport] = []
        for book in self.books.values():
            out.extend(book.cancel_session(session, now_ns))
        return out

    def snapshot(self, symbol: str, levels: int = 5) -> VenueBook:
        book = self.book(symbol)
        return VenueBook(self.name, symbol, tuple(book.depth("buy", levels)), tuple(book.depth("sell", levels)))


@dataclass(frozen=True, slots=True)
class OmsUpdate:
    fills: tuple[Fill, ...] = ()
    done: tuple[tuple[str, str], ...] = ()  # (agent, parent ClOrdID) now terminal: release risk usage
    state: str = ""
    report: ExecutionReport | None = None  # parent-level report for the submitter (agent or FIX client)


_STATUS_OF_STATE = {
    oms_mod.NEW: "new", oms_mod.PARTIALLY_FILLED: "partially_filled", oms_mod.FILLED: "filled",
    oms_mod.CANCELED: "canceled", oms_mod.REJECTED: "rejected", oms_mod.REPLACED: "replaced",
}


class OmsCore:
    """Parent orders from risk, child execution reports from venues -> fills, states, positions.

    Venues report on child orders (``<parent>.<n>``); the OMS folds them into the
    parent's state machine and produces parent-level execution reports.
    """

    def __init__(self) -> None:
        self.manager = oms_mod.OrderManager()
        self.parent_of: dict[str, str] = {}
        self.open_children: dict[str, set[str]] = {}
        self.fills: list[Fill] = []
        self._exec_ids = itertools.count(1)

    def _parent_report(self, record: oms_mod.OrderRecord, exec_type: str, now_ns: int, last_qty: int = 0,
                       last_px: int = 0, reason: str = "") -> ExecutionReport:
        o = record.order
        return ExecutionReport(
            cl_ord_id=o.cl_ord_id, order_id=f"OMS:{o.cl_ord_id}", exec_id=f"oms-{next(self._exec_ids)}",
            venue="", account=o.account, agent=o.agent, symbol=o.symbol, side=o.side, exec_type=exec_type,
            ord_status=_STATUS_OF_STATE[record.state], order_qty=o.qty, price=o.price, last_qty=last_qty,
            last_px=last_px, leaves_qty=record.leaves, cum_qty=record.cum_qty, time_ns=now_ns, reason=reason,
        )

    def on_new_order(self, order: NewOrder) -> None:
        self.manager.new_order(order)

    def on_reject(self, cl_ord_id: str, reason: str = "", now_ns: int = 0) -> OmsUpdate:
        record = self.manager.reject(cl_ord_id)
        return OmsUpdate(done=((record.order.agent, cl_ord_id),), state=record.state,
                         report=self._parent_report(record, "rejected", now_ns, reason=reason))

    def on_routed(self, parent: str, children: Iterable[RoutedOrder], now_ns: int = 0) -> ExecutionReport:
        """Record the children of ``parent``; returns the parent's ``new`` report."""
        ids = {c.order.cl_ord_id for c in children}
        for child in ids:
            self.parent_of[child] = parent
        self.open_children[parent] = ids
        return self._parent_report(self.manager.orders[parent], "new", now_ns)

    def on_execution_report(self, report: ExecutionReport) -> OmsUpdate:
        parent = self.parent_of.get(report.cl_ord_id, report.cl_ord_id)
        record = self.manager.orders.get(parent)
        if record is None:
            raise oms_mod.OrderStateError(f"report for unknown order {report.cl_ord_id}",
                                          reason=oms_mod.UNKNOWN_ORDER)
        fills: tuple[Fill, ...] = ()
        parent_report = None
        if report.exec_type in ("fill", "partial_fill") and report.last_qty > 0:
            fill = Fill(exec_id=report.exec_id, cl_ord_id=parent, account=record.order.account,
                        agent=record.order.agent, symbol=report.symbol, side=report.side, qty=report.last_qty,
                        price=report.last_px, venue=report.venue, time_ns=report.time_ns)
            if self.manager.apply_fill(fill) is not None:
                self.fills.append(fill)
                fills = (fill,)
                parent_report = self._parent_report(
                    record, "fill" if record.state == oms_mod.FILLED else "partial_fill", report.time_ns,
                    fill.qty, fill.price)
        children = self.open_children.get(parent)
        if children is not None and report.ord_status in ("filled", "canceled", "rejected"):
            children.discard(report.cl_ord_id)
        if record.state not in oms_mod.TERMINAL and children is not None and not children:
            self.manager.cancel(parent)  # every child ended without filling the parent
            parent_report = self._parent_report(record, "canceled", report.time_ns, reason=report.reason)
        done: tuple[tuple[str, str], ...] = ()
        if record.state in oms_mod.TERMINAL and (children is None or not children):
            done = ((record.order.agent, parent),)
        return OmsUpdate(fills=fills, done=done, state=record.state, report=parent_report)

    def positions(self, now_ns: int) -> list[PositionSnapshot]:
        return self.manager.snapshots(now_ns)


class LimitUsage(msgspec.Struct, frozen=True):
    scope: str
    target: str
    used: int
    limit: int
    percent: float


class RiskView(msgspec.Struct, frozen=True):
    """What the risk dashboard shows: limits in force, usage against them, positions, kill switch."""

    limits_version: int
    usage: tuple[LimitUsage, ...]
    positions: tuple[tuple[str, str, str, int], ...]  # (scope, target, symbol, signed qty)
    kill_switch: tuple[tuple[str, str, str], ...]  # (scope, target, state) for every non-ACTIVE scope
    working_orders: int


def risk_view(checker: PreTradeRiskChecker) -> RiskView:
    """A read-only snapshot of pre-trade risk for the dashboard."""
    limits = checker.limits

    def usage(scope: str, target: str, used: int, limit: int) -> LimitUsage:
        return LimitUsage(scope, target, used, limit, round(100.0 * used / limit, 2) if limit else 100.0)

    rows = [usage(ks.FIRM, "", checker.usage_firm, limits.firm_credit)]
    rows += [usage(ks.ACCOUNT, a, u, limits.account_credit.get(a, limits.default_account_credit))
             for a, u in sorted(checker.usage_account.items())]
    rows += [usage(ks.AGENT, a, u, limits.agent_credit.get(a, limits.default_agent_credit))
             for a, u in sorted(checker.usage_agent.items())]
    states = checker.killswitch.not_active()
    return RiskView(
        limits_version=limits.version, usage=tuple(rows),
        positions=tuple((sc, t, sym, q) for (sc, t, sym), q in sorted(checker.positions.items()) if q),
        kill_switch=tuple(states), working_orders=len(checker.working),
    )


class SettlementCore:
    """Collects the day's fills; at end of day nets them and posts cash to the ledger."""

    def __init__(self, ledger: CashLedger | None = None) -> None:
        self.ledger = ledger or CashLedger()
        if CLEARING not in self.ledger.balances:
            self.ledger.open_account(CLEARING, overdraft_limit=10**18)
        self.fills: list[Fill] = []
        self._exec_ids: set[str] = set()

    def fund(self, account: str, amount: int, entry_id: str) -> None:
        """Open ``account`` if needed and deposit ``amount`` from outside the firm (the ``funding`` account)."""
        if FUNDING not in self.ledger.balances:
            self.ledger.open_account(FUNDING, overdraft_limit=10**18)
        if account not in self.ledger.balances:
            self.ledger.open_account(account)
        self.ledger.transfer(entry_id, FUNDING, account, amount, memo="deposit")

    def on_fill(self, fill: Fill) -> None:
        if fill.exec_id not in self._exec_ids:
            self._exec_ids.add(fill.exec_id)
            self.fills.append(fill)

    def end_of_day(self, settle_date: str) -> list[SettlementInstruction]:
        """Net, post to the ledger (all or nothing), and start a new day."""
        instructions = net_fills(self.fills, settle_date)
        self.ledger.settle(instructions)
        self.fills = []
        return instructions
