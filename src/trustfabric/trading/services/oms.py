"""oms: parent orders, child execution reports -> fills, order states, positions and P&L.

Venues report (``report_fill`` on ``oms/fills``) with the parent order on first
sight; the OMS folds child reports into the parent's state machine
(:class:`~trustfabric.trading.floor_logic.OmsCore`), keeps an ordered log of fills
and finished orders that pre-trade risk and the dashboard read with a cursor
(``read_positions``), and ships fills to settlement (``settle``). Parent-level
reports of FIX client orders (ClOrdIDs ``FIX.<SenderCompID>.<ClOrdID>``) are kept in
their own ordered log that the FIX gateway reads with a cursor
(``read_client_orders`` on ``oms/client-orders``).
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from trustfabric.audit.events import Kind
from trustfabric.errors import TradingError
from trustfabric.trading.floor_logic import OmsCore
from trustfabric.trading.messages import RoutedOrder
from trustfabric.trading.services.base import FloorService, encode_body
from trustfabric.trading.services.wire import (
    BENCH_PREFIX, ClientReportsReply, OmsBatch, PositionsQuery, PositionsReply, SettleBatch, decoder,
)


CLIENT_PREFIX = "FIX."


class OmsService(FloorService):
    name = "oms"
    peers = ("settlement",)

    def __init__(self, runtime) -> None:
        super().__init__(runtime)
        self.core = OmsCore()
        self.log: list[tuple[str, object]] = []  # ("fill", Fill) | ("done", (agent, cl_ord_id))
        self.to_settle: list = []
        self.client_reports: list = []  # parent-level ExecutionReports of FIX client orders
        self.reports = self.report_errors = self.parents = 0
        # The floor benchmark's current burst (ClOrdIDs BENCH.<tag>.*): how many reached the OMS, and
        # the wall times (same machine as the launcher) of the first and the last.
        self.bench_tag = -1
        self.bench_orders = 0
        self.bench_first_at = self.bench_last_at = 0.0
        self._batch = decoder(OmsBatch)
        self._query = decoder(PositionsQuery)
        self.settlement = runtime.link("settlement")

    def register(self, svc) -> None:
        @svc.handler(action="report_fill", resource="oms/fills")
        def report_fill(req, ctx):
            batch = self._batch.decode(req.body)
            for info in batch.parents:
                parent = info.parent
                if parent.cl_ord_id in self.core.manager.orders:
                    continue
                try:
                    self.core.on_new_order(parent)
                    children = [RoutedOrder(order=msgspec.structs.replace(parent, cl_ord_id=c),
                                            parent_cl_ord_id=parent.cl_ord_id) for c in info.siblings]
                    new_report = self.core.on_routed(parent.cl_ord_id, children, time.time_ns())
                    if parent.cl_ord_id.startswith(CLIENT_PREFIX):
                        self.client_reports.append(new_report)
                    self.parents += 1
                    if parent.cl_ord_id.startswith(BENCH_PREFIX):
                        self._bench_order(parent.cl_ord_id)
                except TradingError:
                    self.report_errors += 1
            for report in batch.reports:
                self.reports += 1
                try:
                    update = self.core.on_execution_report(report)
                except TradingError:
                    self.report_errors += 1
                    continue
                for fill in update.fills:
                    self.rt.events.emit(Kind.DECISION, trace_id=fill.cl_ord_id, principal=fill.agent,
                                        action="oms.fill", resource=fill.symbol, decision="allow",
                                        detail={"qty": fill.qty, "price": fill.price, "venue": fill.venue,
                                                "exec_id": fill.exec_id})
                    self.log.append(("fill", fill))
                    self.to_settle.append(fill)
                for done in update.done:
                    self.log.append(("done", done))
                if update.report is not None and update.report.cl_ord_id.startswith(CLIENT_PREFIX):
                    self.client_reports.append(update.report)
            return None

        @svc.handler(action="read_client_orders", resource="oms/client-orders")
        def read_client_orders(req, ctx):
            after = max(0, self._query.decode(req.body).after) if req.body else 0
            reports = self.client_reports[after:after + 100]
            return encode_body(ClientReportsReply(cursor=after + len(reports), reports=reports))

        @svc.handler(action="read_positions", resource="oms/positions")
        def read_positions(req, ctx):
            after = max(0, self._query.decode(req.body).after) if req.body else 0
            entries = self.log[after:after + 100]  # a reply stays far below the 64 KiB frame limit
            fills = [e for k, e in entries if k == "fill"]
            done = [e for k, e in entries if k == "done"]
            return encode_body(PositionsReply(cursor=after + len(entries), fills=fills, done=done,
                                              positions=self.core.positions(time.time_ns())))

    def _bench_order(self, cl_ord_id: str) -> None:
        now = time.time()
        try:
            tag = int(cl_ord_id[len(BENCH_PREFIX):].split(".", 1)[0])
        except ValueError:
            return
        if tag != self.bench_tag:  # a new burst
            self.bench_tag, self.bench_orders, self.bench_first_at = tag, 0, now
        self.bench_orders += 1
        self.bench_last_at = now

    async def run(self) -> None:
        while not self.rt.stopped.is_set():
            if self.to_settle:
                if not self.settlement.up:
                    try:
                        await self.settlement.ensure(timeout_s=1.0)
                    except Exception:  # noqa: BLE001
                        await asyncio.sleep(0.2)
                        continue
                batch, self.to_settle = self.to_settle[:100], self.to_settle[100:]
                if not self.settlement.request("settle", "settlement/ledger", encode_body(SettleBatch(batch))):
                    self.to_settle = batch + self.to_settle
                    await asyncio.sleep(0.05)
                continue
            await asyncio.sleep(0.05)

    def stats(self) -> dict[str, float]:
        fills = len(self.core.fills)
        return {"oms_orders": self.parents, "oms_reports": self.reports, "orders_filled":
                sum(1 for r in self.core.manager.orders.values() if r.cum_qty > 0),
                "oms_fills": fills, "positions": len(self.core.manager.positions),
                "oms_report_errors": self.report_errors, "bench_tag": self.bench_tag,
                "bench_orders": self.bench_orders, "bench_first_at": self.bench_first_at,
                "bench_last_at": self.bench_last_at}
