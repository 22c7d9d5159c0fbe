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
  into FIX ExecutionReport (8) or OrderCancelReject (9) for the right client.
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

TERMINAL_STATUSES = frozenset({"filled", "canceled", "rejected", "replaced"})


@dataclass(slots=True)
class _ClientOrder:
    sender: str
    cl_ord_id: str
    order: NewOrder
    last_report: ExecutionReport | None = None
    open: bool = True


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
            return msgspec.structs.replace(r, exec_type="status", exec_id=f"status-{now_ns}", last_qty=0, last_px=0)
        if co is not None:
            o = co.order
            return ExecutionReport(cl_ord_id=o.cl_ord_id, order_id="NONE", exec_id=f"status-{now_ns}", venue="",
                                   account=o.account, agent=o.agent, symbol=o.symbol, side=o.side,
                                   exec_type="status", ord_status="new", order_qty=o.qty, price=o.price,
                                   leaves_qty=o.qty, time_ns=now_ns)
        return ExecutionReport(cl_ord_id=cl_ord_id, order_id="NONE", exec_id=f"status-{now_ns}", venue="",
                               account="", agent="", symbol=symbol, side=side, exec_type="status",
                               ord_status="rejected", order_qty=0, price=0, time_ns=now_ns, reason=text)

    def _to_client(self, report: ExecutionReport, co: _ClientOrder) -> simplefix.FixMessage:
        return codec.execution_report(msgspec.structs.replace(report, cl_ord_id=co.cl_ord_id))

    def on_session_event(self, event, client_identity: str, now_ns: int) -> GatewayOutput:
        """One application event from a logged-on session whose peer is ``client_identity``."""
        if isinstance(event, FixNewOrderSingle):
            fid = floor_id(event.sender, event.cl_ord_id)
            order = event.to_new_order(client_identity, now_ns)
            if fid in self.orders:  # duplicate ClOrdID: refused here, the live order is untouched
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
            self.pending_cancels[fid] = (event.sender, event.cl_ord_id, event.orig_cl_ord_id, response_to)
            o = co.order
            if isinstance(event, FixCancelRequest):
                msg = CancelOrder(cl_ord_id=fid, orig_cl_ord_id=o.cl_ord_id, account=o.account, agent=o.agent,
                                  symbol=o.symbol, side=o.side, time_ns=now_ns)
            else:
                msg = ReplaceOrder(cl_ord_id=fid, orig_cl_ord_id=o.cl_ord_id, account=o.account, agent=o.agent,
                                   symbol=o.symbol, side=o.side, qty=event.qty, price=event.price, time_ns=now_ns)
                new = NewOrder(cl_ord_id=fid, account=o.account, agent=o.agent, symbol=o.symbol, side=o.side,
                               qty=event.qty, price=event.price, time_ns=now_ns)
                self.orders.setdefault(fid, _ClientOrder(event.sender, event.cl_ord_id, new))
            return GatewayOutput(to_risk=(msg,))
        if isinstance(event, FixStatusRequest):
            co = self.orders.get(floor_id(event.sender, event.cl_ord_id))
            if co is not None and co.order.agent != client_identity:
                co = None
            report = self._status_report(co, event.cl_ord_id, event.symbol, event.side, now_ns,
                                         text="unknown order")
            return GatewayOutput(replies=(codec.execution_report(
                msgspec.structs.replace(report, cl_ord_id=event.cl_ord_id)),))
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
        co.last_report = report
        co.open = report.ord_status not in TERMINAL_STATUSES
        self.pending_cancels.pop(report.cl_ord_id, None)
        return co.sender, self._to_client(report, co)

    def on_reject(self, reject: Reject, now_ns: int) -> tuple[str, simplefix.FixMessage] | None:
        """A floor refusal -> FIX ExecutionReport (rejected order) or OrderCancelReject (refused cancel)."""
        pending = self.pending_cancels.pop(reject.ref_id, None)
        if pending is not None:
            sender, cl, orig, response_to = pending
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
