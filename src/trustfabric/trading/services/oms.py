"""oms: parent orders, child execution reports -> fills, order states, positions and P&L.

The process around :class:`~trustfabric.trading.cores.OmsCore` (whose state machine is
:mod:`trustfabric.trading.oms`): transport, enforcement, wiring.

Venues report (``report_fill`` on ``oms/fills``) with the parent order on first
sight; the OMS folds child reports into the parent's state machine
(:class:`~trustfabric.trading.cores.OmsCore`), keeps an ordered log of fills
and finished orders that pre-trade risk and the dashboard read with a cursor
(``read_positions``), and ships fills to settlement (``settle``). Parent-level
reports of FIX client orders (ClOrdIDs ``FIX.<SenderCompID>.<ClOrdID>``) are kept in
their own ordered log that the FIX gateway reads with a cursor
(``read_client_orders`` on ``oms/client-orders``).

On the zero-trust floor the OMS keeps its records in the data vault
(:class:`~trustfabric.data.floor.ServiceVault`): client orders sealed as
``client-confidential`` and fills as ``trade-history`` objects of the ``oms`` segment, in
batches, each seal a Cedar decision of its key service. The perimeter floor keeps the same
records as plain JSON lines under ``records/`` (what a network-only defence leaves on disk).
"""

from __future__ import annotations

import asyncio
import time

import msgspec

from trustfabric.audit.events import Kind
from trustfabric.control.client import ControlTableSource
from trustfabric.data.floor import ServiceVault, attach_service_vault, write_plain_records
from trustfabric.errors import TradingError
from trustfabric.trading.cores import OmsCore
from trustfabric.trading.messages import RoutedOrder
from trustfabric.trading.services.base import FloorService, encode_body
from trustfabric.trading.services.wire import (
    BENCH_PREFIX,
    ClientReportsReply,
    OmsBatch,
    PositionsQuery,
    PositionsReply,
    SettleBatch,
    decoder,
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
        self.vault: ServiceVault | None = None
        self.to_seal_orders: list = []  # client orders not yet in the vault
        self.to_seal_fills: list = []  # fills not yet in the vault (trade history)

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
                        self.to_seal_orders.append(new_report)
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
                    if not fill.cl_ord_id.startswith(BENCH_PREFIX):
                        self.to_seal_fills.append(fill)
                for done in update.done:
                    self.log.append(("done", done))
                if update.report is not None and update.report.cl_ord_id.startswith(CLIENT_PREFIX):
                    self.client_reports.append(update.report)

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

    async def _open_vault(self) -> None:
        """Zero-trust: the OMS's key service, deciding on this principal's table from the control plane."""
        if self.rt.pep is not None and self.rt.control is not None:
            self.vault = await attach_service_vault(self.rt, ControlTableSource(self.rt.control), self.name)

    def _keep_records(self) -> None:
        """Seal (zero-trust) or write plain (perimeter) the client orders and fills gathered since last time."""
        orders, self.to_seal_orders = self.to_seal_orders, []
        fills, self.to_seal_fills = self.to_seal_fills, []
        now = time.time_ns()
        if self.vault is None:
            write_plain_records(self.rt.home, "oms", "client-confidential", orders, now)
            write_plain_records(self.rt.home, "oms", "trade-history", fills, now)
            return
        self.vault.seal_records("orders", self.vault.labels("client-confidential", "oms"), orders, now)
        self.vault.seal_records("fills", self.vault.labels("trade-history", "oms"), fills, now)
        self.vault.flush()

    async def run(self) -> None:
        try:
            await self._open_vault()
        except Exception as exc:  # noqa: BLE001 - no vault session: nothing is kept, and it shows in the stats
            self.rt.events.emit(Kind.DECISION, principal=self.rt.spiffe_id, action="data_write",
                                resource="data/oms", decision="deny", reason=getattr(exc, "reason", "data.refused"))
        while not self.rt.stopped.is_set():
            if self.to_seal_orders or self.to_seal_fills:
                self._keep_records()
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
                "bench_last_at": self.bench_last_at, **(self.vault.stats() if self.vault else {})}
