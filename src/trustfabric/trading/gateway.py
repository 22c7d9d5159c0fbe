"""The FIX gateway's core: FIX application events <-> floor messages, no I/O.

The gateway's process runs one :class:`~trustfabric.trading.fix.session.FixSession`
per client connection and one :class:`FixGatewayCore` for all of them. The core:

* turns ``FixNewOrderSingle`` / ``FixCancelRequest`` / ``FixReplaceRequest`` /
  ``FixMassCancelRequest`` into ``NewOrder`` / ``CancelOrder`` / ``ReplaceOrder`` for
  pre-trade risk, with the client's authenticated identity as the originating
  principal (``agent``) and floor ClOrdIDs ``FIX.<SenderCompID>.<ClOrdID>`` so that
  clients can never collide with each other or with the algos;
* answers what it can answer itself: a cancel or replace of an unknown or closed
  order gets OrderCancelReject (9), an OrderStatusRequest gets an ExecutionReport
  (ExecType I), a mass cancel gets an OrderMassCancelReport (r);
* turns the floor's parent-level ``ExecutionReport`` and ``Reject`` messages back
  into FIX ExecutionReport (8) or OrderCancelReject (9) for the right client, as
  FIX 4.4 wants them: AvgPx (6) is the volume-weighted average of the fills the
  core has seen; a cancel confirmation (150=4) carries the cancel request's own
  ClOrdID in 11 and the original's in 41; a replacement, once pre-trade risk has
  accepted its new quantity and price (a replace is a new risk decision), is
  confirmed with 150=5, 11 = the replace request's ClOrdID, 41 = the original's, and
  the original's own cancel is not reported separately;
* never re-executes a resent order: a NewOrderSingle with PossResend (97=Y) whose
  ClOrdID it already holds is answered with the order's status (150=I).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec
import simplefix

from trustfabric.trading.fix import codec
from trustfabric.trading.fix.session import (
    FixCancelRequest,
    FixMassCancelRequest,
    FixNewOrderSingle,
    FixReplaceRequest,
    FixStatusRequest,
)
from trustfabric.trading.messages import CancelOrder, ExecutionReport, NewOrder, Reject, ReplaceOrder

ACCOUNT_NOT_PERMITTED = "gateway.account_not_permitted"
TERMINAL_STATUSES = frozenset({"filled", "canceled", "rejected", "replaced"})


@dataclass(slots=True)
class _ClientOrder:
    sender: str
    cl_ord_id: str
    order: NewOrder
    last_report: ExecutionReport | None = None
    open: bool = True
    filled_qty: int = 0
    filled_notional: int = 0  # sum of last_qty x last_px (price units), for AvgPx
    orig_cl_ord_id: str = ""  # a replacement: the client ClOrdID it replaces
    cancel_by: str = ""  # the floor id of a cancel or replace request in flight for this order
    replaced: bool = False  # confirmed replaced (150=5 sent): its own cancel is not reported

    def avg_px(self) -> str:
        return codec.avg_px_to_fix(self.filled_notional, self.filled_qty)


@dataclass(frozen=True, slots=True)
class GatewayOutput:
    to_risk: tuple[NewOrder | CancelOrder | ReplaceOrder, ...] = ()
    replies: tuple[simplefix.FixMessage, ...] = ()  # to send on the event's own session


def floor_id(sender: str, cl_ord_id: str) -> str:
    return f"FIX.{sender}.{cl_ord_id}"


class FixGatewayCore:
    def __init__(self) -> None:
        self.orders: dict[str, _ClientOrder] = {}  # floor id -> client order
        self.pending_cancels: dict[str, tuple[str, str, str, str]] = {}  # floor id -> (sender, cl, orig, 434)

    def _status_report(self, co: _ClientOrder | None, cl_ord_id: str, symbol: str, side: str, now_ns: int,
                       text: str = "") -> ExecutionReport:
        if co is not None and co.last_report is not None:
            r = co.last_report
            status = "new" if r.exec_type == "replaced" else r.ord_status
            return msgspec.structs.replace(r, exec_type="status", ord_status=status, exec_id=f"status-{now_ns}",
                                           last_qty=0, last_px=0)
        if co is not None:
            o = co.order
            return ExecutionReport(cl_ord_id=o.cl_ord_id, order_id="NONE", exec_id=f"status-{now_ns}", venue="",
                                   account=o.account, agent=o.agent, symbol=o.symbol, side=o.side,
                                   exec_type="status", ord_status="new", order_qty=o.qty, price=o.price,
                                   leaves_qty=o.qty, time_ns=now_ns)
        return ExecutionReport(cl_ord_id=cl_ord_id, order_id="NONE", exec_id=f"status-{now_ns}", venue="",
                               account="", agent="", symbol=symbol, side=side, exec_type="status",
                               ord_status="rejected", order_qty=0, price=0, time_ns=now_ns, reason=text)

    def _to_client(self, report: ExecutionReport, co: _ClientOrder, *, cl_ord_id: str = "",
                   orig_cl_ord_id: str = "") -> simplefix.FixMessage:
        return codec.execution_report(msgspec.structs.replace(report, cl_ord_id=cl_ord_id or co.cl_ord_id),
                                      orig_cl_ord_id=orig_cl_ord_id, avg_px=co.avg_px())

    def on_session_event(self, event, client_identity: str, now_ns: int, account: str = "") -> GatewayOutput:
        """One application event from a logged-on session whose peer is ``client_identity``.

        ``account``: the account the client is registered to; its orders are booked there
        (an order without tag 1 too) and an order naming another account is refused.
        """
        if isinstance(event, FixNewOrderSingle):
            fid = floor_id(event.sender, event.cl_ord_id)
            order = event.to_new_order(client_identity, now_ns)
            if account and order.account not in (account, event.sender):
                report = ExecutionReport(
                    cl_ord_id=event.cl_ord_id, order_id="NONE", exec_id=f"acct-{now_ns}", venue="",
                    account=order.account, agent=client_identity, symbol=order.symbol, side=order.side,
                    exec_type="rejected", ord_status="rejected", order_qty=order.qty, price=order.price,
                    time_ns=now_ns, reason=ACCOUNT_NOT_PERMITTED)
                return GatewayOutput(replies=(codec.execution_report(report),))
            if account:
                order = msgspec.structs.replace(order, account=account)
            known = self.orders.get(fid)
            if known is not None and event.poss_resend and known.order.agent == client_identity:
                # a resent order we already hold: its status, never a second execution
                report = self._status_report(known, event.cl_ord_id, order.symbol, order.side, now_ns)
                return GatewayOutput(replies=(self._to_client(report, known, cl_ord_id=event.cl_ord_id),))
            if known is not None:  # duplicate ClOrdID: refused here, the live order is untouched
                report = ExecutionReport(
                    cl_ord_id=event.cl_ord_id, order_id="NONE", exec_id=f"dup-{now_ns}", venue="",
                    account=order.account, agent=client_identity, symbol=order.symbol, side=order.side,
                    exec_type="rejected", ord_status="rejected", order_qty=order.qty, price=order.price,
                    time_ns=now_ns, reason="risk.dup_clordid")
                return GatewayOutput(replies=(codec.execution_report(report),))
            order = msgspec.structs.replace(order, cl_ord_id=fid)
            self.orders[fid] = _ClientOrder(event.sender, event.cl_ord_id, order)
            return GatewayOutput(to_risk=(order,))
        if isinstance(event, (FixCancelRequest, FixReplaceRequest)):
            response_to = "1" if isinstance(event, FixCancelRequest) else "2"
            co = self.orders.get(floor_id(event.sender, event.orig_cl_ord_id))
            if co is None or not co.open or co.order.agent != client_identity:
                return GatewayOutput(replies=(codec.order_cancel_reject(
                    event.cl_ord_id, event.orig_cl_ord_id, response_to=response_to, reason_code=1,
                    text="unknown or closed order"),))
            fid = floor_id(event.sender, event.cl_ord_id)
            if fid in self.orders or fid in self.pending_cancels:  # the request's own ClOrdID must be new
                return GatewayOutput(replies=(codec.order_cancel_reject(
                    event.cl_ord_id, event.orig_cl_ord_id, order_id=f"OMS:{co.order.cl_ord_id}",
                    ord_status=codec.ORD_STATUS_TO_FIX.get(co.last_report.ord_status, "0") if co.last_report
                    else "0", response_to=response_to, reason_code=6, text="duplicate ClOrdID"),))
            self.pending_cancels[fid] = (event.sender, event.cl_ord_id, event.orig_cl_ord_id, response_to)
            co.cancel_by = fid
            o = co.order
            if isinstance(event, FixCancelRequest):
                msg = CancelOrder(cl_ord_id=fid, orig_cl_ord_id=o.cl_ord_id, account=o.account, agent=o.agent,
                                  symbol=o.symbol, side=o.side, time_ns=now_ns)
            else:
                msg = ReplaceOrder(cl_ord_id=fid, orig_cl_ord_id=o.cl_ord_id, account=o.account, agent=o.agent,
                                   symbol=o.symbol, side=o.side, qty=event.qty, price=event.price, time_ns=now_ns)
                new = NewOrder(cl_ord_id=fid, account=o.account, agent=o.agent, symbol=o.symbol, side=o.side,
                               qty=event.qty, price=event.price, time_ns=now_ns)
                self.orders[fid] = _ClientOrder(event.sender, event.cl_ord_id, new,
                                                orig_cl_ord_id=event.orig_cl_ord_id)
            return GatewayOutput(to_risk=(msg,))
        if isinstance(event, FixStatusRequest):
            co = self.orders.get(floor_id(event.sender, event.cl_ord_id))
            if co is not None and co.order.agent != client_identity:
                co = None
            report = self._status_report(co, event.cl_ord_id, event.symbol, event.side, now_ns,
                                         text="unknown order")
            if co is not None:
                return GatewayOutput(replies=(self._to_client(report, co, cl_ord_id=event.cl_ord_id),))
            return GatewayOutput(replies=(codec.execution_report(report),))
        if isinstance(event, FixMassCancelRequest):
            cancels = []
            for n, co in enumerate([c for c in self.orders.values()
                                    if c.open and c.sender == event.sender and c.order.agent == client_identity
                                    and (not event.symbol or c.order.symbol == event.symbol)], start=1):
                o = co.order
                cancels.append(CancelOrder(cl_ord_id=f"{floor_id(event.sender, event.cl_ord_id)}.{n}",
                                           orig_cl_ord_id=o.cl_ord_id, account=o.account, agent=o.agent,
                                           symbol=o.symbol, side=o.side, time_ns=now_ns))
            report = codec.order_mass_cancel_report(event.cl_ord_id, event.request_type, len(cancels))
            return GatewayOutput(to_risk=tuple(cancels), replies=(report,))
        return GatewayOutput()

    def on_report(self, report: ExecutionReport) -> tuple[str, simplefix.FixMessage] | None:
        """A parent-level report from the OMS -> (SenderCompID, FIX ExecutionReport), or None if not ours."""
        co = self.orders.get(report.cl_ord_id)
        if co is None:
            return None
        if report.exec_type in ("fill", "partial_fill") and report.last_qty > 0:
            co.filled_qty += report.last_qty
            co.filled_notional += report.last_qty * report.last_px
        co.open = report.ord_status not in TERMINAL_STATUSES
        if report.exec_type == "canceled" and co.replaced:
            co.last_report = report
            return None  # the original of a confirmed replace: the replacement's 150=5 reported it
        pending = self.pending_cancels.get(co.cancel_by) if co.cancel_by else None
        if report.exec_type == "canceled" and pending is not None:
            del self.pending_cancels[co.cancel_by]
            co.cancel_by = ""
            sender, cl, orig, response_to = pending
            co.last_report = report
            if response_to == "2":
                return None  # the original of a replace: the replacement's 150=5 reports it
            return sender, self._to_client(report, co, cl_ord_id=cl, orig_cl_ord_id=orig)
        if co.orig_cl_ord_id and report.exec_type == "new":
            # the replacement accepted by risk: 150=5 for the replace request
            self.pending_cancels.pop(report.cl_ord_id, None)
            report = msgspec.structs.replace(report, exec_type="replaced", ord_status="new")
            co.last_report = report
            original = self.orders.get(floor_id(co.sender, co.orig_cl_ord_id))
            if original is not None:
                original.open, original.replaced, original.cancel_by = False, True, ""
            return co.sender, self._to_client(report, co, orig_cl_ord_id=co.orig_cl_ord_id)
        co.last_report = report
        self.pending_cancels.pop(report.cl_ord_id, None)
        return co.sender, self._to_client(report, co)

    def on_reject(self, reject: Reject, now_ns: int) -> tuple[str, simplefix.FixMessage] | None:
        """A floor refusal -> FIX ExecutionReport (rejected order) or OrderCancelReject (refused cancel)."""
        pending = self.pending_cancels.pop(reject.ref_id, None)
        if pending is not None:
            sender, cl, orig, response_to = pending
            original = self.orders.get(floor_id(sender, orig))
            if original is not None and original.cancel_by == reject.ref_id:
                original.cancel_by = ""
            if response_to == "2":
                self.orders.pop(reject.ref_id, None)
            return sender, codec.order_cancel_reject(cl, orig, response_to=response_to, text=reject.reason)
        co = self.orders.get(reject.ref_id)
        if co is None:
            return None
        co.open = False
        o = co.order
        report = ExecutionReport(cl_ord_id=co.cl_ord_id, order_id="NONE", exec_id=f"rej-{reject.ref_id}",
                                 venue="", account=o.account, agent=o.agent, symbol=o.symbol, side=o.side,
                                 exec_type="rejected", ord_status="rejected", order_qty=o.qty, price=o.price,
                                 time_ns=now_ns, reason=reject.reason)
        co.last_report = report
        return co.sender, codec.execution_report(report)
